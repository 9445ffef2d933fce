// Package upstream is the live model of the servers behind the proxy: each
// backend's servers, their balancer pool, the queue of requests and
// connections waiting for a server below its max_conns, the retry budget,
// and the registry that keeps servers' live state and health monitors
// across configurations. The HTTP proxy and the layer-4 relay acquire,
// release and observe servers through it; health checks write into it.
// It knows nothing of HTTP.
package upstream

import (
	"errors"

	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/metrics"
)

// Errors of Backend.Acquire, for callers to tell with errors.Is.
var (
	// ErrNoServer: no server may take the request: every one is down,
	// draining, disabled, or was already tried.
	ErrNoServer = errors.New("no server is up: every server is down, draining or disabled")
	// ErrQueueTimeout: every usable server stayed at max_conns for the
	// backend's queue timeout.
	ErrQueueTimeout = errors.New("every server is at max_conns and the queue timeout passed")
)

// Server is one server of a backend: its balancer member (weight, backup,
// max_conns, slow start, ID and live balance.State), the passive health
// check that learns from its traffic, and how connections to it start.
// It is immutable; its State is shared with the servers of the same
// backend name and address in other configurations.
type Server struct {
	member    *balance.Member
	observe   func(ok bool) // nil: nobody learns from the traffic
	sendProxy int
	// plan is what Registry.Commit applies; nil for a server made by
	// NewServer, which no registry knows.
	plan *plan
	// metrics counts the server's requests; nil: not counted.
	metrics *metrics.Server
}

// NewServer returns a server that no registry knows: m is its member
// (with its State), sendProxy the PROXY protocol version connections to
// it start with (0 none, 1 text, 2 binary), and observe, when not nil, is
// told the outcome of every request or connection at it (it must be
// cheap). Servers of a running configuration come from Registry.Server.
func NewServer(m *balance.Member, sendProxy int, observe func(ok bool)) *Server {
	return &Server{member: m, sendProxy: sendProxy, observe: observe}
}

// Metrics is the server's metrics handle, shared with the server of the
// same backend and address in other configurations; nil when not counted
// (a nil handle counts nothing).
func (s *Server) Metrics() *metrics.Server {
	if s == nil {
		return nil
	}
	return s.metrics
}

// Member is the server's balancer member. Its fields must not be changed
// once the server is in a Backend.
func (s *Server) Member() *balance.Member { return s.member }

// Address is the server's "host:port".
func (s *Server) Address() string { return s.member.State.Address }

// SendProxy is the PROXY protocol version that connections to the server
// start with: 0 none, 1 (text) or 2 (binary). Every such connection names
// one client, so over HTTP each one is private to one client connection.
func (s *Server) SendProxy() int { return s.sendProxy }

// Observe feeds the server's passive health check: ok is false for a
// failed connect, a reset, a timeout (and, when the backend counts them,
// a 5xx response). It does nothing for a nil Server or one without a
// check.
func (s *Server) Observe(ok bool) {
	if s != nil && s.observe != nil {
		s.observe(ok)
	}
}
