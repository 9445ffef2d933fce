package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The tests of who a failed request is attributed to (errors.go): the
// server, the client or the proxy itself. Each runs over HTTP/1.1 and
// HTTP/2 on the client's side and, where the server is reached, over
// HTTP/1.1 and HTTP/2 (h2c) on the server's side.

// upstreamProtocols are the protocols of the backends' servers.
var upstreamProtocols = []string{"http1", "h2c"}

// bodyUpstream is a server that reads each request body to its end and
// answers with its length. hits counts the requests it saw, bodyErrs
// those whose body could not be read to its end.
type bodyUpstream struct {
	addr           string
	hits, bodyErrs atomic.Int64
}

// startBodyUpstream starts a bodyUpstream speaking protocol (http1 or
// h2c).
func startBodyUpstream(t *testing.T, protocol string) *bodyUpstream {
	t.Helper()
	u := &bodyUpstream{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			u.bodyErrs.Add(1)
			return
		}
		fmt.Fprintf(w, "read %d", n)
	}))
	if protocol == "h2c" {
		srv.Config.Protocols = new(http.Protocols)
		srv.Config.Protocols.SetUnencryptedHTTP2(true)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	u.addr = strings.TrimPrefix(srv.URL, "http://")
	return u
}

// judgedBackend is a backend of servers at addrs whose passive health
// verdicts are counted: failures counts the requests held against a
// server.
func judgedBackend(t *testing.T, opt testOptions, addrs ...string) (b *Backend, failures *atomic.Int64, logs *logBuffer) {
	t.Helper()
	logs = &logBuffer{}
	failures = new(atomic.Int64)
	opt.observe = func(ok bool) {
		if !ok {
			failures.Add(1)
		}
	}
	b = newTestBackend("app", addrs, opt, slog.New(slog.NewTextHandler(logs, nil)))
	t.Cleanup(b.CloseIdleConnections)
	return b, failures, logs
}

// serveBoth serves h on 127.0.0.1:0 over HTTP/1.1 and HTTP/2 without TLS
// (prior knowledge) and returns its address.
func serveBoth(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// h2cClient speaks HTTP/2 with prior knowledge, without TLS.
func h2cClient(t *testing.T) *http.Client {
	tr := &http.Transport{Proxy: nil, DisableCompression: true, Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: scaled(10 * time.Second)}
}

// rawHTTP1 sends req on a new connection to addr, half-closes it when
// halfClose is set, and returns everything received until the server
// closes (or 5s pass).
func rawHTTP1(t *testing.T, addr, req string, halfClose bool) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	if halfClose {
		c.(*net.TCPConn).CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(scaled(5 * time.Second)))
	var got bytes.Buffer
	io.Copy(&got, c) // ends with EOF, a reset or the deadline
	return got.String()
}

// statusOf returns the status code of a raw HTTP/1.1 response, or 0.
func statusOf(resp string) int {
	line, _, _ := strings.Cut(resp, "\r\n")
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/1.") {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// h2Raw is a client connection that writes HTTP/2 frames as it is told,
// for requests no correct client sends.
type h2Raw struct {
	t    *testing.T
	conn net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
}

func dialH2(t *testing.T, addr string) *h2Raw {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(scaled(10 * time.Second)))
	h := &h2Raw{t: t, conn: c, fr: http2.NewFramer(c, c)}
	h.enc = hpack.NewEncoder(&h.hbuf)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return h
}

// request opens stream id with a request's HEADERS; fields are extra
// header name and value pairs.
func (h *h2Raw) request(id uint32, method string, endStream bool, fields ...string) {
	h.t.Helper()
	h.hbuf.Reset()
	for _, f := range [][2]string{{":method", method}, {":scheme", "http"}, {":authority", "app.example.test"}, {":path", "/"}} {
		h.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	for i := 0; i+1 < len(fields); i += 2 {
		h.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.hbuf.Bytes(), EndHeaders: true, EndStream: endStream}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *h2Raw) data(id uint32, p string, endStream bool) {
	h.t.Helper()
	if err := h.fr.WriteData(id, endStream, []byte(p)); err != nil {
		h.t.Fatal(err)
	}
}

// status reads frames until the response HEADERS of stream id and
// returns its :status; 0 when the stream is reset or the connection ends
// first.
func (h *h2Raw) status(id uint32) int {
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return 0
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				h.fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				n, _ := strconv.Atoi(f.PseudoValue("status"))
				return n
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return 0
			}
		case *http2.GoAwayFrame:
			return 0
		}
	}
}

