package runtime

import (
	"context"
	"net"
	"sync/atomic"

	"github.com/quic-go/quic-go"

	"github.com/portcullis/portcullis/internal/compile"
	"github.com/portcullis/portcullis/internal/h3"
	"github.com/portcullis/portcullis/internal/handoff"
	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/metrics"
	"github.com/portcullis/portcullis/internal/proxy"
	"github.com/portcullis/portcullis/internal/quiclb"
)

// quicUnit serves HTTP/3 on every shard of a bind with an h3.Server. The
// server's transports hold the QUIC connections, so they stay for as long
// as the bind has http3: reloads change the routes, certificates, limits
// and retry mode they serve (through cur), never the transports
// (quicSettings).
//
// With a steering program the unit holds both socket sets of the bind
// and serves its generation's; without, its one socket is read through an
// h3.ForwardConn, which passes datagrams between the two processes of a
// binary upgrade.
type quicUnit struct {
	s     *serving
	us    atomic.Pointer[unitSpec]
	socks socketSet
	// cur is the bind whose handler, certificates, limits and retry mode
	// new requests, handshakes and connection attempts use.
	cur atomic.Pointer[compile.Bind]
	srv *h3.Server
	// gen is the generation whose connection IDs the transports issue.
	gen quiclb.Generation
	// steer is the bind's steering program; nil without. The server owns
	// it; an upgrade reads and hands it on.
	steer *quiclb.Steering
	// forward reads the one socket of a bind without steering.
	forward *h3.ForwardConn
	// keys are those the transports use, handed on by an upgrade.
	keys handoff.QUICBind
	// fm counts the bind's connections (admit); qm exports its shards'
	// counters.
	fm *metrics.Frontend
	qm *metrics.QUIC
}

// startQUIC starts HTTP/3 on the shards of a "quic" unit, in shard order
// (both socket sets, with steering).
func (s *serving) startQUIC(us unitSpec, socks []*listen.Socket) (*quicUnit, error) {
	b := us.bind
	q := b.QUIC
	u := &quicUnit{s: s, gen: s.start.gen, steer: s.takeSteering(b.TCP.Address), fm: s.metrics().Frontend(b.TCP.Frontend)}
	u.us.Store(&us)
	u.socks.list = socks
	u.cur.Store(b)
	u.keys = handoff.QUICBind{ResetKey: [32]byte(*q.ResetKey), TokenKey: [32]byte(*q.TokenKey), Forward: -1}
	shards := socks
	if u.steer != nil {
		n := len(socks) / 2
		shards = socks[int(u.gen)*n : int(u.gen)*n+n]
	}
	u.srv = &h3.Server{
		Address:          b.UDP.Address,
		Handler:          handler(&u.cur),
		TLSConfig:        tlsConfig(&u.cur),
		TrackTLS:         s.tickets.Track,
		Format:           q.Format,
		Generation:       u.gen,
		ResetKey:         q.ResetKey,
		TokenKey:         q.TokenKey,
		Steering:         u.steer,
		Await:            s.takePeer(b.TCP.Address),
		Limits:           q.Handshakes,
		OnLimit:          u.noteLimit,
		Admit:            u.admit,
		ConnContext:      u.connContext(b),
		HandshakeTimeout: q.HandshakeTimeout,
		IdleTimeout:      b.H3IdleTimeout(),
		MaxHeaderBytes:   b.Limits.MaxHeaderBytes,
		MaxStreams:       int64(b.Limits.H2MaxStreams),
		Logger:           s.log.With("frontend", b.TCP.Frontend, "address", b.UDP.Address),
		OnError:          s.fail,
	}
	for _, sock := range shards {
		u.srv.Shards = append(u.srv.Shards, h3.Shard{File: sock.File, Name: sock.Spec.String()})
	}
	if err := u.srv.Start(); err != nil {
		return nil, err
	}
	u.forward = u.srv.Forward()
	u.qm = u.quicMetrics(b.TCP.Frontend, b.UDP.Address)
	return u, nil
}

