// Package l4 proxies layer-4 traffic: TCP connections as byte streams
// (routed by TLS SNI without terminating TLS when routes ask for it) and
// UDP datagrams per client flow. It picks servers through the same
// backends, balancers and health checks as HTTP.
package l4

import (
	"context"
	"time"

	"github.com/portcullis/portcullis/internal/balance"
)

// Backend is what a layer-4 proxy needs from a backend (proxy.Backend
// implements it): the same pool, max_conns queue and passive health
// checks that HTTP requests use.
type Backend interface {
	// AcquireConn returns a usable server that is not in tried and has
	// counted one more connection in flight: the balancer's pick (hash is
	// used by balance: hash), waiting in the backend's queue while every
	// usable server is at max_conns, until queue_timeout or ctx ends. It
	// fails when no server is usable.
	AcquireConn(ctx context.Context, hash uint64, tried []*balance.Member) (*balance.Member, error)
	// Release ends a connection counted by AcquireConn.
	Release(m *balance.Member)
	// Observe feeds passive health checks: ok is false for a failed
	// connect, a reset or a timeout at the server.
	Observe(m *balance.Member, ok bool)
	// ConnectTimeout bounds one connect (timeouts.connect).
	ConnectTimeout() time.Duration
	// Retries is how many more servers a connection may try after a
	// failed connect (retries).
	Retries() int
	// SendProxy is the PROXY protocol version (1 or 2) to start
	// connections to m with, or 0 for none (the server's send_proxy).
	SendProxy(m *balance.Member) int
	// HashSource reports whether the backend hashes the client address
	// (balance: hash with hash_key: source).
	HashSource() bool
}
