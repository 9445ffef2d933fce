package runtime

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis/portcullis/internal/l4"
	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/proxy"
)

// tcpUnit is the TCP socket of a bind and the servers on it: an
// http.Server (http binds), an l4.TCP (tcp binds, and http binds with sni
// routes), or both, with the layer-4 side accepting first. The servers
// accept on a duplicate of the socket (net.FileListener), so that a
// replacement can accept on another duplicate of the same socket while
// they drain: the socket is never unbound.
type tcpUnit struct {
	s     *serving
	us    atomic.Pointer[unitSpec]
	socks socketSet
	// cur is the bind the servers serve: the new graph's after a reload
	// that keeps the unit, the old one while a replaced unit drains.
	cur atomic.Pointer[Bind]

	ln   net.Listener // the servers' duplicate of the socket
	tcp  *l4.TCP      // nil without a layer-4 side
	rest net.Listener // what the http.Server accepts on when it is not ln
	http *http.Server // nil for tcp frontends
	// served is closed when the l4.TCP's accept loop has returned: every
	// connection it accepted is then tracked by its Shutdown.
	served chan struct{}
	// stopping is set once the unit stops accepting: the servers'
	// accept loops end then, which is no failure.
	stopping atomic.Bool
	// fresh counts the http.Server's connections that have not sent a
	// request yet (in StateNew), for settle; freshConns holds them.
	fresh      atomic.Int64
	freshConns sync.Map // net.Conn → struct{}
	// guards are the http.Server's connections' guards, by connection.
	guards sync.Map // net.Conn → *proxy.ConnGuard
	// tunnels are the upgraded connections (WebSocket) of the
	// http.Server, which no longer tracks them: drain ends them, close
	// cuts them.
	tunnels proxy.Tunnels
}

// startTCP starts the servers of a "tcp" unit on sock.
func (s *serving) startTCP(us unitSpec, sock *listen.Socket) (*tcpUnit, error) {
	b := us.bind
	ln, err := net.FileListener(sock.File)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.TCP, err)
	}
	u := &tcpUnit{s: s, ln: &onceCloseListener{Listener: ln}}
	u.us.Store(&us)
	u.socks.list = []*listen.Socket{sock}
	u.cur.Store(b)
	rest := u.ln
	if b.L4 != nil {
		rest = u.serveL4(b)
	}
	if b.Handler != nil {
		u.serveHTTP(b, rest)
	}
	return u, nil
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

// serveL4 starts the layer-4 side of a bind and returns the listener of
// the connections it leaves to the bind's http.Server: the TLS connections
// no sni route takes, or every connection once its PROXY header is read
// (accept_proxy without sni routes). Nil for a tcp frontend.
func (u *tcpUnit) serveL4(b *Bind) net.Listener {
	log := u.s.log.With("frontend", b.TCP.Frontend, "address", b.TCP.Address)
	if b.Handler != nil && !b.L4.Table.NeedHello() {
		// Plain HTTP (or TLS without passthrough) behind PROXY headers:
		// every connection goes to the http.Server once its header is read.
		u.rest = newProxyListener(u.ln, b.L4, b.Gate, log)
		return u.rest
	}
	u.tcp = &l4.TCP{
		Frontend:      b.TCP.Frontend,
		Table:         func() *l4.Table { return u.cur.Load().L4.Table },
		AcceptProxy:   b.L4.AcceptProxy,
		Trusted:       b.L4.Trusted,
		HeaderTimeout: b.L4.HeaderTimeout,
		IdleTimeout:   b.L4.IdleTimeout,
		Log:           u.s.log,
		Gate:          b.L4.gate(b.Gate),
	}
	var rest net.Listener
	if b.Handler != nil {
		h := l4.NewHandoff(u.ln.Addr())
		u.tcp.Terminate = h
		rest = h
		u.rest = h
	}
	u.served = make(chan struct{})
	// The http.Server closes rest (Shutdown, Close): connections the
	// layer-4 side accepted before the unit stopped accepting are still
	// handed off.
	go func() {
		defer close(u.served)
		if err := u.tcp.Serve(u.ln); err != nil {
			u.fail(fmt.Errorf("%s: %w", b.TCP, err))
		}
	}()
	return rest
}

