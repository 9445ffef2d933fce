package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/testutil"
)

// clientProtocols are the protocols of the clients of the limit tests.
var clientProtocols = []string{"HTTP/1.1", "HTTP/2"}

// limitedFrontend serves a backend of servers at addrs behind Limited
// with l, over HTTP/1.1 and HTTP/2 (h2c). It returns the frontend's
// address, the count of passive health failures, and the log of the
// limits' events (summarized every 10ms).
func limitedFrontend(t *testing.T, l RequestLimits, opt testOptions, addrs ...string) (addr string, failures *atomic.Int64, events *logBuffer) {
	t.Helper()
	be, failures, _ := judgedBackend(t, opt, addrs...)
	events = &logBuffer{}
	ev := limit.NewEvents(slog.New(slog.NewTextHandler(events, nil)), 10*time.Millisecond)
	h := Limited(&Handler{Router: &Router{Routes: []Route{{Backend: be}}}}, l, ev, "web")
	return serveBoth(t, h), failures, events
}

// clientFor returns a client of proto: HTTP/1.1, or HTTP/2 without TLS.
func clientOf(t *testing.T, proto string) *http.Client {
	if proto == "HTTP/2" {
		return h2cClient(t)
	}
	tr := &http.Transport{Proxy: nil, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: scaled(10 * time.Second)}
}

// post sends body (of unknown length when length < 0) and returns the
// status and the response body, or the error.
func post(c *http.Client, url string, body io.Reader, length int64) (int, string, error) {
	req, err := http.NewRequest("POST", url, body)
	if err != nil {
		return 0, "", err
	}
	req.ContentLength = length
	if length < 0 {
		req.ContentLength = -1
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// onlyReader hides every method of its reader but Read, so that the
// client cannot learn the body's length.
type onlyReader struct{ io.Reader }

// wantEvent waits for a summary line of the limit's events.
func wantEvent(t *testing.T, events *logBuffer, parts ...string) {
	t.Helper()
	eventually(t, fmt.Sprintf("an event with %q", parts), func() bool {
		for _, l := range strings.Split(events.String(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(l, p)
			}
			if all {
				return true
			}
		}
		return false
	})
}

// max_body_bytes: a body announced longer gets 413 without reaching the
// server; a body without a length is counted as it passes and gets 413
// when it goes beyond, the request to the server being aborted; a body of
// exactly the limit passes. None of it counts against the server.
func TestMaxBodyBytes(t *testing.T) {
	const max = 1000
	for _, up := range upstreamProtocols {
		for _, proto := range clientProtocols {
			t.Run(proto+" to "+up, func(t *testing.T) {
				srv := startBodyUpstream(t, up)
				addr, failures, events := limitedFrontend(t, RequestLimits{MaxBodyBytes: max}, testOptions{Retries: 2, Upstream: Upstream{Protocol: up}}, srv.addr)
				c := clientOf(t, proto)
				url := "http://" + addr + "/"

				status, _, err := post(c, url, strings.NewReader(strings.Repeat("x", max+1)), max+1)
				if err != nil || status != http.StatusRequestEntityTooLarge {
					t.Errorf("Content-Length %d: %d %v, want 413", max+1, status, err)
				}
				if n := srv.hits.Load(); n != 0 {
					t.Errorf("a body announced too large reached the server (%d requests)", n)
				}
				wantEvent(t, events, `msg="limit reached, request refused"`, "limit=max_body_bytes", "frontend=web")

				status, _, err = post(c, url, onlyReader{strings.NewReader(strings.Repeat("x", 64<<10))}, -1)
				if err != nil || status != http.StatusRequestEntityTooLarge {
					t.Errorf("a streamed body of 64 KiB: %d %v, want 413", status, err)
				}
				eventually(t, "the server's request is aborted", func() bool { return srv.bodyErrs.Load() == 1 })

				status, body, err := post(c, url, onlyReader{strings.NewReader(strings.Repeat("x", max))}, -1)
				if err != nil || status != 200 || body != fmt.Sprintf("read %d", max) {
					t.Errorf("a streamed body of exactly max_body_bytes: %d %q %v, want 200", status, body, err)
				}
				if n := failures.Load(); n != 0 {
					t.Errorf("%d requests over max_body_bytes held against the server", n)
				}
			})
		}
	}
}

// A body that goes beyond max_body_bytes after the response began (a
// server that answers while it reads, and a client that sends while it
// reads the answer: HTTP/2) cannot get 413 any more: the response is cut.
func TestMaxBodyBytesAfterResponseBegan(t *testing.T) {
	const max = 1000
	srv := startCounting(t, func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex()
		w.WriteHeader(200)
		io.WriteString(w, "started\n")
		http.NewResponseController(w).Flush()
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "done\n")
	})
	addr, failures, events := limitedFrontend(t, RequestLimits{MaxBodyBytes: max}, testOptions{}, srv.addr)
	pr, pw := io.Pipe()
	defer pw.Close()
	req, _ := http.NewRequest("POST", "http://"+addr+"/", pr)
	req.ContentLength = -1
	go pw.Write([]byte(strings.Repeat("x", max/2)))
	resp, err := h2cClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); resp.StatusCode != 200 || line != "started\n" {
		t.Fatalf("the response did not begin: %d %q %v", resp.StatusCode, line, err)
	}
	go pw.Write([]byte(strings.Repeat("x", max)))
	rest, err := io.ReadAll(br)
	if err == nil || strings.Contains(string(rest), "done") {
		t.Errorf("after the body went beyond max_body_bytes, the response went on: %q %v", rest, err)
	}
	wantEvent(t, events, "limit=max_body_bytes")
	if n := failures.Load(); n != 0 {
		t.Errorf("%d requests over max_body_bytes held against the server", n)
	}
}

