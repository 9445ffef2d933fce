package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pp "github.com/pires/go-proxyproto"

	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/upstream"
)

// ppUpstream is a server with a PROXY protocol listener: every connection
// must start with a PROXY header, then carries HTTP/1.1. Each response
// names the connection that carried it (X-Conn) and the client the
// connection's header named (X-Client: r.RemoteAddr, set from the header).
// A request with "Upgrade: echo" is switched to a protocol that echoes
// bytes back.
type ppUpstream struct {
	addr string
	mu   sync.Mutex
	// conns are the connections accepted, in order; id is the index.
	conns []*ppConn
	// errs are connections that did not start with a PROXY header.
	errs []error
}

// ppConn is an accepted connection past its PROXY header.
type ppConn struct {
	net.Conn
	br     *bufio.Reader
	id     int
	header *pp.Header
	closed chan struct{} // closed once the server closed the connection
	once   sync.Once
}

func (c *ppConn) Read(p []byte) (int, error) { return c.br.Read(p) }
func (c *ppConn) RemoteAddr() net.Addr       { return c.header.SourceAddr }
func (c *ppConn) markClosed()                { c.once.Do(func() { close(c.closed) }) }

type ppListener struct {
	net.Listener
	u *ppUpstream
}

func (l *ppListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		br := bufio.NewReader(c)
		c.SetReadDeadline(time.Now().Add(scaled(5 * time.Second)))
		h, err := pp.Read(br)
		c.SetReadDeadline(time.Time{})
		l.u.mu.Lock()
		if err != nil {
			l.u.errs = append(l.u.errs, err)
			l.u.mu.Unlock()
			c.Close()
			continue
		}
		pc := &ppConn{Conn: c, br: br, id: len(l.u.conns), header: h, closed: make(chan struct{})}
		l.u.conns = append(l.u.conns, pc)
		l.u.mu.Unlock()
		return pc, nil
	}
}

type ppConnKey struct{}

// startPPUpstream starts a ppUpstream, over TLS (after the PROXY header)
// when withTLS is set; its certificate is then returned.
func startPPUpstream(t *testing.T, withTLS bool) (*ppUpstream, *x509.Certificate) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &ppUpstream{addr: l.Addr().String()}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pc := r.Context().Value(ppConnKey{}).(*ppConn)
		if r.Header.Get("Upgrade") == "echo" {
			c, brw, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			defer pc.markClosed()
			defer c.Close()
			fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\nX-Conn: %d\r\n\r\n", pc.id)
			brw.Flush()
			for {
				line, err := brw.ReadString('\n')
				if err != nil {
					return
				}
				brw.WriteString(line)
				brw.Flush()
			}
		}
		w.Header().Set("X-Conn", strconv.Itoa(pc.id))
		w.Header().Set("X-Client", r.RemoteAddr)
		io.WriteString(w, "ok")
	}))
	srv.Listener.Close()
	srv.Listener = &ppListener{Listener: l, u: u}
	srv.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, ppConnKey{}, asPPConn(c))
	}
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			asPPConn(c).markClosed()
		}
	}
	if withTLS {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return u, srv.Certificate()
}

func asPPConn(c net.Conn) *ppConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	return c.(*ppConn)
}

func (u *ppUpstream) accepted(t *testing.T) []*ppConn {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, err := range u.errs {
		t.Errorf("a connection did not start with a PROXY header: %v", err)
	}
	return append([]*ppConn(nil), u.conns...)
}

// frontend serves h the way the runtime serves a bind: a ClientConn per
// client connection, closed when the connection closes or is hijacked.
type frontend struct {
	addr string
	mu   sync.Mutex
	ccs  map[net.Conn]*ClientConn
	// closes counts the ClientConns closed.
	closes atomic.Int64
}

func startFrontend(t *testing.T, h http.Handler, withClientConn bool) *frontend {
	t.Helper()
	return startFrontendProtocols(t, h, withClientConn, nil)
}

// startFrontendProtocols is startFrontend serving protocols (nil: the
// default, HTTP/1.1).
func startFrontendProtocols(t *testing.T, h http.Handler, withClientConn bool, protocols *http.Protocols) *frontend {
	t.Helper()
	f := &frontend{ccs: map[net.Conn]*ClientConn{}}
	srv := httptest.NewUnstartedServer(h)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener.Close()
	srv.Listener = l
	srv.Config.Protocols = protocols
	if withClientConn {
		srv.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
			cc := &ClientConn{Remote: c.RemoteAddr(), Local: c.LocalAddr()}
			f.mu.Lock()
			f.ccs[c] = cc
			f.mu.Unlock()
			return WithClientConn(ctx, cc)
		}
		srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
			if s != http.StateClosed && s != http.StateHijacked {
				return
			}
			f.mu.Lock()
			cc := f.ccs[c]
			delete(f.ccs, c)
			f.mu.Unlock()
			if cc != nil {
				cc.Close()
				f.closes.Add(1)
			}
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	f.addr = l.Addr().String()
	return f
}