// connContext returns the HTTP/3 server's ConnContext: it gives each
// connection a guard for b, the bind the unit started with, and, when the
// running graph sends the PROXY protocol, the connection's addresses.
func (u *quicUnit) connContext(b *compile.Bind) func(context.Context, *quic.Conn) context.Context {
	return func(ctx context.Context, c *quic.Conn) context.Context {
		g := newConnGuard(b, func() { h3.CloseExcessiveLoad(c, "too many cancelled requests") })
		ctx, cc := proxy.ForConn(ctx, g, c.RemoteAddr(), c.LocalAddr(), u.s.graph.Load().SendProxy)
		if cc != nil {
			context.AfterFunc(ctx, cc.Close)
		}
		return ctx
	}
}

// admit counts a new QUIC connection against the connection limits of
// the current bind's frontend until it closes (h3.Server.Admit): a
// connection over a limit is refused before its handshake.
func (u *quicUnit) admit(remote net.Addr) (release func(), ok bool) {
	g := u.cur.Load().Gate
	if g == nil {
		u.fm.Open(metrics.HTTP3)
		return func() { u.fm.Closed(metrics.HTTP3) }, true
	}
	t := g.HoldAddr(limit.AddrOf(remote))
	if t == nil {
		return nil, false
	}
	if u.fm == nil {
		return t.Release, true
	}
	u.fm.Open(metrics.HTTP3)
	return func() {
		t.Release()
		u.fm.Closed(metrics.HTTP3)
	}, true
}

// noteLimit summarizes a handshake limit firing (h3.Server.OnLimit) in
// the log events of the current bind's frontend.
func (u *quicUnit) noteLimit(name string) {
	b := u.cur.Load()
	if b.Gate == nil || b.Gate.Events == nil {
		return
	}
	msg := "limit reached, Retry sent"
	if name == h3.LimitMaxHandshakes {
		msg = "limit reached, connection refused"
	}
	b.Gate.Events.Note(msg, nil, "limit", name, "frontend", b.TCP.Frontend, "address", b.UDP.Address)
}

func (u *quicUnit) spec() unitSpec            { return *u.us.Load() }
func (u *quicUnit) sockets() []*listen.Socket { return u.socks.sockets() }
func (u *quicUnit) release()                  { u.socks.release() }
func (u *quicUnit) settle(context.Context)    {}

// update serves the new bind. The handshakes in progress stay counted
// under the new limits.
func (u *quicUnit) update(us unitSpec) {
	if err := u.srv.Handshakes().SetLimits(us.bind.QUIC.Handshakes); err != nil {
		u.s.log.Warn("QUIC: the handshake limits stay as they were", "address", us.bind.UDP.Address, "error", err)
	}
	u.us.Store(&us)
	u.socks.setSpecs(us.specs)
	u.cur.Store(us.bind)
}

func (u *quicUnit) stopAccepting()                  { u.srv.StopAccepting() }
func (u *quicUnit) drain(ctx context.Context) error { return u.srv.Shutdown(ctx) }

// close closes the server, then the sockets.
func (u *quicUnit) close() {
	u.qm.Remove()
	u.srv.Close()
	u.socks.closeFiles()
}

// releaseSocket makes the old process of a binary upgrade stop reading
// the one socket of a bind without steering, and read what the new
// process, at the other end of peer, forwards.
func (u *quicUnit) releaseSocket(peer *net.UnixConn) error {
	if u.forward == nil {
		peer.Close()
		return nil
	}
	return u.forward.Release(peer)
}

// newConnGuard returns the guard of an HTTP/3 client connection of bind b
// (proxy.ConnGuard); closeConn closes it at once. HTTP/1.1 and HTTP/2
// connections get theirs from the httpserver.Server.
func newConnGuard(b *compile.Bind, closeConn func()) *proxy.ConnGuard {
	g := &proxy.ConnGuard{Close: closeConn, Frontend: b.TCP.Frontend, Address: b.TCP.Address}
	if b.Gate != nil {
		g.Events = b.Gate.Events
	}
	return g
}
