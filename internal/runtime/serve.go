package runtime

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/portcullis/portcullis/internal/l4"
	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/proxy"
	pquic "github.com/portcullis/portcullis/internal/quic"
)

// Server timeouts toward clients.
const (
	readHeaderTimeout = 10 * time.Second  // slow-loris bound for request headers
	idleTimeout       = 120 * time.Second // keep-alive and HTTP/3 idle connections
)

// serving is the set of servers running on acquired sockets. The servers
// stay; what they serve is the current graph, swapped atomically by a
// reload.
type serving struct {
	log *slog.Logger
	// ctx ends when the servers stop; background work (metrics) follows it.
	ctx      context.Context
	cancel   context.CancelFunc
	counters map[string]*pquic.Counters
	tickets  *ticketKeys
	graph    atomic.Pointer[Graph]
	https    []*http.Server
	h3       []*http3.Server
	quic     []*quic.Transport
	tcp      []*l4.TCP
	udp      []*l4.UDP
	// listeners and packetConns are the layer-4 servers' sockets, closed
	// first by shutdown.
	listeners   []net.Listener
	packetConns []*net.UDPConn
	// clients are the client connections of the http.Servers, for the
	// private server connections of send_proxy.
	clients sync.Map // net.Conn → *proxy.ClientConn
	wg      sync.WaitGroup
	errs    chan error
	// files are the TCP sockets' own descriptors (listen.Socket.File). A
	// net.Listener made from one is a duplicate, so closing the listener
	// alone leaves the socket listening: the kernel would go on completing
	// connections that nobody accepts. shutdown closes them too, so that new
	// connections are refused.
	files []*os.File
}

// serve starts a server on every socket of the graph. sockets must hold one
// socket per spec of g.Specs(), in any order.
// counters are the steering programs' packet counts by address.
func serve(g *Graph, sockets []*listen.Socket, counters map[string]*pquic.Counters, log *slog.Logger) (*serving, error) {
	byKey := map[string][]*listen.Socket{}
	for _, s := range sockets {
		key := s.Network + " " + s.Address
		byKey[key] = append(byKey[key], s)
	}
	s := &serving{log: log, errs: make(chan error, 16), counters: counters}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.tickets = newTicketKeys()
	go s.tickets.rotateEvery(s.ctx, ticketKeyRotation)
	s.graph.Store(g)
	for _, f := range g.Frontends {
		for _, b := range f.Binds {
			tcp := byKey["tcp "+b.TCP.Address]
			if len(tcp) != 1 {
				s.close()
				return nil, fmt.Errorf("internal error: %d sockets for %s", len(tcp), b.TCP)
			}
			if err := s.serveBind(f.Name, b, tcp[0]); err != nil {
				s.close()
				return nil, err
			}
			if b.UDP != nil {
				udp := byKey["udp "+b.UDP.Address]
				if len(udp) != b.QUIC.shards {
					s.close()
					return nil, fmt.Errorf("internal error: %d sockets for %d shards of %s", len(udp), b.QUIC.shards, b.UDP)
				}
				if err := s.serveQUIC(f.Name, b, udp); err != nil {
					s.close()
					return nil, err
				}
			}
		}
		for _, r := range f.Relays {
			udp := byKey["udp "+r.Spec.Address]
			if len(udp) != 1 {
				s.close()
				return nil, fmt.Errorf("internal error: %d sockets for %s", len(udp), r.Spec)
			}
			if err := s.serveRelay(f.Name, r, udp[0]); err != nil {
				s.close()
				return nil, err
			}
		}
	}
	return s, nil
}

// serveBind serves a bind's TCP socket: as HTTP, as a layer-4 proxy, or
// both (passthrough by SNI, PROXY headers) with the layer-4 side first.
func (s *serving) serveBind(frontend string, b *Bind, sock *listen.Socket) error {
	ln, err := net.FileListener(sock.File)
	if err != nil {
		return fmt.Errorf("%s: %w", b.TCP, err)
	}
	s.files = append(s.files, sock.File)
	if b.L4 != nil {
		ln = s.serveL4(frontend, b, ln)
	}
	if b.Handler == nil {
		return nil
	}
	s.serveTCP(frontend, b, ln)
	return nil
}

// current returns what the bind at address serves now.
func (s *serving) current(address string) *Bind { return s.graph.Load().binds[address] }

// handler serves a request with the current graph's handler of a bind.
func (s *serving) handler(address string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.current(address).Handler.ServeHTTP(w, r)
	})
}

// tlsConfig hands each new TLS handshake the current graph's certificates
// for a bind, so that a reload takes effect for new connections.
func (s *serving) tlsConfig(address string) *tls.Config {
	return &tls.Config{
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.current(address).TLS, nil
		},
	}
}