// ppClient is one client connection to a frontend: an HTTP/1.1 client
// limited to one connection, and the local address of that connection.
type ppClient struct {
	c    *http.Client
	mu   sync.Mutex
	port []int // local ports of the connections it opened
}

func newPPClient(t *testing.T) *ppClient {
	return newPPClientProtocols(t, nil)
}

// newPPClientProtocols is newPPClient speaking protocols (nil: HTTP/1.1).
func newPPClientProtocols(t *testing.T, protocols *http.Protocols) *ppClient {
	c := &ppClient{}
	d := &net.Dialer{}
	tr := &http.Transport{
		Proxy:           nil,
		MaxConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := d.DialContext(ctx, network, addr)
			if err == nil {
				c.mu.Lock()
				c.port = append(c.port, conn.LocalAddr().(*net.TCPAddr).Port)
				c.mu.Unlock()
			}
			return conn, err
		},
	}
	tr.Protocols = protocols
	c.c = &http.Client{Transport: tr, Timeout: scaled(10 * time.Second)}
	t.Cleanup(tr.CloseIdleConnections)
	return c
}

// get sends a GET pinned to the server of id by the sticky cookie and
// returns the response's X-Conn and X-Client.
func (c *ppClient) get(t *testing.T, f *frontend, id string) (conn, client string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+f.addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(&http.Cookie{Name: "srv", Value: id})
	resp, err := c.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET to server %s: status %d", id, resp.StatusCode)
	}
	return resp.Header.Get("X-Conn"), resp.Header.Get("X-Client")
}

// localPort is the port of the client's one connection.
func (c *ppClient) localPort(t *testing.T) int {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.port) != 1 {
		t.Fatalf("the client opened %d connections, want 1", len(c.port))
	}
	return c.port[0]
}

// ppBackend is a backend of servers a (send_proxy version) and b (none),
// picked by the sticky cookie srv; observed counts a's passive health
// verdicts.
func ppBackend(t *testing.T, version int, a, b string, opt testOptions) (be *Backend, ma, mb *balance.Member, failed *atomic.Int64) {
	t.Helper()
	failed = new(atomic.Int64)
	ma = &balance.Member{State: balance.NewState(a), Weight: 1, ID: "a"}
	mb = &balance.Member{State: balance.NewState(b), Weight: 1, ID: "b"}
	servers := []*upstream.Server{
		upstream.NewServer(ma, version, func(ok bool) {
			if !ok {
				failed.Add(1)
			}
		}),
		upstream.NewServer(mb, 0, nil),
	}
	opt.StickyCookie = "srv"
	be = opt.backend("app", servers, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(be.CloseIdleConnections)
	return be, ma, mb, failed
}

// eventually waits up to a few seconds for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(scaled(5 * time.Second))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitClosed(t *testing.T, c *ppConn) {
	t.Helper()
	select {
	case <-c.closed:
	case <-time.After(scaled(5 * time.Second)):
		t.Fatalf("upstream connection %d (client %v) is still open", c.id, c.header.SourceAddr)
	}
}

