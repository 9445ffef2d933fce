// Package compile turns a validated configuration into a Graph: typed
// values only (backends and their servers, routes, TLS configurations,
// limits, QUIC settings), each concept parsed by the package that owns it
// (a balance algorithm by balance, a hash key by upstream, a host pattern
// by hostname, a Retry mode by h3), with every problem reported at its
// place in the file (FILE:LINE:COL). Nothing after compile reads the raw
// configuration.
package compile

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"time"

	"github.com/portcullis/portcullis/internal/accesslog"
	"github.com/portcullis/portcullis/internal/httpserver"
	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/metrics"
	"github.com/portcullis/portcullis/internal/privilege"
	"github.com/portcullis/portcullis/internal/proxy"
	"github.com/portcullis/portcullis/internal/upstream"
)

// Graph is a compiled configuration: everything the runtime serves, built
// once and never changed.
type Graph struct {
	// Grace is global.grace: how long a stop, a reload or an upgrade
	// lets connections finish.
	Grace time.Duration
	// Frontends are the frontends, in the order of the file.
	Frontends []*Frontend
	// Backends are the HTTP sides of the backends, in the order of the
	// file.
	Backends []*proxy.Backend
	// User is who to become after binding when started as root; nil when
	// global.user is not set.
	User *privilege.Target
	// Upstreams are the backends' servers and balancers, in the order of
	// the file.
	Upstreams []*upstream.Backend
	// Servers are the servers of every backend, which the runtime makes
	// the live set (upstream.Registry.Commit) once the graph serves.
	Servers []*upstream.Server
	// BindAt maps the address of a bind of an http or tcp frontend to it.
	BindAt map[string]*Bind
	// RelayAt maps the address of a bind of a udp frontend to it.
	RelayAt map[string]*Relay
	// SendProxy is set when a server has send_proxy: HTTP client
	// connections then carry a proxy.ClientConn, for the private server
	// connections that PROXY headers need.
	SendProxy bool
	// Notes are said once when the graph goes live (random QUIC keys, a
	// global max_conns above what the open-files limit allows).
	Notes []string
	// MaxConns is global.max_conns, derived from the open-files limit
	// when not set.
	MaxConns int
	// Conns are the connection limits of each frontend, by name.
	Conns map[string]ConnPlan
	// AccessLogs are the access-log writers the frontends use, by
	// destination (stdout, stderr or a file's absolute path). The runtime
	// opens the new ones before the graph serves, reopens them on
	// SIGUSR1 and closes those a reload leaves unused.
	AccessLogs map[string]*accesslog.Writer
	// Admin is the admin socket and listener; nil: none.
	Admin *Admin
}

// Frontend is a compiled frontend.
type Frontend struct {
	// Name is the frontend's name in the file.
	Name string
	// Mode is config.ModeHTTP, ModeTCP or ModeUDP.
	Mode string
	// Binds are the binds of http and tcp frontends.
	Binds []*Bind
	// Relays are the binds of udp frontends.
	Relays []*Relay
	// AccessLog writes the frontend's access log; nil without one.
	AccessLog *accesslog.Logger
	// Metrics counts the frontend's connections and requests; nil
	// without metrics.
	Metrics *metrics.Frontend
	// ErrorPages are the bytes of the frontend's error pages, by
	// status, read when the graph was compiled; nil without errors.
	ErrorPages proxy.ErrorPages
}

// Bind is a compiled bind: its sockets and what serves them.
type Bind struct {
	// TCP is the bind's TCP socket.
	TCP listen.Spec
	// UDP is the template of the HTTP/3 sockets (one per shard); nil
	// without http3.
	UDP *listen.Spec
	// QUIC is the HTTP/3 configuration; nil without http3.
	QUIC *QUIC
	// TLS is nil for plain HTTP/1.1 and h2c, and for tcp frontends.
	TLS *tls.Config
	// Handler serves the bind's HTTP requests; nil for tcp frontends.
	Handler http.Handler
	// L4 is how a tcp frontend's connections are routed, and an http
	// frontend's sni (passthrough) routes; nil for an http bind without
	// them and without accept_proxy.
	L4 *L4
	// Gate counts the bind's connections against its frontend's limits.
	Gate *limit.Gate
	// Limits are those its HTTP servers hold (http binds).
	Limits httpserver.Limits
}

// fresh is the Live of a process that runs no configuration yet: every
// server and counter is new.
type fresh struct{}

func (fresh) Servers() *upstream.Registry { return nil }

func (fresh) Metrics() *metrics.Metrics { return nil }

func (fresh) AccessLog(to string) *accesslog.Writer {
	return accesslog.NewWriter(to, 0, slog.New(slog.DiscardHandler))
}

func (fresh) FrontendConns(string) (*limit.Conns, *limit.Events) {
	return limit.NewConns(limit.NewConns(nil)), limit.NewEvents(slog.New(slog.DiscardHandler), 0)
}