func (s *serving) serveTCP(frontend string, b *Bind, ln net.Listener) {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	var tlsConf *tls.Config
	if b.TLS != nil {
		protocols.SetHTTP2(true)
		tlsConf = s.tlsConfig(b.TCP.Address)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	srv := &http.Server{
		Handler:           s.handler(b.TCP.Address),
		TLSConfig:         tlsConf,
		Protocols:         protocols,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.With("frontend", frontend, "address", b.TCP.Address).Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			cc := &proxy.ClientConn{Remote: c.RemoteAddr(), Local: c.LocalAddr()}
			s.clients.Store(c, cc)
			return proxy.WithClientConn(ctx, cc)
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateClosed || st == http.StateHijacked {
				if cc, ok := s.clients.LoadAndDelete(c); ok {
					cc.(*proxy.ClientConn).Close()
				}
			}
		},
	}
	s.https = append(s.https, srv)
	s.wg.Go(func() {
		var err error
		if tlsConf != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			s.errs <- fmt.Errorf("%s: %w", b.TCP, err)
		}
	})
}

// serveQUIC serves HTTP/3 on every shard of a bind: one quic.Transport per
// socket, each minting connection IDs that name its shard, and one
// http3.Server for them all.
func (s *serving) serveQUIC(frontend string, b *Bind, shards []*listen.Socket) error {
	srv := &http3.Server{
		Handler:     s.handler(b.TCP.Address),
		IdleTimeout: idleTimeout,
		Logger:      s.log.With("frontend", frontend, "address", b.UDP.Address),
		ConnContext: func(ctx context.Context, c *quic.Conn) context.Context {
			cc := &proxy.ClientConn{Remote: c.RemoteAddr(), Local: c.LocalAddr()}
			context.AfterFunc(ctx, cc.Close)
			return proxy.WithClientConn(ctx, cc)
		},
	}
	s.h3 = append(s.h3, srv)
	tlsConf := http3.ConfigureTLSConfig(s.tlsConfig(b.TCP.Address))
	s.tickets.use(tlsConf)
	q := b.QUIC
	metrics := pquic.NewMetrics(q.format, len(shards))
	watchShards(s.ctx, metrics, s.counters[b.TCP.Address], s.log.With("frontend", frontend, "address", b.UDP.Address))
	for i, sock := range shards {
		pc, err := net.FilePacketConn(sock.File)
		if err != nil {
			return fmt.Errorf("%s: %w", sock.Spec, err)
		}
		udp, ok := pc.(*net.UDPConn)
		if !ok {
			pc.Close()
			return fmt.Errorf("%s: not a UDP socket", sock.Spec)
		}
		tr := &quic.Transport{
			Conn:                  udp,
			ConnectionIDGenerator: pquic.NewCIDGenerator(q.format, uint8(i)),
			StatelessResetKey:     q.resetKey,
			TokenGeneratorKey:     q.tokenKey,
			VerifySourceAddress:   q.retry.VerifySourceAddress,
			Tracer:                metrics.TransportTracer(i, nil),
		}
		s.quic = append(s.quic, tr)
		ln, err := tr.ListenEarly(tlsConf, &quic.Config{
			MaxIdleTimeout: idleTimeout,
			Allow0RTT:      false,
			Tracer:         metrics.ConnTracer(i, nil),
		})
		if err != nil {
			return fmt.Errorf("%s: %w", sock.Spec, err)
		}
		s.wg.Go(func() {
			err := srv.ServeListener(ln)
			if !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, quic.ErrServerClosed) {
				s.errs <- fmt.Errorf("%s: %w", sock.Spec, err)
			}
			ln.Close()
		})
	}
	return nil
}

// shutdown stops accepting, sends GOAWAY on HTTP/2 and HTTP/3 connections
// and waits for in-flight requests until ctx ends; then it closes whatever
// is left.
func (s *serving) shutdown(ctx context.Context) error {
	for _, f := range s.files {
		f.Close()
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(s.https)+len(s.h3)+1)
	wg.Go(func() { errs <- s.shutdownL4(ctx) })
	for _, srv := range s.https {
		wg.Go(func() { errs <- srv.Shutdown(ctx) })
	}
	for _, srv := range s.h3 {
		wg.Go(func() { errs <- srv.Shutdown(ctx) })
	}
	wg.Wait()
	close(errs)
	var first error
	for err := range errs {
		if err != nil && first == nil {
			first = err
		}
	}
	s.close()
	return first
}

// close closes every server and transport at once.
func (s *serving) close() {
	s.cancel()
	for _, f := range s.files {
		f.Close()
	}
	for _, srv := range s.https {
		srv.Close()
	}
	for _, srv := range s.h3 {
		srv.Close()
	}
	for _, tr := range s.quic {
		tr.Close()
	}
	for _, ln := range s.listeners {
		ln.Close()
	}
	for _, pc := range s.packetConns {
		pc.Close()
	}
}
