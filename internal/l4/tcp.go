package l4

import (
	"context"
	"errors"
	"fmt"
	"github.com/portcullis/portcullis/internal/accesslog"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/portcullis/portcullis/internal/accept"
	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/metrics"
	"github.com/portcullis/portcullis/internal/proxyproto"
	"github.com/portcullis/portcullis/internal/sni"
	"github.com/portcullis/portcullis/internal/upstream"
)

// TCP proxies the connections of one bind to backend servers as byte
// streams: it is the accept.Handler of a tcp bind, and of an http bind
// with sni routes. For each connection it reads the PROXY header (AcceptProxy),
// reads the TLS ClientHello when a route needs it (without terminating
// TLS), picks the first matching route, connects to a server of its
// backend (retrying others on a failed connect), and relays both
// directions with splice until both have ended.
//
// Passive health checks see connect failures only: a reset or an error
// after the connection is established is not held against the server, as
// in a byte stream it is as likely the client's or the protocol's doing.
// Nor is a connect failure that is the proxy's own (out of descriptors, a
// timeout while the server had answered: see dial.go).
//
// Set the fields before the first ServeTCP and do not change them
// afterwards; without Table every connection is closed.
type TCP struct {
	// Frontend names the frontend in logs.
	Frontend string
	// Table returns the current routes. It is called once per connection,
	// so a reload applies to new connections and never to established
	// ones. A nil func or a nil *Table matches nothing.
	Table func() *Table
	// AcceptProxy reads a PROXY protocol header (v1 or v2) from peers in
	// Trusted, and uses the addresses it carries for routing, hashing,
	// logs and SendProxy. A peer outside Trusted that starts with a PROXY
	// header is refused.
	AcceptProxy bool
	Trusted     proxyproto.Trusted
	// HeaderTimeout bounds the wait for the PROXY header and the TLS
	// ClientHello together, from accept (the bind's proxy_timeout, which
	// the configuration defaults). Zero or negative: no bound.
	HeaderTimeout time.Duration
	// IdleTimeout closes both sides of a relayed connection that carried
	// no byte in either direction for this long (checked every quarter of
	// it, so the close comes up to 1.25 × IdleTimeout after the last
	// byte). The frontend's idle_timeout, which the configuration
	// defaults. Zero or negative: never.
	IdleTimeout time.Duration
	// Log receives the proxy's log lines. Nil: slog.Default().
	Log *slog.Logger
	// ToHTTP, when not nil, receives the TLS connections that no route
	// matched, ClientHello included, for an http.Server to terminate (as
	// a Listener's connections, they keep their count of the Gate until
	// the http.Server closes them). Nil: such connections are closed like
	// any unmatched one.
	ToHTTP *accept.Listener
	// AccessLog returns the access log of the connections accepted now
	// (called once per connection, so that a reload applies to new
	// ones). Nil, or a nil *Logger: none.
	AccessLog func() *accesslog.Logger
	// Events summarizes the proxy's own connect failures, one line per
	// kind and second: the bind's Gate's Events. Nil: a summarizer of its
	// own over Log.
	Events *limit.Events
	// Metrics counts the connections relayed (once routed) and their
	// bytes; nil: not counted.
	Metrics *metrics.Frontend

	initOnce sync.Once
	log      *slog.Logger
	events   *limit.Events   // Events, or one of its own
	ctx      context.Context // ends when Shutdown gives up waiting
	cancel   context.CancelFunc
	conns    connSet
}

func (t *TCP) init() {
	t.initOnce.Do(func() {
		log := t.Log
		if log == nil {
			log = slog.Default()
		}
		t.log = log.With("frontend", t.Frontend)
		if t.Events != nil {
			t.events = t.Events
		} else {
			t.events = limit.NewEvents(log, 0)
		}
		t.ctx, t.cancel = context.WithCancel(context.Background())
	})
}

// headerDeadline is the end of the wait for the PROXY header and the
// ClientHello of a connection accepted now; zero for none.
func (t *TCP) headerDeadline() time.Time {
	if t.HeaderTimeout <= 0 {
		return time.Time{}
	}
	return time.Now().Add(t.HeaderTimeout)
}

