package runtime

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/portcullis/portcullis/internal/handoff"
	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/testutil"
)

// freePort returns a port of 127.0.0.1 that nothing uses, for TCP and for
// UDP (HTTP/3 binds both), and, most likely, that nothing binds until the
// test does. Other processes on the machine may hold many UDP ports.
func freePort(t *testing.T) string {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("no port of 127.0.0.1 is free for both TCP and UDP")
	return ""
}

// serveFile compiles the configuration yaml (written to dir), binds its
// sockets and serves them as Run does. It returns the serving set and a
// function that writes a new configuration over the file and reloads it.
func serveFile(t *testing.T, dir, yaml string) (*serving, func(yaml string) error) {
	t.Helper()
	g, err := compileFile(t, dir, yaml)
	if err != nil {
		t.Fatal(err)
	}
	sockets, err := listen.Acquire(g.Specs(), nil, true)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	s, err := serve(g, sockets, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.close)
	reg := newRegistry(log)
	path := filepath.Join(dir, "portcullis.yaml")
	return s, func(yaml string) error {
		t.Helper()
		if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		return s.reload(path, reg, handoff.NewRecorder())
	}
}

// socketsByKey describes the serving set's sockets as "network address"
// → file.
func socketsByKey(s *serving) map[string]*os.File {
	out := map[string]*os.File{}
	for _, sock := range s.sockets() {
		out[sock.Network+" "+sock.Address] = sock.File
	}
	return out
}

// TestReloadListeners reloads a serving set through listener changes: a
// bind that changes from http to tcp mode keeps its socket; a new bind
// (TLS and HTTP/3) is bound and served; a removed bind refuses
// connections; a reload whose new socket is in use is refused as a whole,
// binding nothing; sockets() always lists what is held.
func TestReloadListeners(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteCert(t, dir, "default.test")
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "backend "+r.URL.Path)
	}))
	t.Cleanup(backend.Close)
	a, b := freePort(t), freePort(t)
	web := func(mode string) string {
		return fmt.Sprintf("  web:\n    mode: %s\n    bind:\n      - address: %s\n    routes:\n      - backend: app\n", mode, a)
	}
	site := fmt.Sprintf(`  site:
    bind:
      - address: %s
        tls:
          certificates:
            - cert: default.test.pem
              key: default.test.key
        http3: true
        quic: {shards: 1}
    routes:
      - backend: app
`, b)
	file := func(frontends string) string {
		return "global:\n  grace: 2s\nfrontends:\n" + frontends + "backends:\n  app:\n    servers:\n      - address: " + backend.Listener.Addr().String() + "\n"
	}
	s, reloadFile := serveFile(t, dir, file(web("http")))
	reload := func(frontends string) error {
		t.Helper()
		return reloadFile(file(frontends))
	}
	client := &http.Client{Timeout: scaledTimeout(), Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
	}}
	get := func(url string) (string, http.Header) {
		t.Helper()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
		}
		return string(body), resp.Header
	}
	refused := func(addr string) {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, scaledTimeout())
		if err == nil {
			c.Close()
			t.Fatalf("%s accepts connections", addr)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial %s: %v, want connection refused", addr, err)
		}
	}

	first := socketsByKey(s)["tcp "+a]
	if _, h := get("http://" + a + "/one"); h.Get("Via") == "" {
		t.Errorf("mode http: the response has no Via header: %v", h)
	}

	// http → tcp on a, and a new TLS + HTTP/3 bind on b.
	if err := reload(web("tcp") + site); err != nil {
		t.Fatal(err)
	}
	held := socketsByKey(s)
	if len(held) != 3 || held["tcp "+a] != first || held["tcp "+b] == nil || held["udp "+b] == nil {
		t.Errorf("after the reload the process holds %v; want the same tcp %s socket (%v), tcp and udp %s", held, a, first, b)
	}
	if body, h := get("http://" + a + "/two"); h.Get("Via") != "" || body != "backend /two" {
		t.Errorf("mode tcp: %q with Via %q, want the backend's own response", body, h.Get("Via"))
	}
	if body, _ := get("https://" + b + "/three"); body != "backend /three" {
		t.Errorf("the new TLS bind answered %q", body)
	}
	if body := h3Body(t, "https://"+b+"/four"); body != "backend /four" {
		t.Errorf("HTTP/3 on the new bind answered %q", body)
	}

	// Back to http on a; b removed.
	if err := reload(web("http")); err != nil {
		t.Fatal(err)
	}
	refused(b)
	if _, h := get("http://" + a + "/five"); h.Get("Via") == "" {
		t.Errorf("back to mode http: no Via header: %v", h)
	}
	if held := socketsByKey(s); len(held) != 1 || held["tcp "+a] != first {
		t.Errorf("after removing %s the process holds %v", b, held)
	}

	// A new socket in use: nothing is applied, nothing stays bound.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	c := freePort(t)
	two := fmt.Sprintf("  more:\n    bind:\n      - address: %s\n      - address: %s\n    routes:\n      - backend: app\n", c, busy.Addr())
	err = reload(web("tcp") + two)
	var se *ReloadSocketError
	if !errors.As(err, &se) || !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), busy.Addr().String()) || !strings.Contains(err.Error(), "nothing was applied") {
		t.Fatalf("a reload with a socket in use: %v", err)
	}
	refused(c)
	if _, h := get("http://" + a + "/six"); h.Get("Via") == "" {
		t.Errorf("after a refused reload, %s no longer serves HTTP: %v", a, h)
	}
	if held := socketsByKey(s); len(held) != 1 || held["tcp "+a] != first {
		t.Errorf("after a refused reload the process holds %v", held)
	}

	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.shutdown(shutdown); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	refused(a)
}

