package runtime

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/portcullis/portcullis/internal/handoff"
	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/proxy"
	pquic "github.com/portcullis/portcullis/internal/quic"
)

// quicUnit serves HTTP/3 on every shard of a bind: one quic.Transport per
// socket, each minting connection IDs that name its shard and the
// process's generation, and one http3.Server for them all. The transports
// hold the QUIC connections, so they stay for as long as the bind has
// http3: reloads change the routes, certificates and retry mode they
// serve, never the transports (quicSettings).
//
// With a steering program the unit holds both socket sets of the bind
// and serves its generation's; without, its one socket is read through a
// quic.HandoverConn, which passes datagrams between the two processes of
// a binary upgrade.
type quicUnit struct {
	s     *serving
	us    atomic.Pointer[unitSpec]
	socks socketSet
	// cur is the bind whose handler, certificates and retry mode new
	// requests, handshakes and connection attempts use.
	cur atomic.Pointer[Bind]
	srv *http3.Server
	pcs []io.Closer
	trs []*quic.Transport
	// lns are Listeners, not EarlyListeners: HTTP/3 takes a connection
	// once its handshake is done, so that a handshake that never
	// completes costs no HTTP/3 state (http3.Server keeps a connection it
	// was handed until its IdleTimeout, handshake failed or not), and
	// HandshakeDone ends its count then. Without 0-RTT, clients send no
	// request earlier anyway.
	lns []*quic.Listener
	// hs admits new connections on every shard and counts their
	// handshakes in progress (Retry, max_handshakes).
	hs *pquic.Handshakes
	// gen is the generation whose connection IDs the transports issue.
	gen pquic.Generation
	// steer is the bind's steering program; nil without.
	steer     *pquic.Steering
	steerDone sync.Once
	// handover wraps the one socket of a bind without steering.
	handover *pquic.HandoverConn
	// keys are those the transports use, handed off on upgrade.
	keys handoff.QUICBind
	// cancel ends the shard metrics and the ticket key rotation of the
	// unit's TLS configuration.
	cancel   context.CancelFunc
	stopping atomic.Bool
}

// startQUIC starts HTTP/3 on the shards of a "quic" unit, in shard order
// (both socket sets, with steering).
func (s *serving) startQUIC(us unitSpec, socks []*listen.Socket) (*quicUnit, error) {
	b := us.bind
	q := b.QUIC
	u := &quicUnit{s: s, gen: s.start.gen, steer: s.takeSteering(b.TCP.Address), cancel: func() {}}
	u.us.Store(&us)
	u.socks.list = socks
	u.cur.Store(b)
	u.keys = handoff.QUICBind{ResetKey: [32]byte(*q.resetKey), TokenKey: [32]byte(*q.tokenKey), Forward: -1}
	shards := socks
	if u.steer != nil {
		n := len(socks) / 2
		shards = socks[int(u.gen)*n : int(u.gen)*n+n]
	}
	log := s.log.With("frontend", b.TCP.Frontend, "address", b.UDP.Address)
	u.srv = &http3.Server{
		Handler:        handler(&u.cur),
		IdleTimeout:    b.h3IdleTimeout(),
		MaxHeaderBytes: b.Limits.maxHeaderBytes,
		Logger:         log,
		ConnContext: func(ctx context.Context, c *quic.Conn) context.Context {
			pquic.HandshakeDone(ctx) // a Listener: the handshake is done
			ctx = proxy.WithConnGuard(ctx, newConnGuard(b, func() {
				c.CloseWithError(h3ExcessiveLoad, "too many cancelled requests")
			}))
			if !s.graph.Load().sendProxy {
				return ctx
			}
			cc := &proxy.ClientConn{Remote: c.RemoteAddr(), Local: c.LocalAddr()}
			context.AfterFunc(ctx, cc.Close)
			return proxy.WithClientConn(ctx, cc)
		},
	}
	tlsConf := http3.ConfigureTLSConfig(tlsConfig(&u.cur))
	s.tickets.Use(tlsConf)
	ctx, cancel := context.WithCancel(s.ctx)
	u.cancel = func() {
		cancel()
		s.tickets.Forget(tlsConf)
	}
	metrics := pquic.NewMetrics(q.format, len(shards))
	var counters *pquic.Counters
	if u.steer != nil {
		counters = u.steer.Counters
	}
	watchShards(ctx, metrics, counters, u.gen, log)
	fail := func(err error) (*quicUnit, error) {
		u.closeServers()
		u.releaseSteering()
		return nil, err
	}
	var err error
	if u.hs, err = u.newHandshakes(); err != nil {
		return fail(err)
	}
	for i, sock := range shards {
		if err := u.serveShard(i, sock, len(shards), tlsConf, metrics); err != nil {
			return fail(err)
		}
	}
	if u.steer != nil {
		// Its sockets are read: from now on this process's connections
		// reach it, and new connections too.
		err := u.steer.MarkServing(u.gen)
		if err == nil {
			err = u.steer.SetGeneration(u.gen)
		}
		if err != nil {
			return fail(fmt.Errorf("QUIC on %s: %w", b.UDP.Address, err))
		}
	}
	return u, nil
}