// TestSendProxyPrivateConns: with send_proxy, each client connection gets
// its own connections to the server, each starting with a PROXY header
// naming that client, reused by that client's requests only, and closed
// with the client connection. A server without send_proxy in the same
// backend keeps one shared pool.
func TestSendProxyPrivateConns(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version int
		tls     bool
	}{
		{"v1", 1, false},
		{"v2", 2, false},
		{"v2 then TLS", 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			version := tc.version
			upA, certA := startPPUpstream(t, tc.tls)
			var plainConns atomic.Int64
			upB, certB := startPlain(t, &plainConns, tc.tls)
			var opt testOptions
			if tc.tls {
				roots := x509.NewCertPool()
				roots.AddCert(certA)
				roots.AddCert(certB)
				opt.Upstream.TLS = &tls.Config{RootCAs: roots}
			}
			be, ma, mb, failed := ppBackend(t, version, upA.addr, upB, opt)
			f := startFrontend(t, be, true)

			clients := []*ppClient{newPPClient(t), newPPClient(t)}
			conn := make([]map[string]bool, 2)
			for i := range conn {
				conn[i] = map[string]bool{}
			}
			// Interleaved: a shared pool would hand each client the
			// connection the other one just left idle.
			for range 3 {
				for i, c := range clients {
					id, client := c.get(t, f, "a")
					conn[i][id] = true
					want := net.JoinHostPort("127.0.0.1", strconv.Itoa(c.localPort(t)))
					if client != want {
						t.Errorf("client %d (%s): the server saw the request from %s", i, want, client)
					}
				}
			}

			accepted := upA.accepted(t)
			if len(accepted) != 2 {
				t.Fatalf("the send_proxy server accepted %d connections for 2 clients, want 2", len(accepted))
			}
			for i := range clients {
				if len(conn[i]) != 1 {
					t.Errorf("client %d's 3 requests came on %d connections, want 1", i, len(conn[i]))
				}
			}
			if fmt.Sprint(conn[0]) == fmt.Sprint(conn[1]) {
				t.Errorf("both clients' requests came on connection %v", conn[0])
			}
			for _, pc := range accepted {
				h := pc.header
				if int(h.Version) != version {
					t.Errorf("connection %d: PROXY header v%d, want v%d", pc.id, h.Version, version)
				}
				if h.TransportProtocol != pp.TCPv4 || h.DestinationAddr.String() != f.addr {
					t.Errorf("connection %d: header %v from %v to %v; want TCPv4 to the frontend's %s", pc.id, h.TransportProtocol, h.SourceAddr, h.DestinationAddr, f.addr)
				}
			}
			for i, c := range clients {
				src := net.JoinHostPort("127.0.0.1", strconv.Itoa(c.localPort(t)))
				for id := range conn[i] {
					n, _ := strconv.Atoi(id)
					if got := accepted[n].header.SourceAddr.String(); got != src {
						t.Errorf("client %d (%s) was served on connection %d, whose header names %s", i, src, n, got)
					}
				}
			}

			// The server without send_proxy: one pooled connection for
			// both clients.
			for _, c := range clients {
				c.get(t, f, "b")
			}
			if n := plainConns.Load(); n != 1 {
				t.Errorf("the server without send_proxy accepted %d connections for 2 sequential requests, want 1 (shared pool)", n)
			}

			eventually(t, "no request in flight", func() bool {
				return ma.State.InFlight() == 0 && mb.State.InFlight() == 0
			})
			if n := failed.Load(); n != 0 {
				t.Errorf("the send_proxy server was observed failing %d times", n)
			}

			// Once the clients' connections close, so do their private
			// connections.
			for _, c := range clients {
				c.c.CloseIdleConnections()
			}
			for _, pc := range accepted {
				waitClosed(t, pc)
			}
			eventually(t, "both client connections closed", func() bool { return f.closes.Load() == 2 })
		})
	}
}

