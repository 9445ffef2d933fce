package proxy

import (
	"context"
	"time"

	"github.com/portcullis/portcullis/internal/balance"
)

// The methods of this file make a Backend usable by the layer-4 proxy
// (l4.Backend): connections share the servers, balancer, max_conns queue
// and passive health checks of HTTP requests.

// AcquireConn returns a usable server that is not in tried and has counted
// one more connection in flight: the balancer's pick (hash is used by
// balance: hash), waiting in the backend's queue while every usable server
// is at max_conns, until the queue timeout passes or ctx ends. It fails
// when no server is usable. Release ends the count.
func (b *Backend) AcquireConn(ctx context.Context, hash uint64, tried []*balance.Member) (*balance.Member, error) {
	return b.pick(ctx, hash, tried)
}

// Release ends a connection counted by AcquireConn, waking a request or a
// connection waiting in the queue.
func (b *Backend) Release(m *balance.Member) { b.release(m) }

// Observe feeds m's passive health check: ok is false for a failed
// connect, a reset or a timeout at the server.
func (b *Backend) Observe(m *balance.Member, ok bool) { b.servers[m].observe(ok) }

// ConnectTimeout bounds one connect to a server (Upstream.ConnectTimeout).
func (b *Backend) ConnectTimeout() time.Duration { return b.opt.Upstream.ConnectTimeout }

// Retries is how many more servers a connection may try after a failed
// connect (BackendOptions.Retries).
func (b *Backend) Retries() int { return b.opt.Retries }

// SendProxy is the PROXY protocol version to start connections to m with,
// or 0 for none (Server.SendProxy).
func (b *Backend) SendProxy(m *balance.Member) int {
	if s := b.servers[m]; s != nil {
		return s.SendProxy
	}
	return 0
}

// HashSource reports whether the backend hashes the client address
// (HashKey source).
func (b *Backend) HashSource() bool { return b.opt.HashKey == "source" }
