package runtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/proxy"
	pquic "github.com/portcullis/portcullis/internal/quic"
)

// quicUnit serves HTTP/3 on every shard of a bind: one quic.Transport per
// socket, each minting connection IDs that name its shard, and one
// http3.Server for them all. The transports hold the QUIC connections, so
// they stay for as long as the bind has http3: reloads change the routes,
// certificates and retry mode they serve, never the transports
// (quicSettings).
type quicUnit struct {
	s     *serving
	us    atomic.Pointer[unitSpec]
	socks socketSet
	// cur is the bind whose handler, certificates and retry mode new
	// requests, handshakes and connection attempts use.
	cur atomic.Pointer[Bind]
	srv *http3.Server
	pcs []*net.UDPConn
	trs []*quic.Transport
	lns []*quic.EarlyListener
	// cancel ends the shard metrics and the ticket key rotation of the
	// unit's TLS configuration.
	cancel   context.CancelFunc
	stopping atomic.Bool
}

// startQUIC starts HTTP/3 on the shards of a "quic" unit, in shard order.
func (s *serving) startQUIC(us unitSpec, shards []*listen.Socket) (*quicUnit, error) {
	b := us.bind
	u := &quicUnit{s: s}
	u.us.Store(&us)
	u.socks.list = shards
	u.cur.Store(b)
	log := s.log.With("frontend", b.TCP.Frontend, "address", b.UDP.Address)
	u.srv = &http3.Server{
		Handler:     handler(&u.cur),
		IdleTimeout: idleTimeout,
		Logger:      log,
		ConnContext: func(ctx context.Context, c *quic.Conn) context.Context {
			cc := &proxy.ClientConn{Remote: c.RemoteAddr(), Local: c.LocalAddr()}
			context.AfterFunc(ctx, cc.Close)
			return proxy.WithClientConn(ctx, cc)
		},
	}
	tlsConf := http3.ConfigureTLSConfig(tlsConfig(&u.cur))
	s.tickets.use(tlsConf)
	ctx, cancel := context.WithCancel(s.ctx)
	u.cancel = func() {
		cancel()
		s.tickets.forget(tlsConf)
	}
	q := b.QUIC
	metrics := pquic.NewMetrics(q.format, len(shards))
	// Steering (and its packet counters) exists only for the shards bound
	// at startup; HTTP/3 added by a reload has one shard.
	counters := s.counters[b.TCP.Address]
	if len(shards) <= 1 {
		counters = nil
	}
	watchShards(ctx, metrics, counters, log)
	verify := func(a net.Addr) bool { return u.cur.Load().QUIC.retry.VerifySourceAddress(a) }
	for i, sock := range shards {
		pc, err := net.FilePacketConn(sock.File)
		if err != nil {
			u.closeServers()
			return nil, fmt.Errorf("%s: %w", sock.Spec, err)
		}
		udp, ok := pc.(*net.UDPConn)
		if !ok {
			pc.Close()
			u.closeServers()
			return nil, fmt.Errorf("%s: not a UDP socket", sock.Spec)
		}
		u.pcs = append(u.pcs, udp)
		tr := &quic.Transport{
			Conn:                  udp,
			ConnectionIDGenerator: pquic.NewCIDGenerator(q.format, uint8(i)),
			StatelessResetKey:     q.resetKey,
			TokenGeneratorKey:     q.tokenKey,
			VerifySourceAddress:   verify,
			Tracer:                metrics.TransportTracer(i, nil),
		}
		u.trs = append(u.trs, tr)
		ln, err := tr.ListenEarly(tlsConf, &quic.Config{
			MaxIdleTimeout: idleTimeout,
			Allow0RTT:      false,
			Tracer:         metrics.ConnTracer(i, nil),
		})
		if err != nil {
			u.closeServers()
			return nil, fmt.Errorf("%s: %w", sock.Spec, err)
		}
		u.lns = append(u.lns, ln)
		go func() {
			err := u.srv.ServeListener(ln)
			if !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, quic.ErrServerClosed) && !u.stopping.Load() {
				s.fail(fmt.Errorf("%s: %w", sock.Spec, err))
			}
			ln.Close()
		}()
	}
	return u, nil
}

func (u *quicUnit) spec() unitSpec            { return *u.us.Load() }
func (u *quicUnit) sockets() []*listen.Socket { return u.socks.sockets() }
func (u *quicUnit) release()                  { u.socks.release() }
func (u *quicUnit) settle(context.Context)    {}

// update serves the new bind. A retry policy of the same mode carries
// over, with what it has counted (the handshake rate of retry: auto).
func (u *quicUnit) update(us unitSpec) {
	if old, q := u.cur.Load().QUIC.retry, us.bind.QUIC; old.Mode() == q.retry.Mode() {
		q.retry = old
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

// close closes the server, then the transports and the sockets.
func (u *quicUnit) close() {
	u.stopAccepting()
	u.closeServers()
	u.socks.closeFiles()
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
