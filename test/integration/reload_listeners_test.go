package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/websocket"
)

// Reloads that change listeners. Every test starts portcullis as root
// with global.user nobody: after startup it binds as nobody, without any
// capability, so a reload can bind ports at or above 1024 only.

// listenerFrontend is a frontend "web" in mode (http or tcp) with the
// given bind lines (YAML indented by six spaces), every request or
// connection sent to backend pool.
func listenerFrontend(mode, binds string) string {
	return fmt.Sprintf("  web:\n    mode: %s\n    bind:\n%s    routes:\n      - backend: pool\n", mode, binds)
}

// listenerConfig is a configuration that drops to nobody, with the
// frontends and one backend, pool, of upstream.
func listenerConfig(grace, frontends, upstream string) string {
	return fmt.Sprintf("global:\n  user: nobody\n  group: nogroup\n  grace: %s\nfrontends:\n%sbackends:\n  pool:\n    servers:\n      - address: %s\n", grace, frontends, upstream)
}

const (
	plainBind = "      - address: 127.0.0.1:8080\n"
	tlsBind   = `      - address: 127.0.0.1:8443
        tls:
          certificates:
            - cert: site.pem
              key: site.key
        http3: true
        quic: {shards: 2}
`
)

// isRefused reports whether err is a refused TCP connection.
func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// checkRefused checks that a TCP connection to addr is refused.
func checkRefused(t *testing.T, addr, when string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, scaled(2*time.Second))
	if err == nil {
		c.Close()
		t.Errorf("%s: %s accepts connections", when, addr)
		return
	}
	if !isRefused(err) {
		t.Errorf("%s: dial %s: %v, want connection refused", when, addr, err)
	}
}

// keepAlive is one HTTP/1.1 connection the test keeps open across
// reloads.
type keepAlive struct {
	c  net.Conn
	br *bufio.Reader
}