// A request whose body does not parse is the client's fault: 400, never
// held against the server, never retried. Over HTTP/1.1 the body is
// chunked with a chunk size that is not hexadecimal; over HTTP/2 it is
// shorter than its Content-Length. A first chunk that does not parse is
// found before the request goes to a server.
func TestMalformedBodyIsTheClients(t *testing.T) {
	for _, proto := range upstreamProtocols {
		t.Run("upstream "+proto, func(t *testing.T) {
			a, b := startBodyUpstream(t, proto), startBodyUpstream(t, proto)
			be, failures, logs := judgedBackend(t, testOptions{Retries: 2, Upstream: Upstream{Protocol: proto}}, a.addr, b.addr)
			addr := serveBoth(t, &Handler{Router: &Router{Routes: []Route{{Backend: be}}}})

			for i := 0; i < 5; i++ {
				resp := rawHTTP1(t, addr, "POST / HTTP/1.1\r\nHost: app.example.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", false)
				if s := statusOf(resp); s != http.StatusBadRequest {
					t.Errorf("HTTP/1.1 POST with the chunk size zz: status %d, want 400:\n%s", s, resp)
				}
			}
			// The first chunk is read before the request is sent: no
			// server heard of these.
			if n := a.hits.Load() + b.hits.Load(); n != 0 {
				t.Errorf("%d requests whose first chunk does not parse reached a server, want 0", n)
			}
			for i := 0; i < 5; i++ {
				h := dialH2(t, addr)
				h.request(1, "POST", false, "content-length", "10")
				h.data(1, "abc", true)
				if s := h.status(1); s != http.StatusBadRequest {
					t.Errorf("HTTP/2 POST with 3 of its 10 bytes of body: status %d, want 400", s)
				}
			}
			if n := failures.Load(); n != 0 {
				t.Errorf("%d malformed requests held against the servers, want 0", n)
			}
			if strings.Contains(logs.String(), "retrying") {
				t.Errorf("a malformed request was retried:\n%s", logs)
			}
			eventually(t, "the client's fault summarized in the log", func() bool {
				return strings.Contains(logs.String(), `msg="request failed: the client's fault" status=400 reason="malformed request body"`)
			})
			resp, err := h2cClient(t).Post("http://"+addr+"/", "text/plain", strings.NewReader("fine"))
			if err != nil {
				t.Fatal(err)
			}
			if body := readBody(t, resp); resp.StatusCode != 200 || body != "read 4" {
				t.Errorf("a good request afterwards: %d %q", resp.StatusCode, body)
			}
		})
	}
}

// A client that goes away in the middle of its body is not held against
// the server, and gets no answer: over HTTP/1.1, a client that closed its
// side of the connection after part of the body gets no response at all
// (not an empty 200); over HTTP/2, a stream reset mid-body.
func TestAbortedBodyIsTheClients(t *testing.T) {
	for _, proto := range upstreamProtocols {
		t.Run("upstream "+proto, func(t *testing.T) {
			up := startBodyUpstream(t, proto)
			be, failures, logs := judgedBackend(t, testOptions{Retries: 2, Upstream: Upstream{Protocol: proto}}, up.addr)
			addr := serveBoth(t, &Handler{Router: &Router{Routes: []Route{{Backend: be}}}})

			for i := 0; i < 3; i++ {
				start := time.Now()
				resp := rawHTTP1(t, addr, "POST / HTTP/1.1\r\nHost: app.example.test\r\nContent-Length: 1000\r\n\r\n0123456789", true)
				if resp != "" {
					t.Errorf("HTTP/1.1: a client that left after 10 of 1000 bytes got an answer:\n%s", resp)
				}
				if took := time.Since(start); took > scaled(2*time.Second) {
					t.Errorf("HTTP/1.1: the connection of a client that left closed after %v, want at once", took)
				}
			}
			for i := 0; i < 3; i++ {
				h := dialH2(t, addr)
				h.request(1, "POST", false, "content-length", "1000")
				h.data(1, "0123456789", false)
				eventually(t, "the server sees the request", func() bool { return up.hits.Load() >= int64(4+i) })
				h.fr.WriteRSTStream(1, http2.ErrCodeCancel)
			}
			eventually(t, "the server sees every request fail", func() bool { return up.bodyErrs.Load() == 6 })
			time.Sleep(50 * time.Millisecond) // the proxy's verdicts follow the server's errors
			if n := failures.Load(); n != 0 {
				t.Errorf("%d aborted requests held against the server, want 0", n)
			}
			eventually(t, "the client's fault summarized in the log", func() bool {
				return strings.Contains(logs.String(), `msg="request failed: the client's fault" reason="client aborted the request body"`)
			})
		})
	}
}

// cutUpstream answers every request with a 200 whose body stops after 10
// bytes: the response announces 1000 bytes, or is chunked, and the
// connection is then reset.
func startCutUpstream(t *testing.T, chunked bool) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	head := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Up: cut\r\nContent-Length: 1000\r\n\r\n0123456789"
	if chunked {
		head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Up: cut\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n"
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						break
					}
				}
				io.WriteString(c, head)
				time.Sleep(50 * time.Millisecond) // the proxy has the bytes
				c.(*net.TCPConn).SetLinger(0)     // RST
			}()
		}
	}()
	return l.Addr().String()
}