// body_timeout: a client that stalls in the middle of its body gets 408
// after body_timeout, the request to the server is cancelled, and the
// server is not blamed.
func TestBodyTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	for _, up := range upstreamProtocols {
		for _, proto := range clientProtocols {
			t.Run(proto+" to "+up, func(t *testing.T) {
				srv := startBodyUpstream(t, up)
				addr, failures, events := limitedFrontend(t, RequestLimits{BodyTimeout: timeout}, testOptions{Retries: 2, Upstream: Upstream{Protocol: up}}, srv.addr)
				c := clientOf(t, proto)

				start := time.Now()
				status, _, err := post(c, "http://"+addr+"/", testutil.StalledBody("0123456789"), 100)
				took := time.Since(start)
				if err != nil || status != http.StatusRequestTimeout {
					t.Errorf("a stalled body: %d %v, want 408", status, err)
				}
				if took < timeout || took > timeout+scaled(time.Second) {
					t.Errorf("408 after %v, want after about body_timeout (%v)", took, timeout)
				}
				eventually(t, "the server's request is cancelled", func() bool { return srv.bodyErrs.Load() == 1 })
				wantEvent(t, events, `msg="limit reached, request refused"`, "limit=body_timeout", "frontend=web")

				// A body that keeps coming, slower than body_timeout in
				// all but faster between reads, passes.
				pr, pw := io.Pipe()
				go func() {
					for i := 0; i < 4; i++ {
						time.Sleep(timeout / 3)
						pw.Write([]byte("abcd"))
					}
					pw.Close()
				}()
				status, body, err := post(c, "http://"+addr+"/", pr, -1)
				if err != nil || status != 200 || body != "read 16" {
					t.Errorf("a slow but steady body: %d %q %v, want 200", status, body, err)
				}
				if n := failures.Load(); n != 0 {
					t.Errorf("%d stalled requests held against the server", n)
				}
			})
		}
	}
}