// ServeTCP proxies c in a goroutine of its own (accept.Handler). With
// AcceptProxy, c counts against the client its PROXY header names once the
// header is read (accept.ReadProxyHeader).
func (t *TCP) ServeTCP(c *accept.Conn) {
	t.init()
	tc := t.conns.add(c)
	if tc == nil { // shutting down
		c.Close()
		return
	}
	go t.serveConn(tc)
}

// Shutdown waits for the open connections to end, or for ctx to end: then
// it closes those left and returns ctx.Err(). The caller stops the accept
// loops first; connections ServeTCP receives afterwards are closed at
// once. Connections given to ToHTTP are the http.Server's.
func (t *TCP) Shutdown(ctx context.Context) error {
	t.init()
	return t.conns.wait(ctx, t.cancel)
}

// serveConn proxies one accepted connection and closes it.
func (t *TCP) serveConn(tc *tcpConn) {
	forwarded := false
	defer func() {
		if !forwarded {
			tc.ac.Close()
		}
		t.conns.remove(tc)
	}()
	deadline := t.headerDeadline()
	lg := t.startLog(tc)
	if lg != nil {
		defer lg.write()
	}
	client, ok := t.acceptProxy(tc)
	if !ok {
		return
	}
	log := t.log.With("client", client.RemoteAddr().String())
	lg.set(func(e *accesslog.Entry) { e.Client = client.RemoteAddr().String() })

	var table *Table
	if t.Table != nil {
		table = t.Table()
	}
	hello, replay, ok := t.readHello(log, tc, client, table, deadline)
	if !ok {
		return
	}

	if hello != nil {
		lg.set(func(e *accesslog.Entry) { e.SNI = hello.ServerName })
	}
	route := table.Match(hello)
	if route == nil {
		if hello != nil && t.ToHTTP != nil {
			lg = lg.drop() // HTTP logs its requests
		}
		if hello != nil && t.ToHTTP != nil {
			forwarded = t.toHTTP(log, tc, client, replay)
			return
		}
		attrs := []any{"tls", hello != nil}
		if hello != nil {
			attrs = append(attrs, "sni", hello.ServerName, "alpn", hello.ALPN)
		}
		log.Warn("closing connection: no route matches", attrs...)
		return
	}
	log = log.With("backend", route.BackendName)
	tc.ac.Routed()
	t.Metrics.Open(metrics.TCP)
	defer t.Metrics.Closed(metrics.TCP)

	b := route.Backend
	lg.set(func(e *accesslog.Entry) { e.Backend = route.BackendName })
	connectStart := time.Now()
	server, m, err := t.connect(log, tc, b, route.BackendName, client.RemoteAddr())
	if err != nil {
		lg.set(func(e *accesslog.Entry) { e.State = connectState(err) })
		return
	}
	defer b.Release(m)
	log = log.With("server", m.State.Address)
	lg.set(func(e *accesslog.Entry) { e.Server, e.Connect = m.State.Address, time.Since(connectStart) })

	if !t.sendFirst(log, server, b.SendProxy(m), client, replay) {
		server.Close()
		lg.set(func(e *accesslog.Entry) { e.State = accesslog.ServerHeaders })
		return
	}
	lg.set(func(e *accesslog.Entry) { e.BytesIn = int64(len(replay)) })
	t.Metrics.Bytes(metrics.TCP, int64(len(replay)), 0)
	t.relay(log, tc, client, server, lg)
}

// readHello reads the client's TLS ClientHello when the routes or
// ToHTTP need it (nil when the client does not speak TLS), and returns it
// with the bytes read, to replay to the server. It reports false when
// the connection is to be closed (it has logged why).
func (t *TCP) readHello(log *slog.Logger, tc *tcpConn, client net.Conn, table *Table, deadline time.Time) (*sni.Hello, []byte, bool) {
	var hello *sni.Hello
	var replay []byte
	if table.NeedHello() || t.ToHTTP != nil {
		var err error
		client.SetReadDeadline(deadline)
		hello, replay, err = sni.Read(client)
		client.SetReadDeadline(time.Time{})
		if err != nil && !errors.Is(err, sni.ErrNotTLS) {
			if !tc.isClosed() { // else by Shutdown
				t.logHelloError(log, err, len(replay))
			}
			return nil, nil, false
		}
	}
	if pc, ok := client.(*proxyproto.Conn); ok {
		replay = append(replay, pc.TakeBuffered()...)
	}
	return hello, replay, true
}

