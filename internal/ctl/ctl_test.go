package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/internal/admin"
)

// process is an admin.Control with backend "app" of two servers; it
// applies the changes it is asked for, and refuses reloads while
// badReload is set.
type process struct {
	servers   []admin.Server
	changes   []string
	badReload error
}

func newProcess() *process {
	return &process{servers: []admin.Server{
		{Address: "127.0.0.1:9001", State: "up", Admin: "active", Healthy: true, Weight: 1, ConfiguredWeight: 1, Checks: []admin.Check{}},
		{Address: "127.0.0.1:9002", State: "down", Admin: "active", Weight: 2, ConfiguredWeight: 2, Checks: []admin.Check{}, LastError: "connect: connection\nrefused"},
	}}
}

func (p *process) Status() admin.Status {
	return admin.Status{Version: "v9", PID: 42, Generation: 3, Config: admin.Config{Path: "/etc/p.yaml", Digest: "sha256:ab"},
		Overrides: []admin.Override{{Backend: "app", Server: "127.0.0.1:9001", State: "drain"}}}
}
func (p *process) Frontends() []admin.Frontend { return nil }
func (p *process) Backends() []admin.Backend {
	return []admin.Backend{{Name: "app", Servers: append([]admin.Server(nil), p.servers...)}}
}

func (p *process) find(b, s string) (*admin.Server, error) {
	if b != "app" {
		return nil, &admin.NotFoundError{What: "backend", Name: b, Known: []string{"app"}}
	}
	for i := range p.servers {
		if p.servers[i].Address == s {
			return &p.servers[i], nil
		}
	}
	return nil, &admin.NotFoundError{What: "server", Name: b + "/" + s, Known: []string{"127.0.0.1:9001", "127.0.0.1:9002"}}
}

func (p *process) SetServer(b, s string, c admin.Change) error {
	srv, err := p.find(b, s)
	if err != nil {
		return err
	}
	p.changes = append(p.changes, fmt.Sprintf("%s/%s %+v", b, s, c))
	if c.State != "" {
		srv.Admin, srv.State = c.State, c.State
	}
	if c.Weight != 0 {
		srv.Weight = c.Weight
	}
	srv.Override = &c
	return nil
}

func (p *process) ClearServer(b, s string) error {
	srv, err := p.find(b, s)
	if err != nil {
		return err
	}
	p.changes = append(p.changes, "clear "+b+"/"+s)
	srv.Override, srv.State, srv.Weight = nil, "up", srv.ConfiguredWeight
	return nil
}

func (p *process) Reload() error { return p.badReload }

// serveSocket serves the admin API of p, with everything allowed, on a
// unix socket and returns its path.
func serveSocket(t *testing.T, p *process) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: admin.Handler(admin.Options{Control: p, Full: true})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return path
}

// run runs args with c and returns what it printed and its error.
func run(c *Client, asJSON bool, args ...string) (string, error) {
	var out bytes.Buffer
	err := c.Run(context.Background(), args, asJSON, &out)
	return out.String(), err
}

// TestServers: one aligned line per server, with its backend, state,
// weight, override and last check error on one line.
func TestServers(t *testing.T) {
	p := newProcess()
	c := &Client{Socket: serveSocket(t, p)}
	if _, err := run(c, false, "weight", "app/127.0.0.1:9001", "7"); err != nil {
		t.Fatal(err)
	}
	out, err := run(c, false, "servers")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want a header and 2 servers:\n%s", len(lines), out)
	}
	col := strings.Index(lines[0], "STATE")
	for i, want := range []string{"app/127.0.0.1:9001  up  ", "app/127.0.0.1:9002  down"} {
		if f := strings.Fields(lines[i+1]); f[0]+"  "+f[1] != strings.TrimSpace(want) || strings.Index(lines[i+1], f[1]) != col {
			t.Errorf("line %d: %q, want %q with the state under STATE", i+1, lines[i+1], want)
		}
	}
	for _, want := range []string{"7 (configured 1)", "weight 7", "connect: connection refused"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
}