// send_timeout: a client that reads nothing of a large response is cut
// after send_timeout (the HTTP/1.1 connection closed, the HTTP/2 stream
// reset), and what it held upstream is released.
func TestSendTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	chunk := strings.Repeat("x", 64<<10)
	var wrote atomic.Int64
	writeFailed := make(chan struct{}, 4)
	srv := startCounting(t, func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < 1024; i++ { // 64 MiB
			n, err := io.WriteString(w, chunk)
			wrote.Add(int64(n))
			if err != nil {
				writeFailed <- struct{}{}
				return
			}
		}
	})
	for _, proto := range clientProtocols {
		t.Run(proto, func(t *testing.T) {
			addr, failures, events := limitedFrontend(t, RequestLimits{SendTimeout: timeout}, testOptions{}, srv.addr)
			var got int64
			var readErr error
			if proto == "HTTP/1.1" {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				io.WriteString(c, "GET /big HTTP/1.1\r\nHost: app.example.test\r\n\r\n")
				wantEvent(t, events, `msg="limit reached, client cut"`, "limit=send_timeout", "frontend=web")
				c.SetReadDeadline(time.Now().Add(scaled(5 * time.Second)))
				got, readErr = io.Copy(io.Discard, c)
			} else {
				resp, err := h2cClient(t).Get("http://" + addr + "/big")
				if err != nil {
					t.Fatal(err)
				}
				wantEvent(t, events, `msg="limit reached, client cut"`, "limit=send_timeout", "frontend=web")
				got, readErr = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if readErr == nil {
					readErr = errors.New("no error")
				}
			}
			if got >= 64<<20 {
				t.Errorf("the client got the whole response (%d bytes, %v) though it read nothing for send_timeout", got, readErr)
			}
			if ne, ok := readErr.(net.Error); ok && ne.Timeout() {
				t.Errorf("the client's connection stayed open after the cut (%d bytes read)", got)
			}
			select {
			case <-writeFailed:
			case <-time.After(scaled(5 * time.Second)):
				t.Errorf("the server still sends after the client was cut (%d bytes written)", wrote.Load())
			}
			if n := failures.Load(); n != 0 {
				t.Errorf("%d cut clients held against the server", n)
			}
		})
	}
}

// An HTTP/2 client that never opens its flow-control window is cut at
// send_timeout even for a response small enough to sit in the proxy's
// buffers when the handler returns.
func TestSendTimeoutZeroWindowSmallResponse(t *testing.T) {
	const timeout = 300 * time.Millisecond
	srv := startCounting(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "small") })
	addr, failures, events := limitedFrontend(t, RequestLimits{SendTimeout: timeout}, testOptions{}, srv.addr)
	h := dialH2(t, addr)
	h.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	start := time.Now()
	h.request(1, "GET", true)
	if s := h.status(1); s != 200 {
		t.Fatalf("status %d, want 200 (headers take no window)", s)
	}
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			t.Fatalf("the stream was not reset: %v", err)
		}
		if rst, ok := f.(*http2.RSTStreamFrame); ok && rst.StreamID == 1 {
			break
		}
		if d, ok := f.(*http2.DataFrame); ok && d.StreamID == 1 && len(d.Data()) > 0 {
			t.Fatalf("data sent through a zero window: %q", d.Data())
		}
	}
	if took := time.Since(start); took < timeout || took > timeout+scaled(time.Second) {
		t.Errorf("stream reset after %v, want after send_timeout (%v)", took, timeout)
	}
	wantEvent(t, events, `msg="limit reached, client cut"`, "limit=send_timeout")
	if n := failures.Load(); n != 0 {
		t.Errorf("%d cut clients held against the server", n)
	}
}

// A response that pauses longer than send_timeout between two writes
// (long polling, server-sent events) is not cut: send_timeout bounds a
// write the client does not take, not the time between writes.
func TestSendTimeoutIdleResponse(t *testing.T) {
	const timeout = 200 * time.Millisecond
	srv := startCounting(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "first\n")
		http.NewResponseController(w).Flush()
		time.Sleep(3 * timeout)
		io.WriteString(w, "second\n")
	})
	addr, _, events := limitedFrontend(t, RequestLimits{SendTimeout: timeout}, testOptions{}, srv.addr)
	for _, proto := range clientProtocols {
		resp, err := clientOf(t, proto).Get("http://" + addr + "/events")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(body) != "first\nsecond\n" {
			t.Errorf("%s: a response idle for 3 × send_timeout between writes: %q %v", proto, body, err)
		}
	}
	if strings.Contains(events.String(), "send_timeout") {
		t.Errorf("an idle response was cut:\n%s", events)
	}
}