// TestReloadReplaceTLSUnderLoad gives a TLS bind its first sni route and
// takes it away again, four times, under a loop of HTTPS requests on new
// connections: the layer-4 side that reads ClientHellos comes and goes on
// the same socket, and no request fails (a connection accepted by the old
// servers is handed to the old http.Server and answered).
func TestReloadReplaceTLSUnderLoad(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteCert(t, dir, "default.test")
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "backend "+r.URL.Path)
	}))
	t.Cleanup(backend.Close)
	a := freePort(t)
	file := func(sni bool) string {
		routes := "      - backend: app\n"
		if sni {
			routes = "      - sni: pass.test\n        backend: app\n" + routes
		}
		return fmt.Sprintf(`global:
  grace: 2s
frontends:
  web:
    bind:
      - address: %s
        tls:
          certificates:
            - cert: default.test.pem
              key: default.test.key
    routes:
%sbackends:
  app:
    servers:
      - address: %s
`, a, routes, backend.Listener.Addr())
	}
	s, reload := serveFile(t, dir, file(false))

	client := &http.Client{Timeout: scaledTimeout(), Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true, ServerName: "default.test"},
	}}
	stop := make(chan struct{})
	var mu sync.Mutex
	var n int
	var failures []string
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get("https://" + a + "/x")
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				n++
				if err != nil || string(body) != "backend /x" {
					failures = append(failures, fmt.Sprintf("%q %v", body, err))
				}
				mu.Unlock()
			}
		})
	}
	for i, sni := range []bool{true, false, true, false} {
		time.Sleep(100 * time.Millisecond)
		if err := reload(file(sni)); err != nil {
			t.Fatalf("reload %d: %v", i+1, err)
		}
		if got := s.units["tcp "+a].(*tcpUnit).tcp != nil; got != sni {
			t.Fatalf("reload %d: the bind has a layer-4 side: %v, want %v", i+1, got, sni)
		}
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed across the reloads, first: %s", len(failures), n, failures[0])
	}
	if n < 40 {
		t.Errorf("only %d requests: the load proves nothing", n)
	}
	t.Logf("%d requests", n)
}

// h3Body fetches url over HTTP/3 (any certificate) and returns the body.
func h3Body(t *testing.T, url string) string {
	t.Helper()
	h3 := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer h3.Close()
	ctx, cancel := context.WithTimeout(context.Background(), scaledTimeout())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := h3.RoundTrip(req)
	if err != nil {
		t.Fatalf("HTTP/3 GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}
