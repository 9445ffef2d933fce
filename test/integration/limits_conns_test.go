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
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/http2"

	"github.com/portcullis/portcullis/test/attack"
)

// Each limit of a frontend fires at its configured value, over every
// protocol it applies to, and is logged with its name.

// openServed reports whether one request over a new connection of proto
// ("tcp" for plain HTTP/1.1 on :80, "tls" for HTTP/1.1 over TLS on :443,
// "h3") is served, keeping the connection open until the test ends.
func openServed(t *testing.T, s *site, proto string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), scaled(5*time.Second))
	defer cancel()
	switch proto {
	case "h3":
		conn, err := quic.DialAddr(ctx, "127.0.0.1:443", &tls.Config{RootCAs: s.pool, ServerName: "localhost", NextProtos: []string{http3.NextProtoH3}}, nil)
		if err != nil {
			return err
		}
		t.Cleanup(func() { conn.CloseWithError(0, "") })
		tr := &http3.Transport{}
		cc := tr.NewClientConn(conn)
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://localhost/limits", nil)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	var c net.Conn
	var err error
	if proto == "tls" {
		c, err = tls.DialWithDialer(&net.Dialer{Timeout: scaled(5 * time.Second)}, "tcp", "127.0.0.1:443", &tls.Config{RootCAs: s.pool, ServerName: "localhost", NextProtos: []string{"http/1.1"}})
	} else {
		c, err = net.DialTimeout("tcp", "127.0.0.1:80", scaled(5*time.Second))
	}
	if err != nil {
		return err
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(scaled(5 * time.Second)))
	if _, err := io.WriteString(c, "GET /limits HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// TestLimitConns: max_conns_per_client 3 admits three connections of a
// client, whatever their protocols, and refuses the fourth; max_conns 5
// refuses the sixth of the frontend.
func TestLimitConns(t *testing.T) {
	_, servers := attackBackends(t, 1)
	s, p := startLB(t, withLimits(lbConfig("", servers...), "{max_conns: 5, max_conns_per_client: 3}"))
	mark := len(p.stderr.String())
	for _, proto := range []string{"tcp", "tls", "h3"} {
		if err := openServed(t, s, proto); err != nil {
			t.Fatalf("connection over %s, the client's first three: %v", proto, err)
		}
	}
	for _, proto := range []string{"tcp", "tls", "h3"} {
		if err := openServed(t, s, proto); err == nil {
			t.Errorf("a fourth connection of one client (over %s) was served with max_conns_per_client 3", proto)
		}
	}
	waitLogWith(t, p, mark, scaled(3*time.Second), `msg="limit reached, connection closed"`, "limit=max_conns_per_client", "frontend=web")

	// Other client addresses: two more fill the frontend's 5.
	mark = len(p.stderr.String())
	for i, from := range []string{"127.0.0.2", "127.0.0.3"} {
		c, err := dialFrom(from, "127.0.0.1:80")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "GET /limits/%d HTTP/1.1\r\nHost: localhost\r\n\r\n", i)
		c.SetReadDeadline(time.Now().Add(scaled(5 * time.Second)))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("connection %d of the frontend: %v", 4+i, err)
		}
		resp.Body.Close()
	}
	c, err := dialFrom("127.0.0.4", "127.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := closedWithoutAnswer(c, scaled(5*time.Second)); err != nil {
		t.Errorf("the frontend's sixth connection: %v", err)
	}
	waitLogWith(t, p, mark, scaled(3*time.Second), "limit=max_conns", "frontend=web")
}