// sendFirst writes to a new server connection what comes before the
// relayed bytes: the PROXY header of version v (none for 0) for client,
// then replay, the bytes already read from the client. It reports false
// when the connection is to be closed (it has logged why).
func (t *TCP) sendFirst(log *slog.Logger, server net.Conn, v int, client net.Conn, replay []byte) bool {
	if v > 0 {
		h, err := proxyproto.Header(v, client.RemoteAddr(), client.LocalAddr())
		if err != nil {
			log.Warn("closing connection: cannot build the PROXY header for the server", "error", err)
			return false
		}
		replay = append(h, replay...)
	}
	if len(replay) > 0 {
		if _, err := server.Write(replay); err != nil {
			log.Info("closing connection: writing to the server failed", "error", err)
			return false
		}
	}
	return true
}

// acceptProxy reads the PROXY header of a connection (AcceptProxy) and
// counts the connection against the client the header names. It returns
// the connection to read from, or false when the connection is to be
// closed (it has logged why).
func (t *TCP) acceptProxy(tc *tcpConn) (net.Conn, bool) {
	if !t.AcceptProxy {
		return tc.client, true
	}
	pc, err := accept.ReadProxyHeader(tc.ac, t.Trusted, t.HeaderTimeout)
	switch {
	case errors.Is(err, accept.ErrClientLimit):
		return nil, false // summarized by the Gate
	case err != nil:
		if !tc.isClosed() { // else by Shutdown
			t.log.Warn("closing connection: no valid PROXY header from a trusted proxy", "peer", tc.client.RemoteAddr().String(), "error", err)
		}
		return nil, false
	}
	return pc, true
}

// relay relays client (as accepted: tc.client or a *proxyproto.Conn over
// it) and server until both directions end, and logs how it ended.
func (t *TCP) relay(log *slog.Logger, tc *tcpConn, client, server net.Conn, lg *connLog) {
	start := time.Now()
	p := newPipe(client, tc.client, server, t.IdleTimeout)
	reason, err := p.run()
	t.Metrics.Bytes(metrics.TCP, p.in.Load(), p.out.Load())
	if tc.isClosed() {
		reason, err = endShutdown, nil
	}
	lg.set(func(e *accesslog.Entry) {
		e.BytesIn += p.in.Load()
		e.BytesOut = p.out.Load()
		e.State = relayState(reason, err, server)
	})
	switch reason {
	case endRefused:
		log.Warn("closing connection: PROXY header from an untrusted peer", "error", err)
	case endError:
		log.Debug("connection closed", "reason", reason, "duration", time.Since(start), "error", err)
	default:
		log.Debug("connection closed", "reason", reason, "duration", time.Since(start))
	}
}

// logHelloError says why the ClientHello could not be read: one line per
// connection, warn for bytes that are not a valid ClientHello.
func (t *TCP) logHelloError(log *slog.Logger, err error, n int) {
	switch {
	case errors.Is(err, proxyproto.ErrUntrustedHeader):
		log.Warn("closing connection: PROXY header from an untrusted peer", "error", err)
	case errors.Is(err, os.ErrDeadlineExceeded):
		log.Info("closing connection: no complete TLS ClientHello within the header timeout", "timeout", t.HeaderTimeout, "bytes", n)
	case errors.Is(err, io.EOF) && n == 0:
		log.Debug("client closed the connection before sending anything")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		log.Info("closing connection: the client closed it in the middle of its TLS ClientHello", "bytes", n)
	case errors.As(err, new(*sni.Error)):
		log.Warn("closing connection: malformed TLS ClientHello", "bytes", n, "error", err)
	default:
		log.Info("closing connection: reading the TLS ClientHello failed", "bytes", n, "error", err)
	}
}

// toHTTP gives the connection to ToHTTP, with its count of the Gate,
// which closing it releases. It reports whether ToHTTP took it.
func (t *TCP) toHTTP(log *slog.Logger, tc *tcpConn, client net.Conn, replay []byte) bool {
	tc.ac.Conn = &replayConn{Conn: tc.client, prefix: replay, remote: client.RemoteAddr(), local: client.LocalAddr()}
	if !t.ToHTTP.Forward(t.ctx, tc.ac) {
		log.Info("closing connection: the TLS listener for names without a passthrough route is closed")
		return false
	}
	return true
}

