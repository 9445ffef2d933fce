package proxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// deadAddr returns a loopback address nobody listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// counting is an upstream that counts requests and runs h.
type counting struct {
	addr string
	hits atomic.Int64
}

func startCounting(t *testing.T, h http.HandlerFunc) *counting {
	t.Helper()
	c := &counting{}
	u := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.hits.Add(1)
		h(w, r)
	}))
	c.addr = strings.TrimPrefix(u, "http://")
	return c
}

// resetting is an upstream that reads each request and closes the
// connection without answering.
func startResetting(t *testing.T) *counting {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	c := &counting{addr: l.Addr().String()}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				buf := make([]byte, 4096)
				if n, _ := conn.Read(buf); n > 0 {
					c.hits.Add(1)
				}
				if tc, ok := conn.(*net.TCPConn); ok {
					tc.SetLinger(0) // RST
				}
			}()
		}
	}()
	return c
}

func proxyTo(t *testing.T, opt testOptions, addrs ...string) (string, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	b := newTestBackend("app", addrs, opt, slog.New(slog.NewTextHandler(logs, nil)))
	t.Cleanup(b.CloseIdleConnections)
	return serve(t, &Handler{Router: &Router{Routes: []Route{{Backend: b}}}}), logs
}

func ok(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Write([]byte("ok " + string(body)))
}

func TestConnectFailureRetriedWhateverTheMethod(t *testing.T) {
	good := startCounting(t, ok)
	url, logs := proxyTo(t, testOptions{Retries: 2}, deadAddr(t), good.addr)
	for i := 0; i < 4; i++ { // round robin: half of these try the dead server first
		req := mustRequest(t, "POST", url+"/")
		req.Body = io.NopCloser(strings.NewReader("payload"))
		resp := do(t, req)
		if body := readBody(t, resp); resp.StatusCode != 200 || body != "ok payload" {
			t.Fatalf("POST %d: %d %q, want 200 with the body delivered once", i, resp.StatusCode, body)
		}
	}
	if !strings.Contains(logs.String(), "retrying on another server") {
		t.Errorf("no retry logged:\n%s", logs)
	}
}

func TestResetIdempotentRetriedPostNot(t *testing.T) {
	bad := startResetting(t)
	good := startCounting(t, ok)
	url, _ := proxyTo(t, testOptions{Retries: 2}, bad.addr, good.addr)

	resp := do(t, mustRequest(t, "GET", url+"/")) // round robin starts at the resetting server
	if resp.StatusCode != 200 {
		t.Fatalf("GET through a resetting server: %d, want 200 after a retry", resp.StatusCode)
	}
	readBody(t, resp)

	before := bad.hits.Load()
	var posts502 int
	for i := 0; i < 4; i++ {
		req := mustRequest(t, "POST", url+"/")
		req.Body = io.NopCloser(strings.NewReader("x"))
		resp := do(t, req)
		readBody(t, resp)
		if resp.StatusCode == http.StatusBadGateway {
			posts502++
		}
	}
	if sent := bad.hits.Load() - before; sent == 0 || int64(posts502) != sent {
		t.Errorf("POSTs that reached the resetting server: %d; 502s: %d; a POST that reached a server must not be retried", sent, posts502)
	}
}

func TestServerTimeoutIs504NotRetried(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	slow := startCounting(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	good := startCounting(t, ok) // a retry would reach it and turn the 504 into a 200
	url, logs := proxyTo(t, testOptions{Retries: 2, Upstream: Upstream{ServerTimeout: 200 * time.Millisecond}}, slow.addr, good.addr)
	start := time.Now()
	resp := do(t, mustRequest(t, "GET", url+"/"))
	readBody(t, resp)
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504", resp.StatusCode)
	}
	if took := time.Since(start); took > scaled(2*time.Second) {
		t.Errorf("504 after %v, want about the 200ms server timeout", took)
	}
	if slow.hits.Load() != 1 {
		t.Errorf("the slow server saw %d requests, want 1 (no retry after a server timeout)", slow.hits.Load())
	}
	if !strings.Contains(logs.String(), `reason="server timeout"`) {
		t.Errorf("log lacks the reason:\n%s", logs)
	}
}

