package proxy

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/portcullis/portcullis/internal/accesslog"
	"github.com/portcullis/portcullis/internal/hostname"
)

// The benchmarks of the request path. Allocation counts are process-wide,
// so the server standing in for the backend (rawUpstream) is a canned
// HTTP/1.1 responder that allocates nothing per request, and the client
// side is either a reused request handed straight to Handler (the "direct"
// variants: what the proxy itself costs) or a real net/http client and
// server on loopback ("loopback": what a request costs end to end, client
// included).
//
//	go test ./internal/proxy -run '^$' -bench . -benchmem -count 5

// rawUpstream serves every request on a keep-alive connection with the
// same canned response. It reads request headers up to the blank line and
// expects no request body. conns counts the connections it accepted.
func rawUpstream(tb testing.TB, body []byte, conns *atomic.Int64) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n")
	resp = append(resp, body...)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					for {
						line, err := br.ReadSlice('\n')
						if err != nil {
							return
						}
						if len(line) <= 2 { // "\r\n": end of the headers
							break
						}
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String()
}

// discardWriter is a reusable http.ResponseWriter that drops the body.
type discardWriter struct {
	h      http.Header
	status int
	n      int64
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(s int)   { w.status = s }
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.n += int64(len(p))
	return len(p), nil
}

// benchHandler proxies to a rawUpstream. Run serially, every request must
// reuse one pooled connection: the benchmark fails if a response was not
// drained and its connection not returned to the pool.
func benchHandler(b *testing.B, body []byte) *Handler {
	b.Helper()
	var conns atomic.Int64
	addr := rawUpstream(b, body, &conns)
	b.Cleanup(func() {
		if n := conns.Load(); n != 1 {
			b.Errorf("the server accepted %d connections, want 1 (keep-alive reuse)", n)
		}
	})
	be := newTestBackend("app", []string{addr}, testOptions{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	b.Cleanup(be.CloseIdleConnections)
	return &Handler{Router: &Router{Routes: []Route{{Host: hostname.MustParsePattern("app.example.test"), Backend: be}}}}
}

// benchDirect sends one GET per iteration straight to the handler and
// checks that the whole body went through.
func benchDirect(b *testing.B, size int) { benchDirectWith(b, size, false) }

// benchDirectWith is benchDirect, with a JSON access log to a file when
// logged is set.
func benchDirectWith(b *testing.B, size int, logged bool) {
	var h http.Handler = benchHandler(b, bytes.Repeat([]byte("x"), size))
	if logged {
		w := accesslog.NewWriter(filepath.Join(b.TempDir(), "access.log"), 0, slog.New(slog.DiscardHandler))
		if err := w.Open(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { w.Close() })
		h = Logged(h, LogOptions{Log: &accesslog.Logger{W: w, Format: accesslog.JSON}, Frontend: "web"})
	}
	req, err := http.NewRequest("GET", "http://app.example.test/v1/users/42", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.RemoteAddr = "192.0.2.7:51000"
	req.Header.Set("User-Agent", "bench/1.0")
	req.Header.Set("Accept", "*/*")
	w := &discardWriter{h: http.Header{}}
	if size > 0 {
		b.SetBytes(int64(size))
	}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		w.status, w.n = 0, 0
		h.ServeHTTP(w, req)
		if w.status != http.StatusOK || w.n != int64(size) {
			b.Fatalf("status %d, %d bytes; want 200, %d bytes", w.status, w.n, size)
		}
	}
}

// benchLoopback serves h on loopback and GETs through it over HTTP/1.1
// keep-alive.
func benchLoopback(b *testing.B, h http.Handler) {
	url := serveBench(b, h)
	c := &http.Client{Transport: &http.Transport{Proxy: nil, DisableCompression: true}}
	b.Cleanup(c.CloseIdleConnections)
	req, err := http.NewRequest("GET", url+"/v1/users/42", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Host = "app.example.test"
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}

// BenchmarkProxyGET is the whole request path for a small GET: route,
// sanitize, pick, round trip over a pooled keep-alive connection, copy a
// 2-byte response.
func BenchmarkProxyGET(b *testing.B) {
	b.Run("direct", func(b *testing.B) { benchDirect(b, 2) })
	b.Run("loopback", func(b *testing.B) { benchLoopback(b, benchHandler(b, []byte("ok"))) })
	b.Run("direct-jsonlog", func(b *testing.B) { benchDirectWith(b, 2, true) })
}

// serveBench serves h on 127.0.0.1:0 with a plain http.Server.
func serveBench(b *testing.B, h http.Handler) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	b.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String()
}

// BenchmarkProxyBody copies a response body of 64 KiB and of 1 MiB from
// the server to the client through the handler.
func BenchmarkProxyBody(b *testing.B) {
	b.Run("64KiB", func(b *testing.B) { benchDirect(b, 64<<10) })
	b.Run("1MiB", func(b *testing.B) { benchDirect(b, 1<<20) })
}

func BenchmarkAddVia(b *testing.B) {
	b.Run("first", func(b *testing.B) {
		h := http.Header{}
		b.ReportAllocs()
		for b.Loop() {
			delete(h, "Via")
			addVia(h, 1, 1)
		}
	})
	b.Run("appended", func(b *testing.B) {
		h := http.Header{}
		b.ReportAllocs()
		for b.Loop() {
			h["Via"] = []string{"1.1 cdn"}
			addVia(h, 1, 1)
		}
	})
}

func BenchmarkForwarded(b *testing.B) {
	for _, bc := range []struct{ name, client, host string }{
		{"v4", "192.0.2.7", "app.example.test"},
		{"v6-port", "2001:db8::7", "app.example.test:8443"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ip := netip.MustParseAddr(bc.client)
			b.ReportAllocs()
			for b.Loop() {
				forwarded(ip, bc.host, "https")
			}
		})
	}
}