// TestChanges: each command sends its change to the server named and
// prints the server's new state on one line; clear removes the override.
func TestChanges(t *testing.T) {
	p := newProcess()
	c := &Client{Socket: serveSocket(t, p)}
	for _, tc := range []struct {
		args   []string
		change string
		out    string
	}{
		{[]string{"drain", "app/127.0.0.1:9001"}, "{State:drain Weight:0}", "app/127.0.0.1:9001: drain, weight 1, 0 in flight, override: drain\n"},
		{[]string{"disable", "app/127.0.0.1:9001"}, "{State:disabled Weight:0}", "override: disabled\n"},
		{[]string{"enable", "app/127.0.0.1:9001"}, "{State:active Weight:0}", "override: active\n"},
		{[]string{"weight", "app/127.0.0.1:9002", "1000"}, "{State: Weight:1000}", "weight 1000 (configured 2)"},
		{[]string{"clear", "app/127.0.0.1:9001"}, "", "app/127.0.0.1:9001: up, weight 1, 0 in flight, override: none\n"},
	} {
		n := len(p.changes)
		out, err := run(c, false, tc.args...)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if len(p.changes) != n+1 || !strings.HasSuffix(p.changes[n], tc.change) {
			t.Errorf("%q: changes %q, want one ending in %q", tc.args, p.changes[n:], tc.change)
		}
		if !strings.Contains(out, tc.out) || strings.Count(out, "\n") != 1 {
			t.Errorf("%q printed %q, want one line with %q", tc.args, out, tc.out)
		}
	}
}

// TestUsageErrors: wrong command lines are refused before anything is
// sent, with what is wrong.
func TestUsageErrors(t *testing.T) {
	p := newProcess()
	c := &Client{Socket: serveSocket(t, p)}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "give a command"},
		{[]string{"stop"}, `unknown command "stop"`},
		{[]string{"drain"}, "drain takes one argument"},
		{[]string{"drain", "127.0.0.1:9001"}, "BACKEND/ADDRESS"},
		{[]string{"drain", "/127.0.0.1:9001"}, "BACKEND/ADDRESS"},
		{[]string{"weight", "app/127.0.0.1:9001", "0"}, `weight "0": want an integer from 1 to 1000`},
		{[]string{"weight", "app/127.0.0.1:9001", "1001"}, "from 1 to 1000"},
		{[]string{"weight", "app/127.0.0.1:9001", "2.5"}, "from 1 to 1000"},
		{[]string{"weight", "app/127.0.0.1:9001", "-3"}, "from 1 to 1000"},
		{[]string{"servers", "-json"}, "flags go before the command"},
	} {
		_, err := run(c, false, tc.args...)
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want a usage error with %q", tc.args, err, tc.want)
		}
	}
	if len(p.changes) != 0 {
		t.Errorf("changes sent: %q", p.changes)
	}
}

// TestAPIErrors: unknown names and a refused reload come back as the
// API's messages; the backend is split from the server at the first "/".
func TestAPIErrors(t *testing.T) {
	p := newProcess()
	c := &Client{Socket: serveSocket(t, p)}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"drain", "web/127.0.0.1:9001"}, 404, `no backend "web" (there are: app)`},
		{[]string{"drain", "app/127.0.0.1:9009"}, 404, `no server "app/127.0.0.1:9009" (there are: 127.0.0.1:9001, 127.0.0.1:9002)`},
		{[]string{"drain", "app/127.0.0.1:9001/x"}, 404, `no server "app/127.0.0.1:9001/x"`},
	} {
		_, err := run(c, false, tc.args...)
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want a %d with %q", tc.args, err, tc.code, tc.want)
		}
	}
	p.badReload = errors.New("/etc/p.yaml:3:5: unknown key \"sever\"\n/etc/p.yaml:9:1: no backend \"x\"")
	out, err := run(c, false, "reload")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 422 || len(ae.Errors) != 2 || out != "" {
		t.Fatalf("refused reload: %q %v", out, err)
	}
	if lines := strings.Split(err.Error(), "\n"); len(lines) != 3 || lines[1] != `/etc/p.yaml:3:5: unknown key "sever"` {
		t.Errorf("refused reload prints %q, want the message and each FILE:LINE:COL on its own line", lines)
	}
	out, err = run(c, true, "reload")
	if !json.Valid([]byte(out)) || !strings.Contains(out, `"errors"`) || err == nil {
		t.Errorf("-json reload refused: %q %v, want the API's JSON and an error", out, err)
	}
	p.badReload = nil
	if out, err := run(c, false, "reload"); err != nil || out != "reloaded, digest sha256:ab\n" {
		t.Errorf("reload: %q %v", out, err)
	}
}