func dialKeepAlive(t *testing.T, addr string) *keepAlive {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, scaled(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepAlive{c: c, br: bufio.NewReader(c)}
}

// get sends GET path on the connection and returns the status and body.
func (k *keepAlive) get(path string) (int, string, error) {
	k.c.SetDeadline(time.Now().Add(scaled(5 * time.Second)))
	if _, err := fmt.Fprintf(k.c, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// heldH3 is one HTTP/3 connection the test keeps across reloads: requests
// go over it only, so a request that succeeds after a reload proves the
// connection survived it.
type heldH3 struct {
	conn *quic.Conn
	cc   *http3.ClientConn
	tr   *quic.Transport
}

func dialHeldH3(t *testing.T, s *site, addr string) *heldH3 {
	t.Helper()
	udp, err := loopbackUDP()
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	t.Cleanup(func() { tr.Close(); udp.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), scaled(5*time.Second))
	defer cancel()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tr.Dial(ctx, ua, &tls.Config{RootCAs: s.pool, ServerName: "localhost", NextProtos: []string{http3.NextProtoH3}},
		&quic.Config{MaxIdleTimeout: 30 * time.Second, KeepAlivePeriod: time.Second})
	if err != nil {
		t.Fatalf("QUIC handshake with %s: %v", addr, err)
	}
	return &heldH3{conn: conn, cc: (&http3.Transport{}).NewClientConn(conn), tr: tr}
}

// get requests path on the held connection.
func (h *heldH3) get(path string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), scaled(5*time.Second))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://localhost"+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := h.cc.RoundTrip(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestReloadAddsListener starts with one plain HTTP bind on 8080 and
// reloads a file that adds 127.0.0.1:8443 with TLS and HTTP/3: the
// process, running as nobody, binds the new TCP and UDP sockets itself
// and serves HTTP/1.1, HTTP/2 and HTTP/3 on them (HTTP/3 on one shard,
// with a warning saying why), while a keep-alive connection to 8080 opened
// before the reload goes on serving on the same connection.
func TestReloadAddsListener(t *testing.T) {
	up := startUp(t, "a", "127.0.0.1:0")
	s, p := startLB(t, listenerConfig("2s", listenerFrontend("http", plainBind), up.addr))
	ka := dialKeepAlive(t, "127.0.0.1:8080")
	if code, body, err := ka.get("/before"); err != nil || code != 200 || !strings.HasPrefix(body, "a GET /before") {
		t.Fatalf("before the reload: %d %q %v", code, body, err)
	}
	checkRefused(t, "127.0.0.1:8443", "before the reload")

	mark := len(p.stderr.String())
	line := reload(t, s, p, listenerConfig("2s", listenerFrontend("http", plainBind+tlsBind), up.addr))
	if !strings.Contains(line, "msg=reloaded") {
		t.Fatalf("a reload adding 127.0.0.1:8443: %s", line)
	}
	// What Type=notify-reload (systemd 253 and later) waits for.
	if n := p.waitNotify("RELOADING=1", scaled(5*time.Second)); !strings.Contains(n, "MONOTONIC_USEC=") {
		t.Errorf("RELOADING=1 without MONOTONIC_USEC=: %q", n)
	}
	p.waitNotify("READY=1\nSTATUS=serving the reloaded configuration", scaled(5*time.Second))
	waitLogWith(t, p, mark, scaled(time.Second), "msg=listening", "network=tcp", "address=127.0.0.1:8443")
	waitLogWith(t, p, mark, scaled(time.Second), "msg=listening", "network=udp", "address=127.0.0.1:8443")
	waitLogCount(t, p, mark, 1, scaled(time.Second), "level=WARN", "one shard instead of 2", "restart")

	if code, body, err := ka.get("/after"); err != nil || code != 200 || !strings.HasPrefix(body, "a GET /after") {
		t.Errorf("the keep-alive connection to 8080 opened before the reload: %d %q %v", code, body, err)
	}
	expect := func(what string, r response, proto string) {
		t.Helper()
		if r.proto != proto || r.status != 200 || !strings.HasPrefix(r.body, "a GET ") {
			t.Errorf("%s: want %s 200 from the upstream, got:\n%v", what, proto, r)
		}
	}
	expect("HTTP/1.1 on 8080", curl(t, s, "--http1.1", "http://127.0.0.1:8080/plain"), "HTTP/1.1")
	resolve := []string{"--resolve", "localhost:8443:127.0.0.1"}
	expect("HTTP/1.1 on 8443", curl(t, s, append(resolve, "--http1.1", "https://localhost:8443/h1")...), "HTTP/1.1")
	r := curl(t, s, append(resolve, "--http2", "https://localhost:8443/h2")...)
	expect("HTTP/2 on 8443", r, "HTTP/2")
	if got := r.header.Get("Alt-Svc"); got != `h3=":8443"; ma=86400` {
		t.Errorf("Alt-Svc on the new bind = %q", got)
	}
	r, err := h3Try(s, "https://localhost:8443/h3", scaled(10*time.Second))
	if err != nil {
		t.Fatalf("HTTP/3 on the new bind: %v", err)
	}
	expect("HTTP/3 on 8443", r, "HTTP/3")
	checkUnprivileged(t, p.pid(), true)
	p.stop()
}

// TestReloadPrivilegedPortRefused reloads, as nobody, a file that adds a
// bind on 127.0.0.1:444 (and one on 8081): the whole reload is refused,
// the log and the service status name the frontend, the address and the
// reason, the log gives the remedies, neither new port is bound, and the
// running listener keeps serving.
func TestReloadPrivilegedPortRefused(t *testing.T) {
	up := startUp(t, "a", "127.0.0.1:0")
	s, p := startLB(t, listenerConfig("2s", listenerFrontend("http", plainBind), up.addr))
	mark := len(p.stderr.String())
	more := plainBind + "      - address: 127.0.0.1:8081\n      - address: 127.0.0.1:444\n"
	line := reload(t, s, p, listenerConfig("2s", listenerFrontend("http", more), up.addr))
	for _, part := range []string{
		`msg="reload refused`, "uid=65534(nobody)", "nothing was applied",
		`frontend \"web\": bind tcp 127.0.0.1:444`, "permission denied",
		"port at or above 1024", "restart portcullis", "ListenStream=127.0.0.1:444", "CAP_NET_BIND_SERVICE",
	} {
		if !strings.Contains(line, part) {
			t.Errorf("the log line of the refused reload lacks %q:\n%s", part, line)
		}
	}
	status := p.waitNotify("STATUS=reload failed", scaled(5*time.Second))
	for _, part := range []string{"READY=1", "still serving the previous configuration", "127.0.0.1:444", "permission denied"} {
		if !strings.Contains(status, part) {
			t.Errorf("the notification after the refused reload lacks %q: %q", part, status)
		}
	}
	checkRefused(t, "127.0.0.1:444", "after the refused reload")
	checkRefused(t, "127.0.0.1:8081", "after the refused reload (8081 could be bound, but the reload was refused as a whole)")
	if r := curl(t, s, "--http1.1", "http://127.0.0.1:8080/still"); r.status != 200 || !strings.HasPrefix(r.body, "a GET /still") {
		t.Errorf("after the refused reload, 8080 answers:\n%v", r)
	}
	if l := logsWith(p, mark, "msg=listening"); len(l) > 0 {
		t.Errorf("a refused reload logged new listeners:\n%s", strings.Join(l, "\n"))
	}
	p.stop()
}

// TestReloadRemovesListener removes the TLS + HTTP/3 bind while a slow
// request is in flight on it over HTTP/1.1 and another over HTTP/3: new
// TCP connections to it are refused right after the reload, and new QUIC
// connections get no service, but both requests complete with 200; the
// other bind serves on.
func TestReloadRemovesListener(t *testing.T) {
	up := startUp(t, "a", "127.0.0.1:0")
	s, p := startLB(t, listenerConfig("5s", listenerFrontend("http", plainBind+tlsBind), up.addr))
	h1 := &http.Client{Timeout: scaled(10 * time.Second), Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: s.pool, ServerName: "localhost"},
	}}
	t.Cleanup(h1.CloseIdleConnections)
	var wg sync.WaitGroup
	var r1 result
	var r3 response
	var err3 error
	wg.Go(func() { r1 = get(h1, "https://127.0.0.1:8443/slow?ms=1500") })
	wg.Go(func() { r3, err3 = h3Try(s, "https://localhost:8443/slow?ms=1500", scaled(10*time.Second)) })
	deadline := time.Now().Add(scaled(3 * time.Second))
	for up.current() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the two slow requests did not reach the upstream: it serves %d", up.current())
		}
		time.Sleep(10 * time.Millisecond)
	}

	mark := len(p.stderr.String())
	line := reload(t, s, p, listenerConfig("5s", listenerFrontend("http", plainBind), up.addr))
	if !strings.Contains(line, "msg=reloaded") {
		t.Fatalf("a reload removing 127.0.0.1:8443: %s", line)
	}
	checkRefused(t, "127.0.0.1:8443", "right after the reload")
	if up.current() != 2 {
		t.Errorf("the slow requests are no longer in flight right after the reload (the upstream serves %d)", up.current())
	}
	if r, err := h3Try(s, "https://localhost:8443/late", scaled(500*time.Millisecond)); err == nil {
		t.Errorf("a new HTTP/3 connection to the removed bind was served: %v", r)
	}
	for _, network := range []string{"tcp", "udp"} {
		waitLogWith(t, p, mark, scaled(time.Second), `msg="listener removed`, "network="+network, "address=127.0.0.1:8443")
	}

	wg.Wait()
	if r1.err != nil || r1.status != 200 || r1.body != "a GET /slow HTTP/1.1\n" {
		t.Errorf("HTTP/1.1 request in flight on the removed bind: %v", r1)
	}
	if err3 != nil || r3.proto != "HTTP/3" || r3.status != 200 || r3.body != "a GET /slow HTTP/1.1\n" {
		t.Errorf("HTTP/3 request in flight on the removed bind: %v %v", r3, err3)
	}
	if r := curl(t, s, "--http1.1", "http://127.0.0.1:8080/other"); r.status != 200 {
		t.Errorf("the bind that stays: %v", r)
	}
	waitLogWith(t, p, mark, scaled(5*time.Second), "have finished their connections", "tcp 127.0.0.1:8443", "quic 127.0.0.1:8443")
	p.stop()
}

