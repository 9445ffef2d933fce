package integration

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// ctlResult is what one run of portcullis ctl did.
type ctlResult struct {
	code           int
	stdout, stderr string
}

func (r ctlResult) String() string {
	return fmt.Sprintf("exit status %d\nstdout:\n%sstderr:\n%s", r.code, r.stdout, r.stderr)
}

// runCtl runs argv (ending in the portcullis binary's "ctl" and its
// arguments, perhaps behind setpriv) as a process of its own, with env
// added to a minimal environment, and returns what it did.
func runCtl(t *testing.T, env []string, argv ...string) ctlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), scaled(30e9))
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := ctlResult{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%q: %v", argv, err)
	}
	return r
}

// ctlSite is a running portcullis with an admin socket, an admin listener
// with a token, and backend "pool" of servers a and b.
type ctlSite struct {
	t          *testing.T
	bin, sock  string
	site       *site
	config     string
	a, b       string // the servers' addresses
	tokenFile  string
	socketArgs []string
}

func startCtlSite(t *testing.T) *ctlSite {
	t.Helper()
	a := startUp(t, "a", "127.0.0.1:0")
	b := startUp(t, "b", "127.0.0.1:0")
	dir := sharedDir(t)
	c := &ctlSite{t: t, bin: defaultBinary(t), sock: filepath.Join(dir, "run", "admin.sock"), a: a.addr, b: b.addr}
	c.site = newSite(t, siteOptions{User: true, App: [2]string{"127.0.0.1:1", "127.0.0.1:2"}, API: "127.0.0.1:3"})
	c.config = withAdmin(t, lbConfig("", lbServer{addr: a.addr}, lbServer{addr: b.addr}), c.sock, true)
	// The unprivileged process reads the token again at each reload.
	if err := os.Chown(filepath.Join(dir, "run", "admin.token"), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	c.tokenFile = filepath.Join(dir, "token")
	writeFile(t, c.tokenFile, adminToken+"\n", 0o600)
	writeFile(t, c.site.config, c.config, 0o644)
	p := start(t, asRoot(c.bin, c.site.config), startOptions{})
	p.waitReady()
	c.socketArgs = []string{c.bin, "ctl", "-s", c.sock}
	return c
}

// ctl runs portcullis ctl on the admin socket with args.
func (c *ctlSite) ctl(args ...string) ctlResult {
	c.t.Helper()
	return runCtl(c.t, nil, append(c.socketArgs, args...)...)
}

// ok runs ctl on the socket with args, expects success, and returns
// its standard output.
func (c *ctlSite) ok(args ...string) string {
	c.t.Helper()
	r := c.ctl(args...)
	if r.code != 0 || r.stderr != "" {
		c.t.Fatalf("ctl %q: %v", args, r)
	}
	return r.stdout
}

// row returns the line of ctl servers for server addr of pool, as
// fields split at two spaces or more.
func (c *ctlSite) row(addr string) []string {
	c.t.Helper()
	out := c.ok("servers")
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "pool/"+addr+" ") {
			return regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(l), -1)
		}
	}
	c.t.Fatalf("no line for pool/%s in ctl servers:\n%s", addr, out)
	return nil
}