// TestLimitHTTP: header_timeout, idle_timeout, max_header_bytes and
// h2_max_streams at small values, over the protocols they apply to.
func TestLimitHTTP(t *testing.T) {
	_, servers := attackBackends(t, 1)
	s, p := startLB(t, withLimits(lbConfig("", servers...), "{header_timeout: 1s, idle_timeout: 2s, max_header_bytes: 4096, h2_max_streams: 10}"))
	mark := len(p.stderr.String())

	t.Run("header_timeout", func(t *testing.T) {
		c, err := net.Dial("tcp", "127.0.0.1:80")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
		if err := closedWithoutAnswer(c, scaled(5*time.Second)); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 900*time.Millisecond || took > scaled(2500*time.Millisecond) {
			t.Errorf("a slow request head was cut after %v, want about header_timeout (1s)", took)
		}
		waitLogWith(t, p, mark, scaled(3*time.Second), "limit=header_timeout", "frontend=web")
	})

	t.Run("idle_timeout", func(t *testing.T) {
		for _, proto := range []string{"HTTP/1.1", "HTTP/2", "HTTP/3"} {
			closed := make(chan time.Time, 1)
			c := idleClient(t, s, proto, closed)
			url := "/idle"
			if proto == "HTTP/1.1" {
				url = "http://127.0.0.1/idle"
			}
			if r := get(c, url); r.err != nil || r.status != 200 {
				t.Fatalf("%s: %v", proto, r)
			}
			start := time.Now()
			select {
			case at := <-closed:
				if took := at.Sub(start); took < 1500*time.Millisecond || took > scaled(4*time.Second) {
					t.Errorf("%s: an idle connection was closed after %v, want about idle_timeout (2s)", proto, took)
				}
			case <-time.After(scaled(6 * time.Second)):
				t.Errorf("%s: an idle connection is still open after 6s (idle_timeout 2s)", proto)
			}
		}
	})

	t.Run("max_header_bytes", func(t *testing.T) {
		// Just over the limit: 431 from portcullis itself, whatever the
		// protocol (the servers' own bounds are a little higher).
		for _, proto := range []string{"HTTP/1.1", "HTTP/2", "HTTP/3"} {
			var resp *http.Response
			var err error
			// An HTTP/2 client that has read the server's SETTINGS first
			// refuses to send a head over the limit they announce (the
			// request goes first on most connections): try a new
			// connection then, so that the 431 is what is checked.
			for try := 0; try < 5; try++ {
				c := clientFor(t, s, proto, 1)
				req, _ := http.NewRequest("GET", "https://127.0.0.1/over", nil)
				req.Header.Set("X-Over", strings.Repeat("a", 4200))
				resp, err = c.Do(req)
				if err == nil || !strings.Contains(err.Error(), "header list larger than peer's advertised limit") {
					break
				}
			}
			if err != nil {
				t.Errorf("%s: a head just over max_header_bytes: %v", proto, err)
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
				t.Errorf("%s: a head just over max_header_bytes 4096: status %d, want 431", proto, resp.StatusCode)
			}
		}
		big := strings.Repeat("a", 8<<10)
		for _, proto := range []string{"HTTP/1.1", "HTTP/2", "HTTP/3"} {
			c := clientFor(t, s, proto, 1)
			req, _ := http.NewRequest("GET", "https://127.0.0.1/big", nil)
			req.Header.Set("X-Big", big)
			resp, err := c.Do(req)
			switch {
			case err == nil:
				resp.Body.Close()
				if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
					t.Errorf("%s: 8 KiB of headers with max_header_bytes 4096: status %d, want 431", proto, resp.StatusCode)
				}
			case strings.Contains(err.Error(), "header list larger than peer's advertised limit"):
				// The client read the limit in the server's SETTINGS
				// and refused to send: the limit is announced.
				t.Logf("%s: the client refused to send: %v", proto, err)
			case proto == "HTTP/2" && strings.Contains(err.Error(), "COMPRESSION_ERROR"):
				// net/http's HPACK decoder refuses a field longer than
				// the limit as a connection error.
				t.Logf("%s: the connection was closed: %v", proto, err)
			default:
				t.Errorf("%s: %v", proto, err)
			}
			// A request under the limit passes.
			if r := get(c, "/small"); r.err != nil || r.status != 200 {
				t.Errorf("%s: a small request after: %v", proto, r)
			}
		}
		waitLogWith(t, p, mark, scaled(3*time.Second), "limit=max_header_bytes", "frontend=web")
	})

	t.Run("h2_max_streams", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), scaled(20*time.Second))
		defer cancel()
		res, err := attack.ZeroWindow(ctx, attack.ZeroWindowOptions{
			Target:  attack.Target{Addr: "127.0.0.1:443", TLS: true, Host: "localhost"},
			Conns:   1,
			Streams: 20,
			Hold:    time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		// net/http refuses a stream over the limit with PROTOCOL_ERROR
		// (RFC 9113 §5.1.2 allows it or REFUSED_STREAM) at once.
		refused := res.Count(attack.StreamRefused)
		for _, e := range res.Streams {
			if e.How == attack.StreamReset && e.After < 500*time.Millisecond {
				refused++
			}
		}
		if res.MaxConcurrentStreams != 10 || refused != 10 || res.Count(attack.StreamHeld) != 10 {
			t.Errorf("HTTP/2 with h2_max_streams 10: %v; want SETTINGS_MAX_CONCURRENT_STREAMS 10, 10 of 20 streams refused at once and 10 held", res)
		}
		// HTTP/3: the peer's stream limit is QUIC's.
		conn, err := quic.DialAddr(ctx, "127.0.0.1:443", &tls.Config{RootCAs: s.pool, ServerName: "localhost", NextProtos: []string{http3.NextProtoH3}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.CloseWithError(0, "")
		opened := 0
		for ; opened < 20; opened++ {
			if _, err := conn.OpenStream(); err != nil {
				if !errors.Is(err, &quic.StreamLimitReachedError{}) {
					t.Fatalf("HTTP/3 stream %d: %v", opened+1, err)
				}
				break
			}
		}
		if opened != 10 {
			t.Errorf("HTTP/3 with h2_max_streams 10: %d streams could be opened at once, want 10", opened)
		}
	})
	waitLogWith(t, p, mark, scaled(3*time.Second), "limit=h2_max_streams", "frontend=web")
}

// idleClient returns a client for proto whose connections send the time
// they close on closed.
func idleClient(t *testing.T, s *site, proto string, closed chan<- time.Time) *http.Client {
	t.Helper()
	tlsConf := &tls.Config{RootCAs: s.pool, ServerName: "localhost"}
	notify := func() {
		select {
		case closed <- time.Now():
		default:
		}
	}
	var rt http.RoundTripper
	switch proto {
	case "HTTP/3":
		tr := &http3.Transport{
			TLSClientConfig: tlsConf,
			Dial: func(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
				c, err := quic.DialAddrEarly(ctx, "127.0.0.1:443", tlsCfg, cfg)
				if err == nil {
					context.AfterFunc(c.Context(), notify)
				}
				return c, err
			},
		}
		t.Cleanup(func() { tr.Close() })
		rt = tr
	case "HTTP/2":
		tr := &http2.Transport{
			DialTLSContext: func(ctx context.Context, network, addr string, conf *tls.Config) (net.Conn, error) {
				conf = tlsConf.Clone()
				conf.NextProtos = []string{"h2"}
				c, err := (&tls.Dialer{Config: conf}).DialContext(ctx, network, "127.0.0.1:443")
				if err != nil {
					return nil, err
				}
				return &closeWatch{Conn: c, closed: notify}, nil
			},
		}
		t.Cleanup(tr.CloseIdleConnections)
		rt = tr
	default:
		tr := &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, network, "127.0.0.1:80")
				if err != nil {
					return nil, err
				}
				return &closeWatch{Conn: c, closed: notify}, nil
			},
		}
		t.Cleanup(tr.CloseIdleConnections)
		rt = tr
	}
	return &http.Client{Transport: rt, Timeout: scaled(10 * time.Second)}
}