// serveHTTP starts the bind's http.Server on ln: HTTP/1.1 and h2c, or
// HTTPS with HTTP/1.1 and HTTP/2.
func (u *tcpUnit) serveHTTP(b *Bind, ln net.Listener) {
	s := u.s
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	var tlsConf *tls.Config
	if b.TLS != nil {
		protocols.SetHTTP2(true)
		tlsConf = tlsConfig(&u.cur)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	if u.tcp == nil && b.Gate != nil {
		// Without a layer-4 side, the connections are counted here; the
		// layer-4 side counts those it hands over.
		ln = b.Gate.Listener(ln)
	}
	l := b.Limits
	u.http = &http.Server{
		Handler:           handler(&u.cur),
		TLSConfig:         tlsConf,
		Protocols:         protocols,
		ReadHeaderTimeout: l.headerTimeout,
		IdleTimeout:       l.idleTimeout,
		MaxHeaderBytes:    l.maxHeaderBytes,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: l.h2MaxStreams,
			CountError:           h2Errors(b),
		},
		ErrorLog: slog.NewLogLogger(s.log.With("frontend", b.TCP.Frontend, "address", b.TCP.Address).Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			ctx = proxy.WithTunnels(ctx, &u.tunnels)
			g := newConnGuard(b, nil)
			u.guards.Store(c, g)
			ctx = proxy.WithConnGuard(ctx, g)
			if !s.graph.Load().sendProxy {
				return ctx
			}
			cc := &proxy.ClientConn{Remote: c.RemoteAddr(), Local: c.LocalAddr()}
			s.clients.Store(c, cc)
			return proxy.WithClientConn(ctx, cc)
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateNew {
				u.freshConns.Store(c, struct{}{})
				u.fresh.Add(1)
			} else if _, ok := u.freshConns.LoadAndDelete(c); ok {
				u.fresh.Add(-1)
			}
			if st == http.StateClosed || st == http.StateHijacked {
				if cc, ok := s.clients.LoadAndDelete(c); ok {
					cc.(*proxy.ClientConn).Close()
				}
				if g, ok := u.guards.LoadAndDelete(c); ok && st == http.StateClosed {
					noteHeadLimit(c, g.(*proxy.ConnGuard), b)
				}
			}
		},
	}
	srv := u.http
	go func() {
		var err error
		if tlsConf != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			u.fail(fmt.Errorf("%s: %w", b.TCP, err))
		}
	}()
}

// stopAccepting closes the socket (unless a replacement took it) and the
// servers' duplicate: the kernel refuses new connections once no
// descriptor of the socket is left. Connections accepted before still
// reach the http.Server (rest stays open until drain or close).
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
// routed by the layer-4 side (a PROXY header, a ClientHello, handed to the
// http.Server) and with their first request read, since net/http's
// Shutdown closes a connection whose first request arrives after it began,
// unanswered. Keep-alive is turned off first, so that idle connections
// close and busy ones close after their response: their clients go on
// with the new servers. It returns when no such connection is left (seen
// twice in a row, to cover a connection between two counts), after
// settleMax, or when ctx ends.
func (u *tcpUnit) settle(ctx context.Context) {
	if u.http != nil {
		u.http.SetKeepAlivesEnabled(false)
	}
	ctx, cancel := context.WithTimeout(ctx, settleMax)
	defer cancel()
	if u.served != nil {
		select {
		case <-u.served:
		case <-ctx.Done():
			return
		}
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
	n := int(u.fresh.Load())
	if u.tcp != nil {
		n += u.tcp.Routing()
	}
	if p, ok := u.rest.(*proxyListener); ok {
		n += p.pending()
	}
	return n
}

// drain sends GOAWAY on HTTP/2 connections, closes idle HTTP/1.1 ones,
// and waits for in-flight requests and relayed connections until ctx
// ends; relayed connections left then are closed, HTTP ones by close.
func (u *tcpUnit) drain(ctx context.Context) error {
	var wg sync.WaitGroup
	var errL4, errHTTP error
	if u.tcp != nil {
		wg.Go(func() {
			// A connection the accept loop has just accepted is not
			// tracked yet, and Shutdown would close it: wait for the
			// loop to return (stopAccepting closed its listener).
			select {
			case <-u.served:
			case <-ctx.Done():
			}
			errL4 = u.tcp.Shutdown(ctx)
		})
	}
	if u.http != nil {
		wg.Go(func() {
			errHTTP = u.http.Shutdown(ctx)
			if err := u.tunnels.Drain(ctx); err != nil && errHTTP == nil {
				errHTTP = err
			}
		})
	}
	wg.Wait()
	return errors.Join(errL4, errHTTP)
}

func (u *tcpUnit) close() {
	u.stopAccepting()
	if u.rest != nil {
		u.rest.Close()
	}
	if u.http != nil {
		u.http.Close()
		// Drain with an ended context cuts every tunnel at once.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		u.tunnels.Drain(ctx)
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
func handler(cur *atomic.Pointer[Bind]) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cur.Load().Handler.ServeHTTP(w, r)
	})
}

// tlsConfig hands each new TLS handshake the certificates of the bind cur
// holds, so that a reload takes effect for new connections.
func tlsConfig(cur *atomic.Pointer[Bind]) *tls.Config {
	return &tls.Config{
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return cur.Load().TLS, nil
		},
	}
}

// onceCloseListener makes Close idempotent: the unit closes the listener
// to stop accepting at once, and http.Server.Shutdown closes it again.
type onceCloseListener struct {
	net.Listener
	once sync.Once
	err  error
}

func (l *onceCloseListener) Close() error {
	l.once.Do(func() { l.err = l.Listener.Close() })
	return l.err
}