// TestReloadChangesMode changes the bind on 127.0.0.1:8080 from mode http
// to mode tcp and back under a loop of requests, each on a new
// connection: no connection is refused at any point (the socket is never
// unbound), every request is answered by the old or the new server, and
// after each reload the new kind serves: HTTP adds Via to the response,
// a tcp relay passes the upstream's response as it is. An HTTP/3
// connection to another bind, whose listener the reloads keep, serves
// requests across every reload.
func TestReloadChangesMode(t *testing.T) {
	up := startUp(t, "a", "127.0.0.1:0")
	site := "  site:\n    bind:\n" + tlsBind + "    routes:\n      - backend: pool\n"
	config := func(mode string) string {
		return listenerConfig("2s", listenerFrontend(mode, plainBind)+site, up.addr)
	}
	s, p := startLB(t, config("http"))
	h3 := dialHeldH3(t, s, "127.0.0.1:8443")
	if code, body, err := h3.get("/h3/0"); err != nil || code != 200 || !strings.HasPrefix(body, "a GET /h3/0") {
		t.Fatalf("HTTP/3 before the reloads: %d %q %v", code, body, err)
	}
	c := &http.Client{Timeout: scaled(10 * time.Second), Transport: &http.Transport{DisableKeepAlives: true}}
	t.Cleanup(c.CloseIdleConnections)
	viaOf := func(r result) bool { return r.header.Get("Via") != "" }

	stop := make(chan struct{})
	background := loop(c, 4, "http://127.0.0.1:8080/loop", stop)
	time.Sleep(200 * time.Millisecond)
	for i, mode := range []string{"tcp", "http", "tcp", "http"} {
		mark := len(p.stderr.String())
		if line := reload(t, s, p, config(mode)); !strings.Contains(line, "msg=reloaded") {
			t.Fatalf("reload %d to mode %s: %s", i+1, mode, line)
		}
		waitLogWith(t, p, mark, scaled(time.Second), `msg="listener changed`, "address=127.0.0.1:8080")
		r := get(c, "http://127.0.0.1:8080/check")
		if r.err != nil || r.status != 200 || viaOf(r) != (mode == "http") {
			t.Errorf("after the reload to mode %s: %v (Via %q)", mode, r, r.header.Get("Via"))
		}
		path := fmt.Sprintf("/h3/%d", i+1)
		if code, body, err := h3.get(path); err != nil || code != 200 || !strings.HasPrefix(body, "a GET "+path) {
			t.Errorf("the HTTP/3 connection opened before the reloads, after reload %d: %d %q %v", i+1, code, body, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	close(stop)
	all := background()
	refused, failed, byHTTP, byTCP := 0, 0, 0, 0
	for _, r := range all {
		switch {
		case isRefused(r.err):
			refused++
			if refused <= 3 {
				t.Errorf("connection refused during the reloads: %v", r)
			}
		case r.err != nil || r.status != 200 || !strings.HasPrefix(r.body, "a GET /loop"):
			failed++
			if failed <= 3 {
				t.Errorf("a request failed during the reloads: %v (start %s)", r, r.start.UTC().Format("15:04:05.000000"))
			}
		case viaOf(r):
			byHTTP++
		default:
			byTCP++
		}
	}
	t.Logf("%d requests: %d through HTTP, %d through the tcp relay, %d refused, %d failed", len(all), byHTTP, byTCP, refused, failed)
	if byHTTP < 20 || byTCP < 20 {
		t.Errorf("only %d requests through HTTP and %d through the tcp relay: the load proves nothing", byHTTP, byTCP)
	}
	if p.exited() {
		t.Fatalf("portcullis exited: %s", p.describe())
	}
	p.stop()
}

// TestReloadClosesReplacedTunnels checks that a WebSocket accepted by a
// listener that a reload replaces is ended within the grace period, after
// the message in flight: net/http forgets upgraded connections, so without
// tracking them the old listener's WebSockets would live on with the old
// configuration.
func TestReloadClosesReplacedTunnels(t *testing.T) {
	up := startUp(t, "a", "127.0.0.1:0")
	config := func(mode string) string {
		return listenerConfig("3s", listenerFrontend(mode, "      - address: 127.0.0.1:80\n"), up.addr)
	}
	s, p := startLB(t, config("http"))
	ws := dialWS(t, s, "ws://localhost/ws")
	echo := func() error {
		ws.SetDeadline(time.Now().Add(scaled(5 * time.Second)))
		if err := websocket.Message.Send(ws, "ping"); err != nil {
			return err
		}
		var got string
		return websocket.Message.Receive(ws, &got)
	}
	if err := echo(); err != nil {
		t.Fatalf("WebSocket before the reload: %v", err)
	}
	mark := len(p.stderr.String())
	start := time.Now()
	if line := reload(t, s, p, config("tcp")); !strings.Contains(line, "msg=reloaded") {
		t.Fatalf("reload to mode tcp: %s", line)
	}
	// The WebSocket is ended at a quiet moment of the drain, before the
	// 3s grace period is over.
	ws.SetDeadline(time.Now().Add(scaled(6 * time.Second)))
	var got string
	err := websocket.Message.Receive(ws, &got)
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the replaced listener's WebSocket was not ended by the drain: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second+scaled(time.Second) {
		t.Errorf("the WebSocket was ended %v after the reload, after the 3s grace period", took)
	}
	waitLogWith(t, p, mark, scaled(2*time.Second), "listeners stopped by the reload have finished")
}