// startPlain is an HTTP server without PROXY protocol, over TLS when
// withTLS is set; conns counts the connections it accepted.
func startPlain(t *testing.T, conns *atomic.Int64, withTLS bool) (string, *x509.Certificate) {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener.Close()
	srv.Listener = l
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	if withTLS {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return l.Addr().String(), srv.Certificate()
}

// TestSendProxyHTTP2Client: the requests of an HTTP/2 client connection,
// concurrent, go out on private connections of that client only (as many
// as they need at once), closed with it.
func TestSendProxyHTTP2Client(t *testing.T) {
	upA, _ := startPPUpstream(t, false)
	be, ma, _, _ := ppBackend(t, 1, upA.addr, deadAddr(t), testOptions{})
	h2c := new(http.Protocols)
	h2c.SetUnencryptedHTTP2(true)
	f := startFrontendProtocols(t, be, true, h2c)
	clients := []*ppClient{newPPClientProtocols(t, h2c), newPPClientProtocols(t, h2c)}
	type result struct {
		client     int
		conn, addr string
	}
	results := make(chan result, 2*8)
	var wg sync.WaitGroup
	for i, c := range clients {
		c.get(t, f, "a") // one connection, opened before the burst
		for range 8 {
			wg.Go(func() {
				req, _ := http.NewRequest("GET", "http://"+f.addr+"/", nil)
				req.AddCookie(&http.Cookie{Name: "srv", Value: "a"})
				resp, err := c.c.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.ProtoMajor != 2 {
					t.Errorf("the client spoke %s, want HTTP/2", resp.Proto)
				}
				results <- result{i, resp.Header.Get("X-Conn"), resp.Header.Get("X-Client")}
			})
		}
	}
	wg.Wait()
	close(results)
	accepted := upA.accepted(t)
	perClient := make([]map[string]bool, len(clients))
	for i := range perClient {
		perClient[i] = map[string]bool{}
	}
	for r := range results {
		want := net.JoinHostPort("127.0.0.1", strconv.Itoa(clients[r.client].localPort(t)))
		n, _ := strconv.Atoi(r.conn)
		if r.addr != want || n >= len(accepted) || accepted[n].header.SourceAddr.String() != want {
			t.Errorf("client %d (%s): served on connection %s as %s", r.client, want, r.conn, r.addr)
		}
		perClient[r.client][r.conn] = true
	}
	for id := range perClient[0] {
		if perClient[1][id] {
			t.Errorf("connection %s served both clients", id)
		}
	}
	for _, c := range clients {
		c.c.CloseIdleConnections()
	}
	for _, pc := range accepted {
		waitClosed(t, pc)
	}
	eventually(t, "no request in flight", func() bool { return ma.State.InFlight() == 0 })
}

// TestSendProxyWithoutClientConn: a request without a ClientConn in its
// context gets a new connection of its own, closed with its response.
func TestSendProxyWithoutClientConn(t *testing.T) {
	upA, _ := startPPUpstream(t, false)
	be, ma, _, _ := ppBackend(t, 1, upA.addr, deadAddr(t), testOptions{})
	f := startFrontend(t, be, false)
	c := newPPClient(t)
	for range 2 {
		_, client := c.get(t, f, "a")
		if want := net.JoinHostPort("127.0.0.1", strconv.Itoa(c.localPort(t))); client != want {
			t.Errorf("the server saw the request from %s, want %s", client, want)
		}
	}
	accepted := upA.accepted(t)
	if len(accepted) != 2 {
		t.Fatalf("the server accepted %d connections for 2 requests without ClientConn, want 2", len(accepted))
	}
	for _, pc := range accepted {
		waitClosed(t, pc)
	}
	eventually(t, "no request in flight", func() bool { return ma.State.InFlight() == 0 })
}

// TestSendProxyRetry: a send_proxy server that refuses connections is
// observed failing and the request is retried on the next server.
func TestSendProxyRetry(t *testing.T) {
	up := startCounting(t, func(w http.ResponseWriter, r *http.Request) {})
	be, ma, mb, failed := ppBackend(t, 2, deadAddr(t), up.addr, testOptions{Retries: 1})
	f := startFrontend(t, be, true)
	c := newPPClient(t)
	c.get(t, f, "a") // pinned to a, which is down: served by b
	if n := failed.Load(); n != 1 {
		t.Errorf("the refusing server was observed failing %d times, want 1", n)
	}
	if n := up.hits.Load(); n != 1 {
		t.Errorf("the other server got %d requests, want 1", n)
	}
	eventually(t, "no request in flight", func() bool {
		return ma.State.InFlight() == 0 && mb.State.InFlight() == 0
	})
}

// TestSendProxyUpgrade: a private connection switched to another protocol
// (WebSocket) outlives the Close of its client connection, which the
// server calls when the connection is hijacked for the upgrade, and is
// closed when the upgraded stream ends.
func TestSendProxyUpgrade(t *testing.T) {
	upA, _ := startPPUpstream(t, false)
	be, ma, _, _ := ppBackend(t, 2, upA.addr, deadAddr(t), testOptions{})
	f := startFrontend(t, be, true)
	conn, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(scaled(10 * time.Second)))
	br := bufio.NewReader(conn)
	// A plain request first, so that the client connection has a private
	// connection when the upgrade's goes out.
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: app\r\nCookie: srv=a\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	first := resp.Header.Get("X-Conn")

	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: app\r\nCookie: srv=a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	if resp.Header.Get("X-Conn") != first {
		t.Errorf("the upgrade went out on connection %s, want the client's idle connection %s", resp.Header.Get("X-Conn"), first)
	}
	eventually(t, "the client connection's Close on hijack", func() bool { return f.closes.Load() == 1 })
	for i := range 3 {
		msg := "ping " + strconv.Itoa(i) + "\n"
		io.WriteString(conn, msg)
		got, err := br.ReadString('\n')
		if err != nil || got != msg {
			t.Fatalf("echo after the client connection's Close: %q, %v; want %q", got, err, msg)
		}
	}
	conn.Close()
	for _, pc := range upA.accepted(t) {
		waitClosed(t, pc)
	}
	eventually(t, "no request in flight", func() bool { return ma.State.InFlight() == 0 })
}
