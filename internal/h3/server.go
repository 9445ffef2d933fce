package h3

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/portcullis/portcullis/internal/quiclb"
)

// Server serves HTTP/3 on the shards of one UDP address (DESIGN.md,
// invariant 4): one quic.Transport per socket, each issuing connection IDs
// that name its shard and the process's generation, and one http3.Server
// for them all. Set the fields, then call Start; the fields must not change
// afterwards (the hooks may read state that does: Handler, TLSConfig,
// Admit and OnLimit are asked for every request, handshake or connection).
// Stop it like an http3.Server: StopAccepting, Shutdown, Close.
type Server struct {
	// Address is the address the shards are bound to, as the
	// configuration spells it: errors name it.
	Address string
	// Handler serves every request. Required.
	Handler http.Handler
	// TLSConfig is the TLS configuration of every handshake; Start offers
	// HTTP/3 (ALPN "h3") with it through http3.ConfigureTLSConfig.
	// Required.
	TLSConfig *tls.Config
	// TrackTLS, if set, is called by Start with the TLS configuration the
	// QUIC listeners use, before any handshake, and the function it
	// returns (if not nil) by the first Close: in between, the caller may set its
	// session ticket keys.
	TrackTLS func(*tls.Config) (untrack func())
	// Shards are the sockets of the address, in shard order: one
	// transport each, whose connection IDs carry its index. With
	// Steering, they are the socket set of Generation. Required.
	Shards []Shard
	// Format is the format of the connection IDs the transports issue.
	Format quiclb.CIDFormat
	// Generation is the process generation the connection IDs carry: 0,
	// or the one a binary upgrade gave the process.
	Generation quiclb.Generation
	// ResetKey is the transports' quic.Transport.StatelessResetKey,
	// shared by the shards, restarts and instances (LoadKeys); nil: no
	// stateless resets are sent.
	ResetKey *quic.StatelessResetKey
	// TokenKey is the transports' quic.Transport.TokenGeneratorKey, which
	// protects Retry and NEW_TOKEN tokens (LoadKeys); nil: a random key.
	TokenKey *quic.TokenGeneratorKey
	// Steering is the address's steering program; nil without. Once every
	// shard is read, Start records that Generation is served and makes it
	// the generation of new connections; Close records that it no longer
	// is served, then closes the program and its counters. The server owns
	// it from Start on, even when Start fails.
	Steering *quiclb.Steering
	// Await is, for the new process of a binary upgrade, its end of the
	// socket pair to the old process, for a server of one shard without
	// Steering: the shard is read through a ForwardConn that reads
	// nothing until the old process releases the socket (ForwardConn.Await),
	// and the server owns Await. nil: the shard is read at once. Ignored
	// with Steering or several shards.
	Await *net.UnixConn
	// Limits are the limits on new connections of every shard together
	// (Retry, max_handshakes); Handshakes().SetLimits changes them later.
	Limits HandshakeLimits
	// OnLimit, if set, is called with the limit's name (LimitMaxHandshakes,
	// LimitRetryRate, LimitRetryInProgress) each time one fires.
	OnLimit func(limit string)
	// Admit, if set, admits a new connection from remote once its
	// handshake is counted, before quic-go keeps any state for it: it
	// returns false to refuse it, or true and the function (nil: none)
	// that releases what the connection holds, called when it ends.
	Admit func(remote net.Addr) (release func(), ok bool)
	// ConnContext, if set, derives the context of each connection from
	// ctx once its handshake is done (http3.Server.ConnContext).
	ConnContext func(ctx context.Context, c *quic.Conn) context.Context
	// HandshakeTimeout is quic.Config.HandshakeIdleTimeout; 0: quic-go's
	// default (5 s).
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection that long without a packet
	// (quic.Config.MaxIdleTimeout; 0: quic-go's 30 s) or a request
	// (http3.Server.IdleTimeout; 0: never).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's header section, in bytes
	// (http3.Server.MaxHeaderBytes; 0: http.DefaultMaxHeaderBytes).
	MaxHeaderBytes int
	// MaxStreams bounds the requests a connection may have in flight
	// (quic.Config.MaxIncomingStreams; 0: quic-go's 100).
	MaxStreams int64
	// Logger receives the HTTP/3 server's errors and warnings, and every
	// minute the shards' numbers at debug level, with the attributes it
	// carries (those that name the server); nil: slog.Default().
	Logger *slog.Logger
	// OnError, if set, is called when a shard stops serving for another
	// reason than StopAccepting or Close; the error names the shard.
	OnError func(error)

	srv *http3.Server
	hs  *Handshakes
	// pcs are what the transports read: duplicates of the shards' files,
	// or the ForwardConn on one.
	pcs []io.Closer
	trs []*quic.Transport
	// lns are Listeners, not EarlyListeners: HTTP/3 takes a connection
	// once its handshake is done, so that a handshake that never
	// completes costs no HTTP/3 state (http3.Server keeps a connection it
	// was handed until its IdleTimeout, handshake failed or not), and
	// HandshakeDone ends its count then. Without 0-RTT, clients send no
	// request earlier anyway.
	lns     []*quic.Listener
	forward *ForwardConn
	// metrics counts what each shard sees (Start).
	metrics *Metrics
	// cancel ends the shard metrics and the TLS tracking.
	cancel    func()
	steerDone sync.Once
	stopping  atomic.Bool
}

