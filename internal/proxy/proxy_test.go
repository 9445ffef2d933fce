package proxy

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
)

// scaled multiplies d by PORTCULLIS_TEST_TIMEOUT_SCALE (default 1), for
// slow machines. Timeouts only turn a hang into a failure; no test waits
// for them to pass.
var scaled = testutil.Scaled

// serve starts h on 127.0.0.1:0 and returns its base URL.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// client is a plain HTTP/1.1 client that never uses a proxy from the
// environment.
var client = &http.Client{
	Transport: &http.Transport{Proxy: nil, DisableCompression: true},
	Timeout:   scaled(10 * time.Second),
}

func do(t *testing.T, req *http.Request) *http.Response {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// logBuffer collects a backend's log lines.
type logBuffer = testutil.Buffer

// origin is a real HTTP server standing in for a backend server. It
// records the last request it received.
type origin struct {
	addr string
	mu   sync.Mutex
	last *http.Request
}

func startUpstream(t *testing.T, h http.HandlerFunc) *origin {
	t.Helper()
	u := &origin{}
	url := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.last = r.Clone(r.Context())
		u.mu.Unlock()
		if h != nil {
			h(w, r)
		}
	}))
	u.addr = strings.TrimPrefix(url, "http://")
	return u
}

func (u *origin) request(t *testing.T) *http.Request {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.last == nil {
		t.Fatal("the upstream server received no request")
	}
	return u.last
}

// startProxy serves a frontend whose every request goes to one backend of
// the given server addresses, and returns its URL and the backend's log.
func startProxy(t *testing.T, altSvc string, servers ...string) (string, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	b := newTestBackend("app", servers, testOptions{}, slog.New(slog.NewTextHandler(logs, nil)))
	t.Cleanup(b.CloseIdleConnections)
	h := &Handler{Router: &Router{Routes: []Route{{Backend: b}}}, AltSvc: altSvc}
	return serve(t, h), logs
}

func TestHopByHopRequestHeadersStripped(t *testing.T) {
	up := startUpstream(t, nil)
	url, _ := startProxy(t, "", up.addr)

	hopByHop := []string{"Connection", "X-Session-Secret", "X-Lower", "Keep-Alive", "Te", "Upgrade", "Proxy-Connection"}
	send := func(base string) *http.Response {
		req := mustRequest(t, "GET", base+"/")
		req.Header.Set("Connection", "keep-alive, X-Session-Secret, x-lower")
		req.Header.Set("X-Session-Secret", "hop-only")
		req.Header.Set("X-Lower", "hop-only")
		req.Header.Set("Keep-Alive", "timeout=5")
		req.Header.Set("TE", "gzip")
		req.Header.Set("Upgrade", "websocket") // no "Connection: upgrade": not an upgrade
		req.Header.Set("Proxy-Connection", "keep-alive")
		req.Header.Set("X-End-To-End", "kept")
		resp := do(t, req)
		readBody(t, resp)
		return resp
	}

	// Sent straight to the server, every header arrives: the client
	// really sends them.
	send("http://" + up.addr)
	for _, h := range hopByHop {
		if _, ok := up.request(t).Header[h]; !ok {
			t.Fatalf("the test client did not send %s", h)
		}
	}

	if resp := send(url); resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	got := up.request(t).Header
	for _, h := range hopByHop {
		if v, ok := got[h]; ok {
			t.Errorf("the server received hop-by-hop header %s: %q", h, v)
		}
	}
	if v := got.Get("X-End-To-End"); v != "kept" {
		t.Errorf("X-End-To-End = %q, want it passed through", v)
	}
}

func TestTETrailersPassed(t *testing.T) {
	// "TE: trailers" is the one TE value a proxy forwards: gRPC needs it.
	up := startUpstream(t, nil)
	url, _ := startProxy(t, "", up.addr)
	req, _ := http.NewRequest("GET", url+"/", nil)
	req.Header.Set("TE", "trailers")
	readBody(t, do(t, req))
	if v := up.request(t).Header.Values("Te"); len(v) != 1 || v[0] != "trailers" {
		t.Errorf("TE = %q, want [trailers]", v)
	}
}

func TestHopByHopResponseHeadersStripped(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Connection", "X-Internal")
		h.Set("X-Internal", "hop-only")
		h.Set("Keep-Alive", "timeout=99")
		h.Set("Proxy-Connection", "keep-alive")
		h.Set("Upgrade", "h2c")
		h.Set("X-End-To-End", "kept")
		io.WriteString(w, "ok")
	})
	url, _ := startProxy(t, "", up.addr)
	hopByHop := []string{"X-Internal", "Keep-Alive", "Proxy-Connection", "Upgrade"}
	direct := do(t, mustRequest(t, "GET", "http://"+up.addr+"/"))
	readBody(t, direct)
	for _, h := range hopByHop {
		if _, ok := direct.Header[h]; !ok {
			t.Fatalf("the test server did not send %s", h)
		}
	}

	resp := do(t, mustRequest(t, "GET", url+"/"))
	if body := readBody(t, resp); body != "ok" {
		t.Fatalf("body = %q, want ok", body)
	}
	for _, h := range hopByHop {
		if v, ok := resp.Header[h]; ok {
			t.Errorf("the client received hop-by-hop header %s: %q", h, v)
		}
	}
	if v := resp.Header.Get("Connection"); v != "" && !strings.EqualFold(v, "close") && !strings.EqualFold(v, "keep-alive") {
		t.Errorf("the client received the server's Connection header %q", v)
	}
	if v := resp.Header.Get("X-End-To-End"); v != "kept" {
		t.Errorf("X-End-To-End = %q, want it passed through", v)
	}
}