// connect acquires a server of b (named backend) and connects to it,
// trying up to b.Retries() other servers after failed connects. On
// success the server counts the connection in flight until the caller
// calls b.Release(m). On failure it has logged why. A failure that is the
// proxy's own (ownFailure) is summarized in t.events instead of being held
// against the server, and ends the attempts unless it is retryable.
func (t *TCP) connect(log *slog.Logger, tc *tcpConn, b *upstream.Backend, backend string, clientAddr net.Addr) (net.Conn, *balance.Member, error) {
	var hash uint64
	if b.HashSource() {
		hash = balance.HashString(clientIP(clientAddr))
	}
	var tried []*balance.Member
	var lastErr error
	var lastServer string
	for attempt := 1; ; attempt++ {
		m, err := b.Acquire(t.ctx, hash, tried)
		if err != nil {
			attrs := []any{"attempts", attempt - 1, "error", err}
			if lastErr != nil {
				attrs = append(attrs, "server", lastServer, "connect_error", lastErr)
			}
			switch {
			case t.ctx.Err() != nil:
				log.Info("closing connection: shutting down", attrs...)
			case lastErr != nil && ownFailure(lastErr):
				// No other server left after the proxy's own failure
				// (EADDRNOTAVAIL): summarized in t.events.
				log.Debug("closing connection: no server available", attrs...)
			default:
				log.Warn("closing connection: no server available", attrs...)
			}
			return nil, nil, err
		}
		if attempt > 1 {
			level := slog.LevelInfo
			if ownFailure(lastErr) {
				level = slog.LevelDebug // summarized in t.events
			}
			log.Log(t.ctx, level, "retrying on another server", "failed", lastServer, "server", m.State.Address, "attempt", attempt, "error", lastErr)
		}
		sm := b.Server(m).Metrics()
		sm.Request(attempt > 1)
		s, err := dialTCP(t.ctx, m.State.Address, b.ConnectTimeout())
		if err == nil {
			b.Observe(m, true)
			if !tc.setServer(s) { // closed by Shutdown meanwhile
				s.Close()
				b.Release(m)
				return nil, nil, net.ErrClosed
			}
			return s, m, nil
		}
		if t.ctx.Err() != nil {
			b.Release(m)
			log.Info("closing connection: shutting down", "server", m.State.Address)
			return nil, nil, err
		}
		own := ownFailure(err)
		if own {
			t.noteOwnFailure(backend, err)
		} else {
			b.Observe(m, false)
			sm.Failure(connectCause(err))
		}
		b.Release(m)
		tried = append(tried, m)
		lastErr, lastServer = err, m.State.Address
		if attempt > b.Retries() || !retryable(err) {
			level := slog.LevelWarn
			if own {
				level = slog.LevelDebug // summarized in t.events
			}
			log.Log(t.ctx, level, "closing connection: cannot connect to a server", "server", lastServer, "attempts", attempt, "error", err)
			return nil, nil, fmt.Errorf("connect to %s: %w", lastServer, err)
		}
	}
}

// noteOwnFailure summarizes a connect failure that is the proxy's own.
func (t *TCP) noteOwnFailure(backend string, err error) {
	msg := "connect to a server timed out on the proxy's side (the server had answered, or was never asked): the proxy is overloaded; not held against the server"
	if limit.OutOfResources(err) {
		msg = "cannot connect to a server: the proxy is out of descriptors, memory or local ports; not held against the server. Raise the open-files limit (LimitNOFILE=, ulimit -n) or lower max_conns; for local ports, widen net.ipv4.ip_local_port_range"
	}
	t.events.Note(msg, err, "frontend", t.Frontend, "backend", backend)
}

// clientIP is the client's address as hash balancing hashes it, the same
// text as for HTTP requests: the IP without port, IPv4-mapped addresses
// as IPv4.
func clientIP(a net.Addr) string {
	s := a.String()
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		host = s
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	return ip.Unmap().String()
}