// TestCtlServers: servers lists both servers; drain, weight and clear
// each print the server's new state, and servers shows the override until
// it is cleared.
func TestCtlServers(t *testing.T) {
	c := startCtlSite(t)
	hc := clientFor(t, c.site, "HTTP/1.1", 1)
	for i := 0; i < 10; i++ {
		if r := get(hc, "/"); r.err != nil || r.status != 200 {
			t.Fatalf("request %d: %v", i, r)
		}
	}
	out := c.ok("servers")
	if !strings.HasPrefix(out, "SERVER ") || strings.Count(out, "\n") != 3 {
		t.Errorf("ctl servers: want a header and two servers:\n%s", out)
	}
	// Round robin: 5 requests each, with latencies.
	for _, addr := range []string{c.a, c.b} {
		if r := c.row(addr); r[1] != "up" || r[2] != "1" || r[4] != "5" || r[5] != "0" || r[6] == "-" || r[7] == "-" || r[8] != "-" {
			t.Errorf("pool/%s: %q, want up, weight 1, 5 requests, 0 failures, p50 and p99, no override", addr, r)
		}
	}

	want := fmt.Sprintf("pool/%s: drain, weight 1, 0 in flight, override: drain\n", c.a)
	if out := c.ok("drain", "pool/"+c.a); out != want {
		t.Errorf("ctl drain printed %q, want %q", out, want)
	}
	if r := c.row(c.a); r[1] != "drain" || r[8] != "drain" {
		t.Errorf("after drain: %q, want state drain and override drain", r)
	}
	if out := c.ok("weight", "pool/"+c.b, "7"); !strings.Contains(out, "weight 7 (configured 1)") || !strings.Contains(out, "override: weight 7") {
		t.Errorf("ctl weight printed %q", out)
	}
	if r := c.row(c.b); r[1] != "up" || r[2] != "7 (configured 1)" || r[8] != "weight 7" {
		t.Errorf("after weight: %q, want weight 7 (configured 1) and the override", r)
	}
	// The overrides are listed by backend and address: any order here.
	if out := c.ok("status"); !strings.Contains(out, "overrides   pool/") || !strings.Contains(out, "pool/"+c.a+": drain\n") || !strings.Contains(out, "pool/"+c.b+": weight 7\n") {
		t.Errorf("ctl status does not list both overrides:\n%s", out)
	}
	want = fmt.Sprintf("pool/%s: up, weight 1, 0 in flight, override: none\n", c.a)
	if out := c.ok("clear", "pool/"+c.a); out != want {
		t.Errorf("ctl clear printed %q, want %q", out, want)
	}
	if r := c.row(c.a); r[1] != "up" || r[8] != "-" {
		t.Errorf("after clear: %q, want up and no override", r)
	}
	if out := c.ok("enable", "pool/"+c.a); !strings.Contains(out, "up, weight 1, 0 in flight, override: active") {
		t.Errorf("ctl enable printed %q", out)
	}

	var v struct {
		Backends []struct {
			Name    string
			Servers []struct{ Address, State string }
		}
	}
	out = c.ok("-json", "servers")
	if err := json.Unmarshal([]byte(out), &v); err != nil || len(v.Backends) != 1 || len(v.Backends[0].Servers) != 2 {
		t.Errorf("ctl -json servers: %v\n%s", err, out)
	}
}

// TestCtlReload: a good file is applied and its digest printed; a broken
// one is refused with its FILE:LINE:COL errors and exit status 1.
func TestCtlReload(t *testing.T) {
	c := startCtlSite(t)
	good := c.config + "# reloaded\n"
	writeFile(t, c.site.config, good, 0o644)
	want := fmt.Sprintf("reloaded, digest sha256:%x\n", sha256.Sum256([]byte(good)))
	if out := c.ok("reload"); out != want {
		t.Errorf("ctl reload printed %q, want %q", out, want)
	}
	if out := c.ok("status"); !strings.Contains(out, "reloads     1 (0 failed)") || !strings.Contains(out, strings.TrimPrefix(want, "reloaded, digest ")) {
		t.Errorf("ctl status after a reload:\n%s", out)
	}

	writeFile(t, c.site.config, strings.Replace(good, "    servers:\n", "    sever: 1\n    servers:\n", 1), 0o644)
	r := c.ctl("reload")
	pos := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(c.site.config) + `:\d+:\d+: .*sever`)
	if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "reload refused") || !pos.MatchString(r.stderr) {
		t.Errorf("ctl reload of a broken file: %v\nwant exit status 1 and a line %s:LINE:COL: …sever…", r, c.site.config)
	}
}