func mustRequest(t *testing.T, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestForwardingHeadersReplaced(t *testing.T) {
	up := startUpstream(t, nil)
	url, _ := startProxy(t, "", up.addr)

	req := mustRequest(t, "GET", url+"/path?q=1")
	req.Host = "app.example.test"
	// Everything a client could use to pose as an earlier proxy.
	req.Header.Set("X-Forwarded-For", "203.0.113.66")
	req.Header.Add("X-Forwarded-For", "198.51.100.1")
	req.Header.Set("X-Forwarded-Host", "evil.test")
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("X-Forwarded-Port", "443")
	req.Header.Set("X-Forwarded-Prefix", "/admin")
	req.Header["x-forwarded-server"] = []string{"lowercase.test"} // sent as written
	req.Header.Set("Forwarded", "for=203.0.113.66;proto=https")
	readBody(t, do(t, req))

	in := up.request(t)
	h := in.Header
	want := map[string][]string{
		"X-Forwarded-For":   {"127.0.0.1"},
		"X-Forwarded-Host":  {"app.example.test"},
		"X-Forwarded-Proto": {"http"},
		"Forwarded":         {"for=127.0.0.1;host=app.example.test;proto=http"},
	}
	for k, v := range want {
		if got := h.Values(k); strings.Join(got, "|") != strings.Join(v, "|") {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	for k, v := range h {
		if strings.HasPrefix(strings.ToLower(k), "x-forwarded-") && want[http.CanonicalHeaderKey(k)] == nil {
			t.Errorf("the server received the client's %s: %q", k, v)
		}
	}
	if in.Host != "app.example.test" {
		t.Errorf("the server received Host %q, want the client's app.example.test", in.Host)
	}
	if in.URL.RequestURI() != "/path?q=1" {
		t.Errorf("the server received %q, want /path?q=1", in.URL.RequestURI())
	}
}

func TestForwardedQuotesHostWithPort(t *testing.T) {
	up := startUpstream(t, nil)
	url, _ := startProxy(t, "", up.addr)
	req := mustRequest(t, "GET", url+"/") // Host is 127.0.0.1:PORT
	readBody(t, do(t, req))
	host := strings.TrimPrefix(url, "http://")
	h := up.request(t).Header
	if want := `for=127.0.0.1;host="` + host + `";proto=http`; h.Get("Forwarded") != want {
		t.Errorf("Forwarded = %q, want %q", h.Get("Forwarded"), want)
	}
	if h.Get("X-Forwarded-Host") != host {
		t.Errorf("X-Forwarded-Host = %q, want %q", h.Get("X-Forwarded-Host"), host)
	}
}

func TestVia(t *testing.T) {
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Via", "1.1 cache")
	})
	url, _ := startProxy(t, "", up.addr)

	t.Run("request and response", func(t *testing.T) {
		resp := do(t, mustRequest(t, "GET", url+"/"))
		readBody(t, resp)
		if v := up.request(t).Header.Values("Via"); strings.Join(v, "|") != "1.1 portcullis" {
			t.Errorf("request Via = %q, want [1.1 portcullis]", v)
		}
		if v := resp.Header.Values("Via"); strings.Join(v, "|") != "1.1 cache, 1.1 portcullis" {
			t.Errorf("response Via = %q, want [1.1 cache, 1.1 portcullis]", v)
		}
	})

	t.Run("appended to the client's", func(t *testing.T) {
		req := mustRequest(t, "GET", url+"/")
		req.Header.Add("Via", "1.0 corp")
		req.Header.Add("Via", "1.1 edge")
		readBody(t, do(t, req))
		if v := up.request(t).Header.Values("Via"); strings.Join(v, "|") != "1.0 corp, 1.1 edge, 1.1 portcullis" {
			t.Errorf("request Via = %q, want [1.0 corp, 1.1 edge, 1.1 portcullis]", v)
		}
	})

	t.Run("HTTP/1.0 client", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(scaled(10 * time.Second)))
		fmt.Fprintf(conn, "GET /old HTTP/1.0\r\nHost: old.test\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if v := up.request(t).Header.Get("Via"); v != "1.0 portcullis" {
			t.Errorf("request Via = %q, want 1.0 portcullis", v)
		}
	})
}