// closeWatch calls closed when a read ends with an error: the server
// closed the connection.
type closeWatch struct {
	net.Conn
	closed func()
}

func (c *closeWatch) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.closed()
	}
	return n, err
}

// TestLimitGlobalConns: global.max_conns counts every frontend's
// connections together: with 3, a third connection to one frontend and a
// fourth to the other are refused.
func TestLimitGlobalConns(t *testing.T) {
	_, servers := attackBackends(t, 1)
	cfg := strings.Replace(lbConfig("", servers...), "  grace: 2s\n", "  grace: 2s\n  max_conns: 3\n", 1)
	s, p := startLB(t, cfg)
	mark := len(p.stderr.String())
	for i, proto := range []string{"tcp", "tls", "h3"} {
		if err := openServed(t, s, proto); err != nil {
			t.Fatalf("connection %d of the process (over %s): %v", i+1, proto, err)
		}
	}
	for _, proto := range []string{"tcp", "h3"} {
		if err := openServed(t, s, proto); err == nil {
			t.Errorf("a fourth connection of the process (over %s) was served with global max_conns 3", proto)
		}
	}
	waitLogWith(t, p, mark, scaled(3*time.Second), "limit=global.max_conns")
}

// TestHTTPOutOfDescriptors: an http frontend whose process runs out of
// descriptors says so, summarized, at warning level (before: one debug
// line per failed accept, invisible), and serves again once it has
// some; no server is blamed.
func TestHTTPOutOfDescriptors(t *testing.T) {
	_, servers := attackBackends(t, 1)
	const front = "127.0.0.1:7021"
	// As root (no user): prlimit on another user's process needs
	// CAP_SYS_RESOURCE.
	cfg := fmt.Sprintf(`global:
  grace: 2s
frontends:
  web:
    bind:
      - address: %s
    routes:
      - backend: app
backends:
  app:
    servers:
      - address: %s
`, front, servers[0].addr)
	_, p := startL4(t, cfg, nil)
	pid := p.pid()
	get := func() error {
		c := &http.Client{Timeout: scaled(3 * time.Second), Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get("http://" + front + "/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	if err := get(); err != nil {
		t.Fatal(err)
	}
	mark := len(p.stderr.String())
	soft := nofileSoft(t, pid)
	time.Sleep(100 * time.Millisecond)
	setNofile(t, pid, strconv.Itoa(procFDs(t, pid).limitLeaving(0)))
	restored := false
	restore := func() {
		if !restored {
			restored = true
			setNofile(t, pid, soft)
		}
	}
	t.Cleanup(restore)

	// Connections wait in the listen queue while accept fails.
	var conns []net.Conn
	for range 20 {
		c, err := net.DialTimeout("tcp", front, scaled(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	time.Sleep(2500 * time.Millisecond)
	restore()
	for _, c := range conns {
		c.Close()
	}
	if err := get(); err != nil {
		t.Errorf("after the shortage: %v", err)
	}
	const msg = `msg="accept failed: out of file descriptors or memory"`
	line := waitLogWith(t, p, mark, scaled(3*time.Second), "level=WARN", msg, "frontend=web", "too many open files")
	t.Logf("%s", line)
	if got := logsWith(p, mark, msg); len(got) > 5 {
		t.Errorf("%d %s lines in about 3s, want one per second:\n%s", len(got), msg, strings.Join(got, "\n"))
	}
	if down := logsWith(p, mark, `msg="server down"`); len(down) > 0 {
		t.Errorf("the server was taken down for the proxy's own failures:\n%s", strings.Join(down, "\n"))
	}
}

// TestLimitSendTimeout: a client that reads nothing of a 16 MiB response
// is cut at send_timeout over HTTP/1.1 (the connection closed) and HTTP/3
// (the stream reset), and the limit is logged. (HTTP/2: see
// TestAttackZeroWindow.)
func TestLimitSendTimeout(t *testing.T) {
	const sendTimeout = 2 * time.Second
	const size = 16 << 20
	_, servers := attackBackends(t, 1)
	s, p := startLB(t, withLimits(lbConfig("", servers...), "{send_timeout: 2s}"))
	mark := len(p.stderr.String())
	path := fmt.Sprintf("/big?size=%d", size)

	t.Run("HTTP/1.1", func(t *testing.T) {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		}}
		c, err := d.Dial("tcp", "127.0.0.1:80")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n", path)
		time.Sleep(sendTimeout + scaled(1500*time.Millisecond))
		c.SetReadDeadline(time.Now().Add(scaled(5 * time.Second)))
		n, err := io.Copy(io.Discard, c)
		if err != nil || n >= size {
			t.Errorf("a client that read nothing for longer than send_timeout then got %d bytes (%v), want the connection cut (EOF) before %d", n, err, size)
		}
	})

	t.Run("HTTP/3", func(t *testing.T) {
		tr := &http3.Transport{
			TLSClientConfig: &tls.Config{RootCAs: s.pool, ServerName: "localhost"},
			QUICConfig:      &quic.Config{InitialStreamReceiveWindow: 16 << 10, MaxStreamReceiveWindow: 16 << 10},
		}
		defer tr.Close()
		ctx, cancel := context.WithTimeout(context.Background(), scaled(20*time.Second))
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://127.0.0.1:443"+path, nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		time.Sleep(sendTimeout + scaled(1500*time.Millisecond))
		n, err := io.Copy(io.Discard, resp.Body)
		if err == nil || n >= size {
			t.Errorf("a client that read nothing for longer than send_timeout then got %d bytes (%v), want the stream reset before %d", n, err, size)
		}
	})
	waitLogWith(t, p, mark, scaled(3*time.Second), "limit=send_timeout", "frontend=web")
}

// TestLimitsReload: a reload that changes h2_max_streams gives new
// HTTP/2 connections the new value (new servers on the same socket).
func TestLimitsReload(t *testing.T) {
	_, servers := attackBackends(t, 1)
	base := lbConfig("", servers...)
	s, p := startLB(t, withLimits(base, "{h2_max_streams: 10}"))
	settings := func() uint32 {
		ctx, cancel := context.WithTimeout(context.Background(), scaled(10*time.Second))
		defer cancel()
		res, err := attack.ZeroWindow(ctx, attack.ZeroWindowOptions{
			Target: attack.Target{Addr: "127.0.0.1:443", TLS: true, Host: "localhost"},
			Conns:  1, Streams: 1, Hold: 100 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		return res.MaxConcurrentStreams
	}
	if n := settings(); n != 10 {
		t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS %d, want 10", n)
	}
	if line := reload(t, s, p, withLimits(base, "{h2_max_streams: 20}")); !strings.Contains(line, "msg=reloaded") {
		t.Fatalf("reload: %s", line)
	}
	if n := settings(); n != 20 {
		t.Errorf("after the reload: SETTINGS_MAX_CONCURRENT_STREAMS %d, want 20", n)
	}
}
