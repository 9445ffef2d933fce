package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"sync"
	"time"

	"github.com/portcullis/portcullis/internal/proxyproto"
	"github.com/portcullis/portcullis/internal/upstream"
)

// ClientConn is one client connection as the proxy sees it: its addresses,
// and the private connections it owns toward servers with send_proxy.
//
// A connection that starts with a PROXY header names one client; reusing it
// for another client's request would attribute that request to the wrong
// client. So, as HAProxy does with send-proxy on HTTP backends (it marks
// such connections private), connections to a server with SendProxy are
// opened for one client connection, reused only by its own requests
// (keep-alive), and closed with it. Servers without SendProxy use the
// backend's shared pool whatever the ClientConn.
//
// The server that accepts client connections makes one ClientConn per
// connection, puts it in the connection's context with WithClientConn,
// and calls Close once the connection is gone:
//
//   - HTTP/1.1 and HTTP/2 (net/http): in ConnContext, make a ClientConn with
//     the conn's RemoteAddr and LocalAddr and remember it by conn; in
//     ConnState, Close it on StateClosed and on StateHijacked.
//   - HTTP/3 (http3.Server): in ConnContext, make it with the QUIC
//     connection's addresses; the context ConnContext receives ends with
//     the connection, so context.AfterFunc(ctx, cc.Close) closes it.
//
// The addresses are those the client connection reports: with accept_proxy,
// the ones of the PROXY header it received.
type ClientConn struct {
	// Remote is the client's address, the source of the PROXY headers
	// sent for it. A UDP address (HTTP/3) is sent as TCP, since the
	// connection to the server is a stream, as HAProxy does. An address
	// that is neither TCP nor UDP (unix) gives the header of a connection
	// with no address to report (proxyproto.Header).
	Remote net.Addr
	// Local is the address the client connected to, the destination of
	// the PROXY headers.
	Local net.Addr

	mu         sync.Mutex
	closed     bool
	transports map[*upstream.Server]*http.Transport // one per send_proxy server used
	conns      map[*privateConn]struct{}            // open, not yet closed by their transport
}

type clientConnKey struct{}

// WithClientConn returns ctx carrying c, for the requests of the client
// connection c describes (http.Server.ConnContext, http3.Server.ConnContext).
func WithClientConn(ctx context.Context, c *ClientConn) context.Context {
	return context.WithValue(ctx, clientConnKey{}, c)
}

// ForConn returns ctx carrying what the proxy reads for the requests of
// one client connection, whatever its protocol: its guard g and, when
// sendProxy is set (a server of the running configuration has
// send_proxy), a ClientConn naming remote and local. It returns that
// ClientConn (nil without sendProxy) for the server to Close with the
// connection.
func ForConn(ctx context.Context, g *ConnGuard, remote, local net.Addr, sendProxy bool) (context.Context, *ClientConn) {
	ctx = WithConnGuard(ctx, g)
	if !sendProxy {
		return ctx, nil
	}
	cc := &ClientConn{Remote: remote, Local: local}
	return WithClientConn(ctx, cc), cc
}

// clientConnFrom returns the ClientConn of ctx, or nil.
func clientConnFrom(ctx context.Context) *ClientConn {
	c, _ := ctx.Value(clientConnKey{}).(*ClientConn)
	return c
}

// Close closes the client connection's private connections to servers,
// idle or in use, except those carrying an upgraded protocol (WebSocket):
// they end with their own stream. A request of c that is still running
// fails, and a later one fails at once. Close may be called more than once.
func (c *ClientConn) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	transports := c.transports
	c.transports = nil
	var conns []*privateConn
	for pc := range c.conns {
		if !pc.detached {
			conns = append(conns, pc)
			delete(c.conns, pc)
		}
	}
	c.mu.Unlock()
	for _, t := range transports {
		t.CloseIdleConnections()
	}
	for _, pc := range conns {
		pc.Conn.Close()
	}
}

// errClientClosed is a request of a client connection that is closed.
var errClientClosed = errors.New("the client connection is closed")

// clientConnError is a failure on the client's side of a private
// connection (the client connection is closed, or its addresses are
// missing): it says nothing about the server, so it neither counts for
// passive health nor is retried on another server.
type clientConnError struct{ err error }

func (e *clientConnError) Error() string { return e.err.Error() }
func (e *clientConnError) Unwrap() error { return e.err }

// transport returns the transport of c's private connections to srv,
// made on first use: the backend's upstream settings, with every new
// connection starting with srv's PROXY header for c.
func (c *ClientConn) transport(b *Backend, srv *upstream.Server) (*http.Transport, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, &clientConnError{errClientClosed}
	}
	if t := c.transports[srv]; t != nil {
		return t, nil
	}
	hdr, err := proxyproto.Header(srv.SendProxy(), streamAddr(c.Remote), streamAddr(c.Local))
	if err != nil {
		return nil, &clientConnError{fmt.Errorf("send_proxy: %w", err)}
	}
	timeout := b.up.ConnectTimeout()
	t := newTransport(b.upstream, timeout, func(conn net.Conn) (net.Conn, error) {
		return c.start(conn, hdr, timeout)
	})
	if c.transports == nil {
		c.transports = make(map[*upstream.Server]*http.Transport)
	}
	c.transports[srv] = t
	return t, nil
}