// TestStatusAndJSON: status prints the process's identity; -json prints
// the API's answer unchanged.
func TestStatusAndJSON(t *testing.T) {
	c := &Client{Socket: serveSocket(t, newProcess())}
	out, err := run(c, false, "status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"version     v9\n", "pid         42\n", "generation  3\n", "config      /etc/p.yaml\n", "digest      sha256:ab\n", "overrides   app/127.0.0.1:9001: drain\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	out, err = run(c, true, "servers")
	var v struct{ Backends []admin.Backend }
	if err != nil || json.Unmarshal([]byte(out), &v) != nil || len(v.Backends) != 1 || len(v.Backends[0].Servers) != 2 {
		t.Errorf("-json servers: %v\n%s", err, out)
	}
}

// TestToken: on a URL the token goes in Authorization; without it a
// change is refused with a message that says how to give it.
func TestToken(t *testing.T) {
	const token = "0123456789abcdef"
	srv := httptest.NewServer(admin.Handler(admin.Options{Control: newProcess(), Token: token}))
	defer srv.Close()
	if _, err := run(&Client{URL: srv.URL + "/", Token: token}, false, "drain", "app/127.0.0.1:9001"); err != nil {
		t.Errorf("with the token: %v", err)
	}
	_, err := run(&Client{URL: srv.URL}, false, "drain", "app/127.0.0.1:9001")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 401 || !strings.Contains(err.Error(), "-token-file FILE") {
		t.Errorf("without a token: %v, want a 401 that names -token-file", err)
	}
	_, err = run(&Client{URL: srv.URL, Token: "wrong", TokenFrom: "-token-file /x"}, false, "drain", "app/127.0.0.1:9001")
	if !errors.As(err, &ae) || ae.Status != 403 || !strings.Contains(err.Error(), "wrong token (the token sent came from -token-file /x)") {
		t.Errorf("wrong token: %v", err)
	}
	if out, err := run(&Client{URL: srv.URL}, false, "servers"); err != nil || !strings.Contains(out, "app/127.0.0.1:9002") {
		t.Errorf("read without a token: %q %v", out, err)
	}
}

// TestConnectErrors: a missing socket, a socket nobody serves and a
// closed port each say where and what to check.
func TestConnectErrors(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	port := httptest.NewServer(http.NotFoundHandler())
	port.Close()
	for _, tc := range []struct {
		c    *Client
		want string
	}{
		{&Client{Socket: filepath.Join(dir, "none.sock")}, "cannot connect to the admin socket " + dir + "/none.sock: no such file or directory: is portcullis running with admin.socket set"},
		{&Client{Socket: stale}, "connection refused: the socket file exists but nothing serves it"},
		{&Client{URL: port.URL}, "cannot connect to the admin listener " + port.URL + ": connection refused: is portcullis running with admin.listen set"},
	} {
		_, err := run(tc.c, false, "status")
		var ce *ConnectError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v, want a connect error with %q", err, tc.want)
		}
	}
	if _, err := os.Stat(stale); err != nil {
		t.Fatal(err)
	}
}

// TestSeconds: latencies have three significant digits.
func TestSeconds(t *testing.T) {
	for v, want := range map[float64]string{0: "-", 0.0012345: "1.23ms", 0.03: "30ms", 2.5: "2.5s", 0.000042: "42µs", 123.456: "2m3s"} {
		if got := seconds(v); got != want {
			t.Errorf("seconds(%v) = %q, want %q", v, got, want)
		}
	}
}
