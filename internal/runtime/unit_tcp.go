package runtime

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/portcullis/portcullis/internal/accesslog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis/portcullis/internal/accept"
	"github.com/portcullis/portcullis/internal/compile"
	"github.com/portcullis/portcullis/internal/httpserver"
	"github.com/portcullis/portcullis/internal/l4"
	"github.com/portcullis/portcullis/internal/listen"
)

// tcpUnit is the TCP socket of a bind and the servers on it: one accept
// loop (accept.Server) that gives each connection to the bind's handler,
// and behind it an httpserver.Server (http binds), an l4.TCP (tcp binds,
// and http binds with sni routes), or both. The loop accepts on a
// duplicate of the socket (net.FileListener), so that a replacement can
// accept on another duplicate of the same socket while this one drains:
// the socket is never unbound.
type tcpUnit struct {
	s     *serving
	us    atomic.Pointer[unitSpec]
	socks socketSet
	// cur is the bind the servers serve: the new graph's after a reload
	// that keeps the unit, the old one while a replaced unit drains.
	cur atomic.Pointer[compile.Bind]

	ln   net.Listener   // the loop's duplicate of the socket
	loop *accept.Server // the accept loop on ln
	tcp  *l4.TCP        // nil without a layer-4 side
	// toHTTP is what http accepts on; nil for tcp frontends.
	toHTTP *accept.Listener
	http   *httpserver.Server // nil for tcp frontends
	// served is closed when the accept loop has returned: every
	// connection it accepted is then in the hands of a step after it.
	served chan struct{}
	// stopping is set once the unit stops accepting: the servers'
	// accept loops end then, which is no failure.
	stopping atomic.Bool
}

// startTCP starts the servers of a "tcp" unit on sock.
func (s *serving) startTCP(us unitSpec, sock *listen.Socket) (*tcpUnit, error) {
	b := us.bind
	ln, err := net.FileListener(sock.File)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.TCP, err)
	}
	u := &tcpUnit{s: s, ln: ln, served: make(chan struct{})}
	u.us.Store(&us)
	u.socks.list = []*listen.Socket{sock}
	u.cur.Store(b)
	if b.Handler != nil {
		u.serveHTTP(b)
	}
	u.loop = &accept.Server{Handler: u.handler(b), Gate: b.Gate, Log: s.log}
	if b.L4 != nil {
		u.loop.Gate = b.L4.TrustedGate(b.Gate)
	}
	go func() {
		defer close(u.served)
		if err := u.loop.Serve(u.ln); err != nil {
			u.fail(fmt.Errorf("%s: %w", b.TCP, err))
		}
	}()
	return u, nil
}

// handler returns the first step after the accept loop: the layer-4
// proxy (which leaves to HTTP the TLS connections no sni route takes),
// the PROXY header (accept_proxy without sni routes), or HTTP at once.
func (u *tcpUnit) handler(b *compile.Bind) accept.Handler {
	switch {
	case b.L4 != nil && (b.Handler == nil || b.L4.Table.NeedHello()):
		u.tcp = &l4.TCP{
			Frontend:      b.TCP.Frontend,
			Table:         func() *l4.Table { return u.cur.Load().L4.Table },
			AcceptProxy:   b.L4.AcceptProxy,
			Trusted:       b.L4.Trusted,
			HeaderTimeout: b.L4.HeaderTimeout,
			IdleTimeout:   b.L4.IdleTimeout,
			Log:           u.s.log,
			AccessLog:     u.accessLog,
			ToHTTP:        u.toHTTP,
			Metrics:       u.s.metrics().Frontend(b.TCP.Frontend),
		}
		if b.Gate != nil {
			u.tcp.Events = b.Gate.Events
		}
		return u.tcp
	case b.L4 != nil:
		log := u.s.log.With("frontend", b.TCP.Frontend, "address", b.TCP.Address)
		return &accept.ProxyHeader{Trusted: b.L4.Trusted, Timeout: b.L4.HeaderTimeout, Log: log, Next: u.toHTTP}
	}
	return u.toHTTP
}

// accessLog is the access log of the connections the current bind
// relays; nil without one.
func (u *tcpUnit) accessLog() *accesslog.Logger {
	if l4 := u.cur.Load().L4; l4 != nil {
		return l4.Log
	}
	return nil
}

func (u *tcpUnit) spec() unitSpec            { return *u.us.Load() }
func (u *tcpUnit) sockets() []*listen.Socket { return u.socks.sockets() }
func (u *tcpUnit) release()                  { u.socks.release() }

func (u *tcpUnit) update(us unitSpec) {
	u.us.Store(&us)
	u.socks.setSpecs(us.specs)
	u.cur.Store(us.bind)
}