// start makes conn, just connected, one of c's private connections and
// sends hdr on it, within timeout.
func (c *ClientConn) start(conn net.Conn, hdr []byte, timeout time.Duration) (net.Conn, error) {
	pc := &privateConn{Conn: conn, owner: c}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		conn.Close()
		return nil, &clientConnError{errClientClosed}
	}
	if c.conns == nil {
		c.conns = make(map[*privateConn]struct{})
	}
	c.conns[pc] = struct{}{}
	c.mu.Unlock()
	if timeout > 0 {
		conn.SetWriteDeadline(time.Now().Add(timeout))
	}
	if _, err := conn.Write(hdr); err != nil {
		pc.Close()
		if c.isClosed() {
			return nil, &clientConnError{errClientClosed}
		}
		return nil, &dialError{err: fmt.Errorf("sending the PROXY header: %w", err)}
	}
	conn.SetWriteDeadline(time.Time{})
	return pc, nil
}

func (c *ClientConn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// detach leaves conn, a private connection now carrying an upgraded
// protocol, out of Close: it ends with the upgraded stream.
func (c *ClientConn) detach(conn net.Conn) {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	pc, ok := conn.(*privateConn)
	if !ok || pc.owner != c {
		return
	}
	c.mu.Lock()
	pc.detached = true
	c.mu.Unlock()
}

// streamAddr returns a UDP address as the TCP address with the same IP and
// port, and any other address as it is.
func streamAddr(a net.Addr) net.Addr {
	if u, ok := a.(*net.UDPAddr); ok && u != nil {
		return &net.TCPAddr{IP: u.IP, Port: u.Port, Zone: u.Zone}
	}
	return a
}

// privateConn is a connection to a server that belongs to one client
// connection.
type privateConn struct {
	net.Conn
	owner    *ClientConn
	detached bool // carries an upgraded protocol; guarded by owner.mu
}

func (pc *privateConn) Close() error {
	pc.owner.mu.Lock()
	delete(pc.owner.conns, pc)
	pc.owner.mu.Unlock()
	return pc.Conn.Close()
}

// privateAttempt is one attempt at a server with send_proxy, over the
// private connections of the request's client connection.
type privateAttempt struct {
	cc *ClientConn
	// own is set when cc was made for this request alone, the request
	// having no ClientConn: its connection is closed with the response.
	own  bool
	conn net.Conn // the connection the request went out on
}

// private prepares an attempt of out at srv, a server with send_proxy: the
// transport of the private connections of the request's client connection,
// and out traced to learn the connection it goes out on.
//
// A request without a ClientConn (the server did not call WithClientConn)
// gets a ClientConn of its own from its RemoteAddr and
// http.LocalAddrContextKey, closed with its response: a new connection per
// request, never a shared one.
func (b *Backend) private(out *http.Request, srv *upstream.Server) (*http.Transport, *http.Request, *privateAttempt, error) {
	ctx := out.Context()
	a := &privateAttempt{cc: clientConnFrom(ctx)}
	if a.cc == nil {
		cc, err := requestClientConn(out)
		if err != nil {
			return nil, nil, nil, err
		}
		a.cc, a.own = cc, true
		if !b.noClientConn.Swap(true) {
			b.log.Warn("a request to a server with send_proxy has no client connection: each such request opens a new connection", "server", srv.Address())
		}
	}
	t, err := a.cc.transport(b, srv)
	if err != nil {
		a.done()
		return nil, nil, nil, err
	}
	out = out.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: a.gotConn}))
	return t, out, a, nil
}

func (a *privateAttempt) gotConn(info httptrace.GotConnInfo) { a.conn = info.Conn }

// upgraded keeps the attempt's connection, now carrying an upgraded
// protocol, open until the upgraded stream ends.
func (a *privateAttempt) upgraded() {
	if a.conn != nil {
		a.cc.detach(a.conn)
	}
}

// done ends the attempt's own ClientConn, if it has one.
func (a *privateAttempt) done() {
	if a.own {
		a.cc.Close()
	}
}

// requestClientConn is a ClientConn made from a request's addresses.
func requestClientConn(r *http.Request) (*ClientConn, error) {
	remote, err := netip.ParseAddrPort(r.RemoteAddr)
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if err != nil || local == nil {
		return nil, &clientConnError{fmt.Errorf("send_proxy: the request carries no client connection addresses (remote %q, local %v)", r.RemoteAddr, local)}
	}
	return &ClientConn{Remote: net.TCPAddrFromAddrPort(remote), Local: local}, nil
}