// Shard is one socket of a Server.
type Shard struct {
	// File is the bound UDP socket. The server reads a duplicate of it,
	// which Close closes; the caller keeps the file.
	File *os.File
	// Name names the socket in errors.
	Name string
}

// Start serves HTTP/3 on every shard, in shard order, and returns; a shard
// that stops serving later is reported to OnError. If Start fails, what it
// started is closed.
func (s *Server) Start() error {
	log := s.logger()
	s.srv = &http3.Server{
		Handler:        s.Handler,
		IdleTimeout:    s.IdleTimeout,
		MaxHeaderBytes: s.MaxHeaderBytes,
		Logger:         log,
		ConnContext: func(ctx context.Context, c *quic.Conn) context.Context {
			HandshakeDone(ctx) // a Listener: the handshake is done
			if s.ConnContext != nil {
				ctx = s.ConnContext(ctx, c)
			}
			return ctx
		},
	}
	tlsConf := http3.ConfigureTLSConfig(s.TLSConfig)
	var untrack func()
	if s.TrackTLS != nil {
		untrack = s.TrackTLS(tlsConf)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = sync.OnceFunc(func() {
		cancel()
		if untrack != nil {
			untrack()
		}
	})
	metrics := NewMetrics(s.Format, len(s.Shards))
	s.metrics = metrics
	watchShards(ctx, metrics, log)
	if err := s.start(tlsConf, metrics); err != nil {
		s.closeServers()
		s.releaseSteering()
		return err
	}
	return nil
}

// start admits new connections, serves every shard, then records with the
// steering program that this generation serves.
func (s *Server) start(tlsConf *tls.Config, metrics *Metrics) error {
	var err error
	if s.hs, err = NewHandshakes(s.Limits, s.OnLimit); err != nil {
		return err
	}
	for i, sh := range s.Shards {
		if err := s.serveShard(i, sh, tlsConf, metrics); err != nil {
			return err
		}
	}
	if s.Steering == nil {
		return nil
	}
	// Its sockets are read: from now on this process's connections reach
	// it, and new connections too.
	err = s.Steering.MarkServing(s.Generation)
	if err == nil {
		err = s.Steering.SetGeneration(s.Generation)
	}
	if err != nil {
		return fmt.Errorf("QUIC on %s: %w", s.Address, err)
	}
	return nil
}

// ShardStats returns each shard's counters since Start, in shard order;
// nil before Start.
func (s *Server) ShardStats() []ShardStats {
	if s.metrics == nil {
		return nil
	}
	return s.metrics.Snapshot()
}

// Handshakes returns the admission of new connections (their limits and
// counters); nil before Start.
func (s *Server) Handshakes() *Handshakes { return s.hs }

// Forward returns what the one shard of a server without Steering is read
// through, which passes datagrams between the two processes of a binary
// upgrade; nil with Steering or several shards.
func (s *Server) Forward() *ForwardConn { return s.forward }

// StopAccepting closes the QUIC listeners: new handshakes are refused,
// established connections go on over the transports. It does not wait.
func (s *Server) StopAccepting() {
	s.stopping.Store(true)
	for _, ln := range s.lns {
		ln.Close()
	}
}

// Shutdown sends GOAWAY on every HTTP/3 connection and waits until their
// requests are done or ctx ends; then the connections left are closed.
// The transports and sockets stay open until Close, so that the
// connections end cleanly. Call StopAccepting first.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.srv.Shutdown(ctx)
}

// Close stops accepting, closes the HTTP/3 server, the transports and
// their sockets at once. With Steering, it records that this process no
// longer serves its generation: the packets of its connections go to the
// other process from then on, which answers with a stateless reset. It
// may be called more than once, and after Shutdown.
func (s *Server) Close() error {
	s.StopAccepting()
	s.closeServers()
	s.releaseSteering()
	return nil
}

// closeServers closes the http3.Server, the transports and their
// duplicates of the sockets.
func (s *Server) closeServers() {
	s.stopping.Store(true)
	s.srv.Close()
	for _, tr := range s.trs {
		tr.Close()
	}
	for _, pc := range s.pcs {
		pc.Close()
	}
	s.cancel()
}

// releaseSteering records that this process no longer serves its
// generation (if it did) and closes its handles on the steering maps.
func (s *Server) releaseSteering() {
	if s.Steering == nil {
		return
	}
	s.steerDone.Do(func() {
		if err := s.Steering.MarkDone(s.Generation); err != nil {
			s.logger().Warn("QUIC steering", "error", err)
		}
		s.Steering.Close()
		s.Steering.Counters.Close()
	})
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.Default()
	}
	return s.Logger
}

// errServing says whether err, returned by ServeListener, ends serving
// for another reason than a stop.
func (s *Server) errServing(err error) bool {
	return !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, quic.ErrServerClosed) && !s.stopping.Load()
}