// serveShard starts the transport of shard i (of shards) on sock and
// serves HTTP/3 on it.
func (u *quicUnit) serveShard(i int, sock *listen.Socket, shards int, tlsConf *tls.Config, metrics *pquic.Metrics) error {
	s, b := u.s, u.cur.Load()
	q := b.QUIC
	conn, err := u.packetConn(sock, q, s.takePeer(b.TCP.Address), shards)
	if err != nil {
		return err
	}
	tr := &quic.Transport{
		Conn:                  conn,
		ConnectionIDGenerator: pquic.NewGenCIDGenerator(q.format, u.gen, i),
		StatelessResetKey:     q.resetKey,
		TokenGeneratorKey:     q.tokenKey,
		VerifySourceAddress:   u.hs.VerifySourceAddress,
		ConnContext:           u.connContext,
		Tracer:                metrics.TransportTracer(i, nil),
	}
	u.trs = append(u.trs, tr)
	ln, err := tr.Listen(tlsConf, &quic.Config{
		HandshakeIdleTimeout: q.handshakeTimeout,
		MaxIdleTimeout:       b.h3IdleTimeout(),
		MaxIncomingStreams:   int64(b.Limits.h2MaxStreams),
		Allow0RTT:            false,
		Tracer:               metrics.ConnTracer(i, nil),
	})
	if err != nil {
		return fmt.Errorf("%s: %w", sock.Spec, err)
	}
	u.lns = append(u.lns, ln)
	go func() {
		err := u.srv.ServeListener(ln)
		if !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, quic.ErrServerClosed) && !u.stopping.Load() {
			s.fail(fmt.Errorf("%s: %w", sock.Spec, err))
		}
		ln.Close()
	}()
	return nil
}

// packetConn is what shard sock's transport reads: the socket, or, for
// the one socket of a bind without steering, a HandoverConn on it (with
// peer, the new process of an upgrade waits for its predecessor).
func (u *quicUnit) packetConn(sock *listen.Socket, q *quicBind, peer *net.UnixConn, shards int) (net.PacketConn, error) {
	pc, err := net.FilePacketConn(sock.File)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", sock.Spec, err)
	}
	udp, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("%s: not a UDP socket", sock.Spec)
	}
	if u.steer != nil || shards > 1 {
		u.pcs = append(u.pcs, udp)
		return udp, nil
	}
	u.handover = pquic.NewHandoverConn(udp, q.format, u.gen)
	if peer != nil {
		u.handover.Await(peer)
	}
	u.pcs = append(u.pcs, u.handover)
	return u.handover, nil
}

func (u *quicUnit) spec() unitSpec            { return *u.us.Load() }
func (u *quicUnit) sockets() []*listen.Socket { return u.socks.sockets() }
func (u *quicUnit) release()                  { u.socks.release() }
func (u *quicUnit) settle(context.Context)    {}

// update serves the new bind. The handshakes in progress stay counted
// under the new limits.
func (u *quicUnit) update(us unitSpec) {
	if err := u.hs.SetLimits(us.bind.QUIC.handshakes); err != nil {
		u.s.log.Warn("QUIC: the handshake limits stay as they were", "address", us.bind.UDP.Address, "error", err)
	}
	u.us.Store(&us)
	u.socks.setSpecs(us.specs)
	u.cur.Store(us.bind)
}

// stopAccepting closes the QUIC listeners: new handshakes are refused,
// established connections go on over the transports.
func (u *quicUnit) stopAccepting() {
	u.stopping.Store(true)
	for _, ln := range u.lns {
		ln.Close()
	}
}

// drain sends GOAWAY on every HTTP/3 connection and waits until their
// requests are done or ctx ends; then the connections left are closed.
// The transports and sockets stay open until close, so that the
// connections end cleanly.
func (u *quicUnit) drain(ctx context.Context) error {
	return u.srv.Shutdown(ctx)
}

// close closes the server, then the transports and the sockets. With
// steering, it records that this process no longer serves its
// generation: the packets of its connections go to the other process
// from then on, which answers with a stateless reset.
func (u *quicUnit) close() {
	u.stopAccepting()
	u.closeServers()
	u.releaseSteering()
	u.socks.closeFiles()
}

// releaseSteering records that this process no longer serves its
// generation (if it did) and closes its handles on the steering maps.
func (u *quicUnit) releaseSteering() {
	if u.steer == nil {
		return
	}
	u.steerDone.Do(func() {
		if err := u.steer.MarkDone(u.gen); err != nil {
			u.s.log.Warn("QUIC steering", "address", u.spec().bind.UDP.Address, "error", err)
		}
		u.steer.Close()
		u.steer.Counters.Close()
	})
}

// releaseSocket makes the old process of a binary upgrade stop reading
// the one socket of a bind without steering, and read what the new
// process, at the other end of peer, forwards.
func (u *quicUnit) releaseSocket(peer *net.UnixConn) error {
	if u.handover == nil {
		peer.Close()
		return nil
	}
	return u.handover.Release(peer)
}

// closeServers closes the http3.Server, the transports and their
// duplicates of the sockets.
func (u *quicUnit) closeServers() {
	u.stopping.Store(true)
	u.srv.Close()
	for _, tr := range u.trs {
		tr.Close()
	}
	for _, pc := range u.pcs {
		pc.Close()
	}
	u.cancel()
}
