// Package httpserver assembles the HTTP/1.1 and HTTP/2 server of one bind
// around net/http: protocols, TLS, limits, the hooks that give each client
// connection its context (proxy.ConnGuard, proxy.ClientConn for
// send_proxy, proxy.Tunnels), and the lifecycle a listener needs (Serve,
// settle, Shutdown, Close). It serves any net.Listener; the runtime feeds
// it from the accept path (accept.Listener).
package httpserver

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/metrics"
	"github.com/portcullis/portcullis/internal/proxy"
)

// Config is what a Server serves, fixed when it is made: a reload that
// changes one of its values gets a new Server.
type Config struct {
	// Frontend and Address name the bind in log lines and summaries.
	Frontend, Address string
	// Handler serves every request. Required. A reload that keeps the
	// Server changes what it serves behind it.
	Handler http.Handler
	// TLS, when not nil, makes the Server HTTPS with HTTP/1.1 and HTTP/2
	// (ALPN); nil: HTTP/1.1 and h2c.
	TLS *tls.Config
	// Limits bound each connection.
	Limits Limits
	// Events summarizes the limits that fire and the clients' HTTP/2
	// protocol errors, one line per kind and second (the bind's Gate's).
	// Nil: not reported.
	Events *limit.Events
	// SendProxy, called for each new connection, reports whether some
	// server has send_proxy: the connection then carries a
	// proxy.ClientConn, for the private server connections that PROXY
	// headers need. Nil: never.
	SendProxy func() bool
	// Metrics counts the bind's connections by protocol (at their first
	// request) and requests; nil: not counted.
	Metrics *metrics.Frontend
	// Log receives net/http's own errors (TLS handshakes, malformed
	// requests) at debug level. Nil: slog.Default().
	Log *slog.Logger
}

// Server is the HTTP server of one bind, shaped like http.Server: Serve,
// Shutdown(ctx), Close. Make it with New.
type Server struct {
	http   *http.Server
	tls    bool
	config Config
	// fresh counts the connections that have not sent a request yet (in
	// StateNew), for Fresh; freshConns holds them.
	fresh      atomic.Int64
	freshConns sync.Map // net.Conn → struct{}
	// guards are the connections' guards, by connection.
	guards sync.Map // net.Conn → *proxy.ConnGuard
	// clients are the connections' ClientConns, with send_proxy.
	clients sync.Map // net.Conn → *proxy.ClientConn
	// tunnels are the upgraded connections (WebSocket), which net/http
	// no longer tracks: Shutdown ends them, Close cuts them.
	tunnels proxy.Tunnels
}

// New returns a Server for c.
func New(c Config) *Server {
	if c.Log == nil {
		c.Log = slog.Default()
	}
	s := &Server{config: c, tls: c.TLS != nil}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	if s.tls {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	l := c.Limits
	s.http = &http.Server{
		Handler:           c.Handler,
		TLSConfig:         c.TLS,
		Protocols:         protocols,
		ReadHeaderTimeout: l.HeaderTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: l.H2MaxStreams,
			CountError:           h2Errors(c.Events, c.Frontend, c.Address),
		},
		ErrorLog:    slog.NewLogLogger(c.Log.With("frontend", c.Frontend, "address", c.Address).Handler(), slog.LevelDebug),
		ConnContext: s.connContext,
		ConnState:   s.connState,
	}
	return s
}

// Serve serves the connections ln accepts, over TLS when the Config has
// it, until Shutdown or Close: then it returns http.ErrServerClosed. Any
// other error is ln's.
func (s *Server) Serve(ln net.Listener) error {
	if s.tls {
		return s.http.ServeTLS(ln, "", "")
	}
	return s.http.Serve(ln)
}

// Fresh returns the number of connections that have not sent a request
// yet. net/http's Shutdown closes a connection whose first request
// arrives after it began, unanswered: a reload waits for Fresh to be zero
// (with StopKeepAlives) before it drains a Server it replaces.
func (s *Server) Fresh() int { return int(s.fresh.Load()) }

// StopKeepAlives turns keep-alive off: idle connections close, and busy
// ones close after their response, so that their clients go on with
// another server.
func (s *Server) StopKeepAlives() { s.http.SetKeepAlivesEnabled(false) }

// Shutdown sends GOAWAY on HTTP/2 connections, closes idle HTTP/1.1 ones
// and the listeners Serve runs on, and waits for in-flight requests and
// for upgraded connections (ended at a quiet moment: proxy.Tunnels.Drain)
// until ctx ends; then it returns ctx.Err(), leaving to Close the
// connections left.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if terr := s.tunnels.Drain(ctx); terr != nil && err == nil {
		err = terr
	}
	return err
}

// Close closes the listeners Serve runs on and every connection at once,
// upgraded ones included.
func (s *Server) Close() {
	s.http.Close()
	// Drain with an ended context cuts every tunnel at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.tunnels.Drain(ctx)
}

// Closed reports whether err, returned by Serve, says the Server was shut
// down or closed rather than failed.
func Closed(err error) bool { return errors.Is(err, http.ErrServerClosed) }