// A client that reads, however slowly, is not cut: send_timeout bounds
// each write, not the response. (The client's receive buffer is small:
// with a large one, the kernel opens the window again only once a
// sixteenth of it is free, and a slow reader looks stalled that long.)
func TestSendTimeoutSlowReader(t *testing.T) {
	const (
		timeout = 300 * time.Millisecond
		size    = 512 << 10
	)
	chunk := strings.Repeat("y", 64<<10)
	srv := startCounting(t, func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < size/len(chunk); i++ {
			io.WriteString(w, chunk)
		}
	})
	addr, _, events := limitedFrontend(t, RequestLimits{SendTimeout: timeout}, testOptions{}, srv.addr)
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 8<<10) })
		return nil
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /big HTTP/1.1\r\nHost: app.example.test\r\nConnection: close\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got int64
	start := time.Now()
	buf := make([]byte, 8<<10)
	for {
		n, err := resp.Body.Read(buf)
		got += int64(n)
		if err != nil {
			if err != io.EOF {
				t.Fatalf("after %d bytes: %v", got, err)
			}
			break
		}
		time.Sleep(10 * time.Millisecond) // slow, never stalled
	}
	if got != size {
		t.Errorf("a slow reader got %d of %d bytes", got, size)
	}
	if strings.Contains(events.String(), "send_timeout") {
		t.Errorf("a slow reader was cut after %v:\n%s", time.Since(start), events)
	}
}

// The ResponseWriter of Limited keeps what the server's can do: Flush
// (a streamed response arrives before its end), Hijack (an upgrade) and
// http.ResponseController through Unwrap.
func TestLimitedWriterKeepsServerFeatures(t *testing.T) {
	rel := make(chan struct{})
	var inner http.ResponseWriter
	h := Limited(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stream":
			io.WriteString(w, "first")
			w.(http.Flusher).Flush()
			<-rel
			io.WriteString(w, " last")
		case "/controller":
			rc := http.NewResponseController(w)
			if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			if err := rc.EnableFullDuplex(); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			inner = w.(interface{ Unwrap() http.ResponseWriter }).Unwrap()
			io.WriteString(w, "ok")
		case "/hijack":
			c, brw, err := w.(http.Hijacker).Hijack()
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			defer c.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
			brw.Flush()
			line, _ := brw.ReadString('\n')
			brw.WriteString("echo " + line)
			brw.Flush()
		}
	}), RequestLimits{MaxBodyBytes: 10, BodyTimeout: time.Second, SendTimeout: time.Second}, nil, "web")
	url := serve(t, h)

	resp := do(t, mustRequest(t, "GET", url+"/stream"))
	first := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "first" {
		t.Errorf("flushed part: %q %v", first, err)
	}
	close(rel)
	if rest := readBody(t, resp); rest != " last" {
		t.Errorf("rest: %q", rest)
	}

	resp = do(t, mustRequest(t, "GET", url+"/controller"))
	if body := readBody(t, resp); body != "ok" {
		t.Errorf("http.ResponseController through Limited: %d %q", resp.StatusCode, body)
	}
	if _, ok := inner.(*limitedRequest); ok || inner == nil {
		t.Errorf("Unwrap returned %T, want the server's ResponseWriter", inner)
	}

	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(scaled(5 * time.Second)))
	io.WriteString(c, "GET /hijack HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(c)
	if r, err := http.ReadResponse(br, nil); err != nil || r.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", r, err)
	}
	time.Sleep(1200 * time.Millisecond) // longer than send_timeout: it no longer applies
	io.WriteString(c, "hello\n")
	if line, err := br.ReadString('\n'); err != nil || line != "echo hello\n" {
		t.Errorf("hijacked connection: %q %v", line, err)
	}
}

// BenchmarkLimited is BenchmarkProxyGET behind Limited with the
// configuration's default limits: what the limits cost a request.
func BenchmarkLimited(b *testing.B) {
	l := RequestLimits{MaxBodyBytes: 10 << 20, BodyTimeout: 30 * time.Second, SendTimeout: 30 * time.Second}
	ev := limit.NewEvents(slog.New(slog.DiscardHandler), 0)
	b.Run("direct", func(b *testing.B) {
		h := Limited(benchHandler(b, []byte("ok")), l, ev, "web")
		req, err := http.NewRequest("GET", "http://app.example.test/v1/users/42", nil)
		if err != nil {
			b.Fatal(err)
		}
		req.RemoteAddr = "192.0.2.7:51000"
		w := &discardWriter{h: http.Header{}}
		b.ReportAllocs()
		for b.Loop() {
			clear(w.h)
			w.status, w.n = 0, 0
			h.ServeHTTP(w, req)
			if w.status != http.StatusOK || w.n != 2 {
				b.Fatalf("status %d, %d bytes", w.status, w.n)
			}
		}
	})
	b.Run("loopback", func(b *testing.B) { benchLoopback(b, Limited(benchHandler(b, []byte("ok")), l, ev, "web")) })
}