// TestCtlErrors: wrong names, bad values, missing or wrong tokens, an
// unknown command and a missing socket each end with a non-zero exit
// status and a message naming the problem.
func TestCtlErrors(t *testing.T) {
	c := startCtlSite(t)
	const listen = "http://" + adminListen
	url := []string{c.bin, "ctl", "-url", listen}
	wrong := filepath.Join(filepath.Dir(c.tokenFile), "wrong")
	writeFile(t, wrong, strings.Repeat("x", len(adminToken)), 0o600)
	for _, tc := range []struct {
		name string
		env  []string
		argv []string
		code int
		says string
	}{
		{"unknown backend", nil, append(c.socketArgs, "drain", "nope/"+c.a), 1, `no backend "nope" (there are: pool)`},
		{"unknown server", nil, append(c.socketArgs, "drain", "pool/127.0.0.1:1"), 1, fmt.Sprintf(`no server "pool/127.0.0.1:1" (there are: %s, %s)`, c.a, c.b)},
		{"weight 0", nil, append(c.socketArgs, "weight", "pool/"+c.a, "0"), 2, `weight "0": want an integer from 1 to 1000`},
		{"weight abc", nil, append(c.socketArgs, "weight", "pool/"+c.a, "abc"), 2, `weight "abc": want an integer from 1 to 1000`},
		{"no server", nil, append(c.socketArgs, "drain", c.a), 2, "name a server as BACKEND/ADDRESS"},
		{"unknown command", nil, append(c.socketArgs, "sleep"), 2, `unknown command "sleep"`},
		{"no token", nil, append(url, "drain", "pool/"+c.a), 1, "portcullis ctl takes it from -token-file FILE or $PORTCULLIS_ADMIN_TOKEN"},
		{"wrong token", nil, append(url[:2:2], "-url", listen, "-token-file", wrong, "drain", "pool/"+c.a), 1, "wrong token (the token sent came from -token-file " + wrong + ")"},
		{"wrong token in the environment", []string{"PORTCULLIS_ADMIN_TOKEN=" + strings.Repeat("y", 32)}, append(url, "reload"), 1, "wrong token"},
		{"no socket", nil, []string{c.bin, "ctl", "-s", c.sock + ".none", "status"}, 1, "cannot connect to the admin socket " + c.sock + ".none: no such file or directory: is portcullis running with admin.socket set"},
	} {
		r := runCtl(t, tc.env, tc.argv...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.says) {
			t.Errorf("%s: %v\nwant exit status %d and %q", tc.name, r, tc.code, tc.says)
		}
	}
	if r := c.row(c.a); r[1] != "up" || r[8] != "-" {
		t.Errorf("after refused changes: %q, want up and no override", r)
	}

	// With the token, the listener takes changes; without it, reads.
	if r := runCtl(t, nil, append(url, "-token-file", c.tokenFile, "drain", "pool/"+c.a)...); r.code != 0 || !strings.Contains(r.stdout, "drain") {
		t.Errorf("drain with -token-file: %v", r)
	}
	if r := runCtl(t, []string{"PORTCULLIS_ADMIN_TOKEN=" + adminToken}, append(url, "clear", "pool/"+c.a)...); r.code != 0 || !strings.Contains(r.stdout, "override: none") {
		t.Errorf("clear with $PORTCULLIS_ADMIN_TOKEN: %v", r)
	}
	if r := runCtl(t, nil, append(url, "status")...); r.code != 0 || !strings.Contains(r.stdout, "writable    no (reads only)") {
		t.Errorf("status on the listener without a token: %v", r)
	}
}

// TestCtlSocketPermission: a user outside the socket's group is refused
// with the remedy; one in it may use the socket.
func TestCtlSocketPermission(t *testing.T) {
	setpriv := needTool(t, "setpriv", "util-linux")
	c := startCtlSite(t)
	as := func(group string) []string {
		return []string{setpriv, "--reuid=nobody", "--regid=" + group, "--clear-groups", c.bin, "ctl", "-s", c.sock, "servers"}
	}
	r := runCtl(t, nil, as("daemon")...)
	want := "cannot connect to the admin socket " + c.sock + ": permission denied: only root and members of the socket's group (nogroup) may use it (admin.socket, global.group)"
	if r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Errorf("nobody in group daemon: %v\nwant exit status 1 and %q", r, want)
	}
	if r := runCtl(t, nil, as("nogroup")...); r.code != 0 || !strings.Contains(r.stdout, "pool/"+c.a) {
		t.Errorf("nobody in group nogroup: %v", r)
	}
}