func TestRoundRobin(t *testing.T) {
	var servers []string
	for _, name := range []string{"a", "b", "c"} {
		up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })
		servers = append(servers, up.addr)
	}
	url, _ := startProxy(t, "", servers...)
	var got []string
	for range 7 {
		got = append(got, readBody(t, do(t, mustRequest(t, "GET", url+"/"))))
	}
	if s := strings.Join(got, ""); s != "abcabca" {
		t.Errorf("servers answered in order %q, want abcabca", s)
	}
}

func TestUnreachableServerIs502(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close() // nothing listens there any more: connection refused

	url, logs := startProxy(t, "", dead)
	resp := do(t, mustRequest(t, "GET", url+"/some/path"))
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status = %d, want 502", resp.StatusCode)
	}
	if body != "Bad Gateway\n" {
		t.Errorf("body = %q, want a short %q (no internal detail)", body, "Bad Gateway\n")
	}
	if strings.Contains(body, dead) {
		t.Errorf("the body reveals the server address: %q", body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Errorf("Content-Type = %q, want text/plain; charset=utf-8", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store: an outage must not be cached", cc)
	}
	log := logs.String()
	for _, want := range []string{"status=502", "server=" + dead, "path=/some/path", "connection refused"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log does not say %q:\n%s", want, log)
		}
	}
}

func TestNoServersIs503(t *testing.T) {
	url, _ := startProxy(t, "")
	resp := do(t, mustRequest(t, "GET", url+"/"))
	if body := readBody(t, resp); resp.StatusCode != http.StatusServiceUnavailable || body != "Service Unavailable\n" {
		t.Errorf("got %d %q, want 503 Service Unavailable", resp.StatusCode, body)
	}
}

// within fails the test if ch yields nothing in time; a proxy that buffers
// would make the test hang there.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(scaled(10 * time.Second)):
		t.Fatalf("timed out waiting for %s: the proxy buffers instead of streaming", what)
		panic("unreachable")
	}
}

func TestResponseStreams(t *testing.T) {
	for _, tc := range []struct {
		name, contentType string
	}{
		{"event-stream", "text/event-stream; charset=utf-8"},
		{"no length", "application/octet-stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.contentType)
				io.WriteString(w, "data: first\n\n")
				w.(http.Flusher).Flush()
				<-release // the rest comes only after the client saw the first event
				io.WriteString(w, "data: second\n\n")
			})
			url, _ := startProxy(t, "", up.addr)
			resp := do(t, mustRequest(t, "GET", url+"/events"))
			defer close(release)

			lines := make(chan string, 8)
			go func() {
				br := bufio.NewReader(resp.Body)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						close(lines)
						return
					}
					lines <- line
				}
			}()
			if l := within(t, lines, "the first event"); l != "data: first\n" {
				t.Fatalf("first line = %q, want data: first", l)
			}
			within(t, lines, "the blank line after the first event")
			release <- struct{}{}
			if l := within(t, lines, "the second event"); l != "data: second\n" {
				t.Fatalf("second line = %q, want data: second", l)
			}
		})
	}
}

func TestRequestBodyStreams(t *testing.T) {
	first := make(chan string, 1)
	up := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, len("chunk one;"))
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		first <- string(buf)
		rest, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s%s", buf, rest)
	})
	url, _ := startProxy(t, "", up.addr)

	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", url+"/upload", pr) // no length: chunked
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := client.Do(req)
		done <- result{resp, err}
	}()
	if _, err := io.WriteString(pw, "chunk one;"); err != nil {
		t.Fatal(err)
	}
	// The server has the first chunk while the client still holds the rest.
	if got := within(t, first, "the first chunk at the server"); got != "chunk one;" {
		t.Fatalf("server read %q first", got)
	}
	io.WriteString(pw, "chunk two")
	pw.Close()
	r := within(t, done, "the response")
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.resp.Body.Close()
	if body := readBody(t, r.resp); body != "chunk one;chunk two" {
		t.Errorf("the server received %q, want the whole body", body)
	}
}

func TestAltSvc(t *testing.T) {
	up := startUpstream(t, nil)
	const altSvc = `h3=":8443"; ma=86400`
	withH3, _ := startProxy(t, altSvc, up.addr)
	without, _ := startProxy(t, "", up.addr)

	resp := do(t, mustRequest(t, "GET", withH3+"/"))
	readBody(t, resp)
	if v := resp.Header.Get("Alt-Svc"); v != altSvc {
		t.Errorf("Alt-Svc = %q, want %q", v, altSvc)
	}
	resp = do(t, mustRequest(t, "GET", without+"/"))
	readBody(t, resp)
	if v, ok := resp.Header["Alt-Svc"]; ok {
		t.Errorf("Alt-Svc = %q without HTTP/3, want none", v)
	}

	// The announcement is on every response of the bind, 404s too.
	h := &Handler{Router: &Router{}, AltSvc: altSvc}
	resp = do(t, mustRequest(t, "GET", serve(t, h)+"/"))
	readBody(t, resp)
	if resp.StatusCode != 404 || resp.Header.Get("Alt-Svc") != altSvc {
		t.Errorf("got %d with Alt-Svc %q, want 404 with %q", resp.StatusCode, resp.Header.Get("Alt-Svc"), altSvc)
	}
}