func TestQueueWaitsForMaxConns(t *testing.T) {
	var cur, peak atomic.Int64
	srv := startCounting(t, func(w http.ResponseWriter, r *http.Request) {
		n := cur.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(50 * time.Millisecond)
		cur.Add(-1)
	})
	logs := &logBuffer{}
	b := newTestBackend("app", []string{srv.addr}, testOptions{QueueTimeout: scaled(5 * time.Second)}, slog.New(slog.NewTextHandler(logs, nil)))
	b.up.Servers()[0].Member().MaxConns = 2
	url := serve(t, &Handler{Router: &Router{Routes: []Route{{Backend: b}}}})
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := 0; i < 8; i++ {
		wg.Go(func() {
			resp, err := client.Get(url + "/")
			if err != nil || resp.StatusCode != 200 {
				failed.Add(1)
			}
			if resp != nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 || peak.Load() != 2 {
		t.Errorf("failed %d (want 0, queued), peak concurrency at the server %d (want max_conns 2)", failed.Load(), peak.Load())
	}
}

func TestQueueTimeoutIs503(t *testing.T) {
	release := make(chan struct{})
	srv := startCounting(t, func(w http.ResponseWriter, r *http.Request) { <-release })
	logs := &logBuffer{}
	b := newTestBackend("app", []string{srv.addr}, testOptions{QueueTimeout: 100 * time.Millisecond}, slog.New(slog.NewTextHandler(logs, nil)))
	b.up.Servers()[0].Member().MaxConns = 1
	url := serve(t, &Handler{Router: &Router{Routes: []Route{{Backend: b}}}})
	go client.Get(url + "/") // takes the only slot
	for deadline := time.Now().Add(scaled(5 * time.Second)); srv.hits.Load() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first request never reached the server")
		}
	}
	resp := do(t, mustRequest(t, "GET", url+"/"))
	readBody(t, resp)
	close(release)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("status %d Retry-After %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if !strings.Contains(logs.String(), `reason="queue timeout"`) {
		t.Errorf("log lacks the reason:\n%s", logs)
	}
}

func TestStickyCookie(t *testing.T) {
	a := startCounting(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("a")) })
	b := startCounting(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("b")) })
	url, _ := proxyTo(t, testOptions{StickyCookie: "srv"}, a.addr, b.addr)
	first := do(t, mustRequest(t, "GET", url+"/"))
	name := readBody(t, first)
	var cookie *http.Cookie
	for _, c := range first.Cookies() {
		if c.Name == "srv" {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly {
		t.Fatalf("first response sets no HttpOnly srv cookie: %v", first.Header["Set-Cookie"])
	}
	for i := 0; i < 6; i++ {
		req := mustRequest(t, "GET", url+"/")
		req.AddCookie(cookie)
		resp := do(t, req)
		if got := readBody(t, resp); got != name {
			t.Fatalf("request %d with the cookie went to %q, want %q", i, got, name)
		}
		if len(resp.Header["Set-Cookie"]) != 0 {
			t.Errorf("the cookie is set again though the client has it")
		}
	}
}

// TestClientCancelIsNotAServerFailure checks that requests the client
// abandons do not count against the server's passive health.
func TestClientCancelIsNotAServerFailure(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	slow := startCounting(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	var failures atomic.Int64
	observe := func(ok bool) {
		if !ok {
			failures.Add(1)
		}
	}
	b := newTestBackend("app", []string{slow.addr}, testOptions{observe: observe}, slog.New(slog.DiscardHandler))
	url := serve(t, &Handler{Router: &Router{Routes: []Route{{Backend: b}}}})
	for i := 0; i < 5; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, "GET", url+"/", nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
		}
		cancel()
	}
	time.Sleep(100 * time.Millisecond) // the proxy sees the cancellations
	if n := failures.Load(); n != 0 {
		t.Errorf("%d abandoned requests counted as server failures, want 0", n)
	}
}