// When a server resets the connection in the middle of a response body,
// the client gets the status, the headers and the bytes that came before
// the cut, then the cut: the HTTP/1.1 connection closes without the end
// of the body, the HTTP/2 stream is reset. A truncated body can be told
// from a missing one.
func TestCutResponseDeliversWhatCame(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		name := "content-length"
		if chunked {
			name = "chunked"
		}
		t.Run(name, func(t *testing.T) {
			be, _, _ := judgedBackend(t, testOptions{}, startCutUpstream(t, chunked))
			addr := serveBoth(t, &Handler{Router: &Router{Routes: []Route{{Backend: be}}}})

			resp := rawHTTP1(t, addr, "GET /big HTTP/1.1\r\nHost: app.example.test\r\n\r\n", false)
			head, body, _ := strings.Cut(resp, "\r\n\r\n")
			if statusOf(resp) != 200 || !strings.Contains(head, "\r\nX-Up: cut") || !strings.Contains(body, "0123456789") {
				t.Errorf("HTTP/1.1: want the status, the headers and the 10 bytes before the cut, got:\n%q", resp)
			}
			if strings.HasSuffix(body, "0\r\n\r\n") || strings.Count(body, "0123456789") != 1 {
				t.Errorf("HTTP/1.1: the cut response looks complete:\n%q", resp)
			}

			r, err := h2cClient(t).Get("http://" + addr + "/big")
			if err != nil {
				t.Fatalf("HTTP/2: no response before the cut: %v", err)
			}
			got, err := io.ReadAll(r.Body)
			r.Body.Close()
			if r.StatusCode != 200 || r.Header.Get("X-Up") != "cut" || string(got) != "0123456789" || err == nil {
				t.Errorf("HTTP/2: want 200 with X-Up, the 10 bytes, then an error; got %d %v %q, error %v", r.StatusCode, r.Header, got, err)
			}
		})
	}
}

// When the proxy itself is out of descriptors (or memory, or source
// ports), the server is not to blame: 503 with Retry-After, no passive
// health failure, and the failures are summarized, not logged one by one.
// Out of descriptors is not retried on another server (it would fail the
// same way); out of source ports is (they run out per destination).
func TestOwnResourceErrorIs503(t *testing.T) {
	for _, tc := range []struct {
		errno syscall.Errno
		dials int64 // per request, with two servers and retries
	}{
		{syscall.EMFILE, 1},
		{syscall.EADDRNOTAVAIL, 2},
	} {
		t.Run(tc.errno.Error(), func(t *testing.T) {
			a, b := startBodyUpstream(t, "http1"), startBodyUpstream(t, "http1")
			be, failures, logs := judgedBackend(t, testOptions{Retries: 2}, a.addr, b.addr)
			var dials atomic.Int64
			be.transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				dials.Add(1)
				return nil, &dialError{err: &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", tc.errno)}}
			}
			url := serve(t, &Handler{Router: &Router{Routes: []Route{{Backend: be}}}})
			for i := 0; i < 4; i++ {
				resp := do(t, mustRequest(t, "GET", url+"/"))
				readBody(t, resp)
				if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
					t.Errorf("status %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
				}
			}
			if n := failures.Load(); n != 0 {
				t.Errorf("%d of the proxy's own failures held against the servers, want 0", n)
			}
			if n := dials.Load(); n != 4*tc.dials {
				t.Errorf("%d dials for 4 requests, want %d", n, 4*tc.dials)
			}
			eventually(t, "the summary line", func() bool {
				return strings.Contains(logs.String(), `reason="proxy out of resources"`)
			})
			if strings.Contains(logs.String(), `msg="request failed"`) {
				t.Errorf("the proxy's own failures are logged one by one:\n%s", logs)
			}
		})
	}
}

// A server that resets its connection in the middle of a response body
// is held to account: the cut counts as a failure for passive health,
// though the status it sent did not.
func TestCutResponseCountsAgainstServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				http.ReadRequest(bufio.NewReader(c))
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n"+strings.Repeat("a", 1000))
				c.(*net.TCPConn).SetLinger(0)
			}()
		}
	}()
	be, failures, _ := judgedBackend(t, testOptions{}, l.Addr().String())
	url := serve(t, &Handler{Router: &Router{Routes: []Route{{Backend: be}}}})
	for i := 0; i < 3; i++ {
		resp, err := client.Get(url + "/")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(resp.Body); err == nil {
			t.Errorf("request %d: a body cut short read as complete", i)
		}
		resp.Body.Close()
	}
	if n := failures.Load(); n != 3 {
		t.Errorf("3 responses cut by the server counted %d failures, want 3", n)
	}
}
