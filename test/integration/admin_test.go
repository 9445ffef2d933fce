package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// adminToken is the token of the test configurations' admin listener.
const adminToken = "0123456789abcdef0123456789abcdef"

// adminListen is the address of the test configurations' admin listener.
const adminListen = "127.0.0.1:9100"

// withAdmin adds an admin block to a configuration that starts with a
// global block: the socket at sock and, when token is set, the listener
// with a token file in the socket's directory.
func withAdmin(t *testing.T, config, sock string, token bool) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	block := fmt.Sprintf("admin:\n  socket: %s\n  listen: %s\n", sock, adminListen)
	if token {
		path := filepath.Join(filepath.Dir(sock), "admin.token")
		writeFile(t, path, adminToken+"\n", 0o600)
		block += "  token_file: " + path + "\n"
	}
	return strings.Replace(config, "frontends:\n", block+"frontends:\n", 1)
}

// adminClient talks HTTP to the admin unix socket at sock.
func adminClient(sock string) *http.Client {
	return &http.Client{
		Timeout: scaled(10 * time.Second),
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}},
	}
}

// adminDo sends method path (with body, JSON, when not "") through c to
// base and returns the status and the body.
func adminDo(t *testing.T, c *http.Client, base, method, path, body string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("admin %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// apiServer is the part of a server's admin API entry the tests read.
type apiServer struct {
	Address  string `json:"address"`
	State    string `json:"state"`
	Weight   int    `json:"weight"`
	InFlight int    `json:"in_flight"`
	Override *struct {
		State  string `json:"state"`
		Weight int    `json:"weight"`
	} `json:"override"`
}

// apiServers returns the servers of backend pool, by address.
func apiServers(t *testing.T, c *http.Client, base string) map[string]apiServer {
	t.Helper()
	code, body := adminDo(t, c, base, "GET", "/api/backends", "")
	var v struct {
		Backends []struct {
			Name    string      `json:"name"`
			Servers []apiServer `json:"servers"`
		} `json:"backends"`
	}
	if err := json.Unmarshal([]byte(body), &v); code != 200 || err != nil {
		t.Fatalf("GET /api/backends: %d %v\n%s", code, err, body)
	}
	out := map[string]apiServer{}
	for _, b := range v.Backends {
		if b.Name == "pool" {
			for _, s := range b.Servers {
				out[s.Address] = s
			}
		}
	}
	return out
}

// apiStatus returns the admin API's status.
func apiStatus(t *testing.T, c *http.Client, base string) (generation int, overrides string) {
	t.Helper()
	code, body := adminDo(t, c, base, "GET", "/api/status", "")
	var v struct {
		Generation int             `json:"generation"`
		Overrides  json.RawMessage `json:"overrides"`
	}
	if err := json.Unmarshal([]byte(body), &v); code != 200 || err != nil {
		t.Fatalf("GET /api/status: %d %v\n%s", code, err, body)
	}
	return v.Generation, string(v.Overrides)
}

// TestAdminDrainUnderLoad drains a server with portcullis ctl (through the
// admin socket) while
// HTTP/1.1, HTTP/2 and HTTP/3 clients send requests: no request fails,
// the request in flight on the drained server finishes, and no request
// that starts after the drain reaches it. The override survives a reload
// and a binary upgrade, and clearing it brings the server back.
func TestAdminDrainUnderLoad(t *testing.T) {
	a := startUp(t, "a", "127.0.0.1:0")
	b := startUp(t, "b", "127.0.0.1:0")
	dir := sharedDir(t)
	sock := filepath.Join(dir, "run", "admin.sock")
	s := newSite(t, siteOptions{User: true, App: [2]string{"127.0.0.1:1", "127.0.0.1:2"}, API: "127.0.0.1:3"})
	writeFile(t, s.config, withAdmin(t, lbConfig("", lbServer{addr: a.addr}, lbServer{addr: b.addr}), sock, false), 0o644)
	exe := executableDir(t, defaultBinary(t))
	p := start(t, asRoot(exe, s.config), startOptions{Outlived: true})
	p.waitReady()
	chain := newChain(t, p, exe)
	ac := adminClient(sock)
	const base = "http://admin"

	// The socket is root's and nogroup's, mode 0660.
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o660 || st.Uid != 0 || st.Gid != 65534 {
		t.Errorf("admin socket: mode %v uid %d gid %d, want 0660 root nogroup", fi.Mode().Perm(), st.Uid, st.Gid)
	}

	clients := map[string]*http.Client{}
	for _, proto := range []string{"HTTP/1.1", "HTTP/2", "HTTP/3"} {
		clients[proto] = clientFor(t, s, proto, 4)
	}
	// One slow request in flight on a.
	slow := make(chan result, 1)
	go func() {
		for {
			r := get(clients["HTTP/1.1"], "/slow?ms=1500")
			if r.server() == "a" || r.err != nil {
				slow <- r
				return
			}
		}
	}()
	deadline := time.Now().Add(scaled(3 * time.Second))
	for a.current() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the slow request did not reach a (a serves %d)", a.current())
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop := make(chan struct{})
	var loads []func() []result
	for _, c := range clients {
		loads = append(loads, loop(c, 2, "/background", stop))
	}
	time.Sleep(200 * time.Millisecond)

	r := runCtl(t, nil, exe, "ctl", "-s", sock, "drain", "pool/"+a.addr)
	drained := time.Now()
	if r.code != 0 || !strings.Contains(r.stdout, "drain") {
		t.Fatalf("portcullis ctl drain pool/%s: %s", a.addr, r)
	}
	if srv := apiServers(t, ac, base)[a.addr]; srv.State != "drain" || srv.InFlight != 1 || srv.Override == nil || srv.Override.State != "drain" {
		t.Errorf("a after the drain: %+v, want state drain, 1 in flight, an override", srv)
	}
	onlyB := func(what string) {
		t.Helper()
		for proto, c := range clients {
			for i := range 10 {
				if r := get(c, fmt.Sprintf("/%s/%d", what, i)); r.err != nil || r.status != 200 || r.server() != "b" {
					t.Errorf("%s over %s: %v, want 200 from b", what, proto, r)
				}
			}
		}
	}
	onlyB("drained")
	if r := <-slow; r.err != nil || r.status != 200 || r.server() != "a" {
		t.Errorf("the request in flight on a when it was drained: %v", r)
	}

	// A reload keeps the override.
	mark := len(p.stderr.String())
	p.signal(syscall.SIGHUP)
	waitLogWith(t, p, mark, scaled(5*time.Second), "msg=reloaded")
	onlyB("reloaded")

	close(stop)
	var all []result
	for _, l := range loads {
		all = append(all, l()...)
	}
	for _, r := range all {
		if r.err != nil || r.status != 200 {
			t.Errorf("background request: %v", r)
		} else if r.server() == "a" && r.start.After(drained) {
			t.Errorf("a background request started %v after the drain returned and reached a: %v", r.start.Sub(drained), r)
		}
	}
	if len(all) < 30 {
		t.Errorf("only %d background requests: the load proves nothing", len(all))
	}
	t.Logf("%d background requests over HTTP/1.1, HTTP/2 and HTTP/3, none failed", len(all))

	// A binary upgrade keeps it too, and counts the generation.
	chain.upgrade(2*time.Second, true)
	ac.CloseIdleConnections()
	if gen, overrides := apiStatus(t, ac, base); gen != 1 || !strings.Contains(overrides, a.addr) || !strings.Contains(overrides, `"drain"`) {
		t.Errorf("after the upgrade: generation %d, overrides %s; want 1 and a's drain", gen, overrides)
	}
	for _, c := range clients {
		if tr, ok := c.Transport.(interface{ CloseIdleConnections() }); ok {
			tr.CloseIdleConnections()
		}
	}
	onlyB("upgraded")

	// Clearing the override brings a back.
	if r := runCtl(t, nil, exe, "ctl", "-s", sock, "clear", "pool/"+a.addr); r.code != 0 || !strings.Contains(r.stdout, "up") {
		t.Fatalf("portcullis ctl clear pool/%s: %s", a.addr, r)
	}
	served := map[string]int{}
	for i := range 20 {
		served[get(clients["HTTP/1.1"], fmt.Sprintf("/cleared/%d", i)).server()]++
	}
	if served["a"] == 0 || served["b"] == 0 {
		t.Errorf("after clearing the override, 20 requests went to %v, want both servers", served)
	}
	chain.stop()
}

// TestAdminAccess checks who may do what: the listener answers reads to
// anyone and changes only with the token; the socket refuses a user
// outside its group; and an unknown server, a bad state and a bad
// weight are refused with a message naming them.
func TestAdminAccess(t *testing.T) {
	a := startUp(t, "a", "127.0.0.1:0")
	dir := sharedDir(t)
	sock := filepath.Join(dir, "run", "admin.sock")
	s := newSite(t, siteOptions{User: true, App: [2]string{"127.0.0.1:1", "127.0.0.1:2"}, API: "127.0.0.1:3"})
	writeFile(t, s.config, withAdmin(t, lbConfig("", lbServer{addr: a.addr}), sock, true), 0o644)
	p := start(t, asRoot(defaultBinary(t), s.config), startOptions{})
	p.waitReady()
	tcp := &http.Client{Timeout: scaled(5 * time.Second)}
	const listen = "http://" + adminListen
	drain := `{"state": "drain"}`
	path := "/api/servers/pool/" + a.addr

	if code, body := adminDo(t, tcp, listen, "GET", "/api/backends", ""); code != 200 || !strings.Contains(body, a.addr) {
		t.Errorf("GET /api/backends on the listener: %d %s", code, body)
	}
	cases := []struct {
		name   string
		header []string
		code   int
		says   string
	}{
		{"no token", nil, 401, "need the token"},
		{"wrong token", []string{"Authorization", "Bearer " + strings.Repeat("x", len(adminToken))}, 403, "wrong token"},
		{"the token", []string{"Authorization", "Bearer " + adminToken}, 200, `"state": "drain"`},
	}
	for _, c := range cases {
		code, body := adminDo(t, tcp, listen, "POST", path, drain, c.header...)
		if code != c.code || !strings.Contains(body, c.says) {
			t.Errorf("%s: POST %s: %d %s, want %d saying %q", c.name, path, code, body, c.code, c.says)
		}
	}
	ac := adminClient(sock)
	for _, c := range []struct{ path, body, says string }{
		{"/api/servers/pool/127.0.0.1:1", drain, "no server"},
		{"/api/servers/nope/" + a.addr, drain, `no backend "nope" (there are: pool)`},
		{path, `{"state": "sleep"}`, `state "sleep": want one of active, drain, disabled`},
		{path, `{"weight": 5000}`, "weight 5000: want 1 to 1000"},
		{path, `{"weigth": 5}`, "unknown field"},
	} {
		code, body := adminDo(t, ac, "http://admin", "POST", c.path, c.body)
		var e struct{ Error string }
		if err := json.Unmarshal([]byte(body), &e); err != nil || code < 400 || !strings.Contains(e.Error, c.says) {
			t.Errorf("POST %s %s: %d %s, want an error saying %q", c.path, c.body, code, body, c.says)
		}
	}

	// nobody:nogroup may connect to the socket; nobody in group daemon
	// only may not.
	for _, c := range []struct {
		group string
		ok    bool
	}{{"nogroup", true}, {"daemon", false}} {
		out, err := exec.Command("setpriv", "--reuid=nobody", "--regid="+c.group, "--clear-groups",
			"curl", "-sS", "--unix-socket", sock, "http://admin/api/status").CombinedOutput()
		if got := err == nil && strings.Contains(string(out), `"pid"`); got != c.ok {
			t.Errorf("nobody in group %s on the admin socket: %v %s, want allowed=%v", c.group, err, out, c.ok)
		}
	}
	if l := logsWith(p, 0, `msg="admin: server changed"`); len(l) != 1 || !strings.Contains(l[0], `via="admin listener (token)"`) {
		t.Errorf("the log of changes: %q, want one line for the change with the token", l)
	}
}

// TestAdminSocketActivation passes the admin socket and listener the way
// systemd does to portcullis running as nobody without any privilege:
// both serve.
func TestAdminSocketActivation(t *testing.T) {
	a := startUp(t, "a", "127.0.0.1:0")
	dir := sharedDir(t)
	sock := filepath.Join(dir, "admin.sock")
	s := newSite(t, siteOptions{App: [2]string{a.addr, a.addr}, API: a.addr})
	cfg := withAdmin(t, exampleConfig(siteOptions{App: [2]string{a.addr, "127.0.0.1:1"}, API: a.addr}), sock, false)
	cfg = strings.Replace(cfg, "  listen: "+adminListen+"\n", "  listen: "+adminListen+"\n  fd_name: admin\n", 1)
	writeFile(t, s.config, cfg, 0o644)
	files, env := activation(t, tcp80, tcp443, udp443, passedSocket{"tcp", adminListen, "admin"}, passedSocket{"unix", sock, "admin-socket"})
	p := start(t, asNobody(t, defaultBinary(t), s.config), startOptions{ExtraFiles: files, Env: env})
	closeFiles(files)
	p.waitReady()
	for _, l := range []string{"address=" + sock, "address=" + adminListen} {
		if got := logsWith(p, 0, "msg=listening", l, `socket=systemd`); len(got) != 1 {
			t.Errorf("listening lines with %s and socket=systemd: %q", l, got)
		}
	}
	if code, body := adminDo(t, adminClient(sock), "http://admin", "GET", "/api/frontends", ""); code != 200 || !strings.Contains(body, `"web"`) {
		t.Errorf("GET /api/frontends on the passed socket: %d %s", code, body)
	}
	tcp := &http.Client{Timeout: scaled(5 * time.Second)}
	code, body := adminDo(t, tcp, "http://"+adminListen, "GET", "/api/status", "")
	if code != 200 || !strings.Contains(body, `"writable": false`) {
		t.Errorf("GET /api/status on the passed listener: %d %s", code, body)
	}
	if code, _ := adminDo(t, tcp, "http://"+adminListen, "POST", "/api/reload", ""); code != 403 {
		t.Errorf("POST /api/reload on a listener without token_file: %d, want 403", code)
	}
}