// fail reports a server that stopped serving by itself.
func (u *tcpUnit) fail(err error) {
	if !u.stopping.Load() {
		u.s.fail(err)
	}
}

// serveHTTP starts the bind's HTTP server on the listener the accept
// path feeds (toHTTP).
func (u *tcpUnit) serveHTTP(b *compile.Bind) {
	s := u.s
	c := httpserver.Config{
		Frontend:  b.TCP.Frontend,
		Address:   b.TCP.Address,
		Handler:   handler(&u.cur),
		Limits:    b.Limits,
		SendProxy: func() bool { return s.graph.Load().SendProxy },
		Metrics:   s.metrics().Frontend(b.TCP.Frontend),
		Log:       s.log,
	}
	if b.TLS != nil {
		c.TLS = tlsConfig(&u.cur)
	}
	if b.Gate != nil {
		c.Events = b.Gate.Events
	}
	u.toHTTP = accept.NewListener(u.ln.Addr())
	u.http = httpserver.New(c)
	go func() {
		if err := u.http.Serve(u.toHTTP); !httpserver.Closed(err) {
			u.fail(fmt.Errorf("%s: %w", b.TCP, err))
		}
	}()
}

// stopAccepting closes the socket (unless a replacement took it) and the
// loop's duplicate: the kernel refuses new connections once no descriptor
// of the socket is left. Connections accepted before still reach the
// HTTP server (toHTTP stays open until drain or close).
func (u *tcpUnit) stopAccepting() {
	u.stopping.Store(true)
	u.socks.closeFiles()
	u.ln.Close()
}

// settleMax bounds settle: a client that has just connected sends its
// PROXY header, ClientHello or first request at once.
const settleMax = time.Second

// settle lets the connections accepted just before a reload stopped the
// unit reach the point where drain serves them instead of closing them:
// routed by the accept path (a PROXY header, a ClientHello, taken by the
// HTTP server) and with their first request read, since net/http's
// Shutdown closes a connection whose first request arrives after it began,
// unanswered. Keep-alive is turned off first, so that idle connections
// close and busy ones close after their response: their clients go on
// with the new servers. It returns when no such connection is left (seen
// twice in a row, to cover a connection between two counts), after
// settleMax, or when ctx ends.
func (u *tcpUnit) settle(ctx context.Context) {
	if u.http != nil {
		u.http.StopKeepAlives()
	}
	ctx, cancel := context.WithTimeout(ctx, settleMax)
	defer cancel()
	select {
	case <-u.served:
	case <-ctx.Done():
		return
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for zero := 0; zero < 2; {
		if u.unsettled() == 0 {
			zero++
		} else {
			zero = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// unsettled counts the connections settle waits for.
func (u *tcpUnit) unsettled() int {
	n := u.loop.Pending()
	if u.http != nil {
		n += u.http.Fresh()
	}
	return n
}

// drain sends GOAWAY on HTTP/2 connections, closes idle HTTP/1.1 ones,
// and waits for in-flight requests, upgraded and relayed connections
// until ctx ends; relayed connections left then are closed, HTTP ones by
// close.
func (u *tcpUnit) drain(ctx context.Context) error {
	// A connection the accept loop has just accepted may not be in the
	// hands of a server yet, and their Shutdown would close it: wait for
	// the loop to return (stopAccepting closed its listener).
	select {
	case <-u.served:
	case <-ctx.Done():
	}
	var wg sync.WaitGroup
	var errL4, errHTTP error
	if u.tcp != nil {
		wg.Go(func() { errL4 = u.tcp.Shutdown(ctx) })
	}
	if u.http != nil {
		wg.Go(func() {
			errHTTP = u.http.Shutdown(ctx)
			u.toHTTP.Close()
		})
	}
	wg.Wait()
	return errors.Join(errL4, errHTTP)
}

func (u *tcpUnit) close() {
	u.stopAccepting()
	if u.http != nil {
		u.toHTTP.Close()
		u.http.Close()
	}
	if u.tcp != nil {
		// Shutdown with an ended context closes every connection at once.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		go u.tcp.Shutdown(ctx)
	}
}

// handler serves a request with the handler of the bind cur holds when
// the request arrives.
func handler(cur *atomic.Pointer[compile.Bind]) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cur.Load().Handler.ServeHTTP(w, r)
	})
}

// tlsConfig hands each new TLS handshake the certificates of the bind cur
// holds, so that a reload takes effect for new connections.
func tlsConfig(cur *atomic.Pointer[compile.Bind]) *tls.Config {
	return &tls.Config{
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return cur.Load().TLS, nil
		},
	}
}
