package upstream

import (
	"context"
	"time"

	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/metrics"
)

// Options configure a Backend. The configuration's defaults are filled in
// by the compile step; here a zero value means none or off, as each field
// says.
type Options struct {
	// Algorithm balances requests over the servers; "" is
	// balance.RoundRobin.
	Algorithm balance.Algorithm
	// HashKey is what balance.Hash hashes; the zero HashKey hashes
	// nothing (every request hashes to 0).
	HashKey HashKey
	// Sticky pins HTTP clients to a server by cookie; the zero Sticky
	// pins nobody.
	Sticky Sticky
	// Retries is how many more servers a request or connection may try
	// after a failure that allows it. 0: none.
	Retries int
	// RetryBudget is the percentage (0 to 100) of requests over the last
	// ten seconds that may be retries; 3 retries per second are always
	// allowed.
	RetryBudget int
	// QueueTimeout is how long a request or connection waits for a
	// server below its max_conns. 0: it fails at once when every usable
	// server is full.
	QueueTimeout time.Duration
	// ConnectTimeout bounds one connect to a server (TCP, and TLS where
	// there is any). 0: no bound but the system's.
	ConnectTimeout time.Duration
	// Count5xx makes a 5xx response count as a failure for passive health
	// checks.
	Count5xx bool
	// Metrics counts the backend's queue; nil: not counted.
	Metrics *metrics.Backend
}

// Sticky is how a backend pins HTTP clients to a server: a cookie naming
// the server (its balance.Member ID).
type Sticky struct {
	// Cookie is the cookie's name; "" pins nobody.
	Cookie string
	// MaxAge is the cookie's lifetime; 0: a session cookie.
	MaxAge time.Duration
}

// Backend is a compiled, immutable backend: its servers and their pool,
// the queue of requests waiting for a server below its max_conns, the
// retry budget and the settings of requests and connections to its
// servers. The live state it uses (in-flight counts, health) belongs to
// the servers' balance.State and outlives it. It is safe for concurrent
// use.
type Backend struct {
	name    string
	opt     Options
	pool    *balance.Pool
	servers map[*balance.Member]*Server
	byID    map[string]*balance.Member
	budget  *retryBudget
	queue   *queue
}

// NewBackend returns the backend name over servers. It fails when the
// algorithm is unknown or a server has no State or a weight below 1.
func NewBackend(name string, servers []*Server, opt Options) (*Backend, error) {
	b := &Backend{
		name:    name,
		opt:     opt,
		servers: make(map[*balance.Member]*Server, len(servers)),
		byID:    make(map[string]*balance.Member, len(servers)),
		budget:  newRetryBudget(opt.RetryBudget),
		queue:   newQueue(),
	}
	members := make([]*balance.Member, len(servers))
	for i, s := range servers {
		members[i] = s.member
		b.servers[s.member] = s
		b.byID[s.member.ID] = s.member
	}
	pool, err := balance.NewPool(opt.Algorithm, members, balance.Options{})
	if err != nil {
		return nil, err
	}
	b.pool = pool
	return b, nil
}

// Name is the backend's name in the configuration.
func (b *Backend) Name() string { return b.name }

// Algorithm is the backend's balancing algorithm.
func (b *Backend) Algorithm() balance.Algorithm {
	if b.opt.Algorithm == "" {
		return balance.RoundRobin
	}
	return b.opt.Algorithm
}

// Servers lists the backend's servers, primaries and backups, in the
// order given to NewBackend.
func (b *Backend) Servers() []*Server {
	out := make([]*Server, 0, len(b.servers))
	for _, m := range b.pool.Members() {
		out = append(out, b.servers[m])
	}
	return out
}

// Server returns the server of member m, or nil when m is not one of the
// backend's.
func (b *Backend) Server(m *balance.Member) *Server { return b.servers[m] }

// Acquire returns a usable server that is not in tried and has counted
// one more request or connection in flight: the balancer's pick (hash is
// used by balance.Hash), waiting in the backend's queue while every
// usable server is at max_conns, until one is released, the queue timeout
// passes (ErrQueueTimeout) or ctx ends (ctx.Err()). It fails with
// ErrNoServer when no server is usable. Release ends the count.
func (b *Backend) Acquire(ctx context.Context, hash uint64, tried []*balance.Member) (*balance.Member, error) {
	var deadline time.Time
	for {
		m, busy := b.pool.Pick(hash, tried)
		if m != nil {
			if m.State.TryAcquire(m.MaxConns) {
				return m, nil
			}
			continue // it filled up since the pick
		}
		if !busy {
			return nil, ErrNoServer
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(b.opt.QueueTimeout)
			b.opt.Metrics.Queued()
			defer b.opt.Metrics.Dequeued()
		}
		if err := b.queue.wait(ctx, deadline); err != nil {
			if err == ErrQueueTimeout {
				b.opt.Metrics.QueueTimeout()
			}
			return nil, err
		}
	}
}

// AcquireID returns the server whose member ID is id, counted in flight,
// when it can take one more request now (usable, below its max_conns,
// not in tried); else nil, without waiting. It is how a sticky cookie
// keeps a client on its server. Release ends the count.
func (b *Backend) AcquireID(id string, tried []*balance.Member) *balance.Member {
	if m := b.byID[id]; m != nil && m.Eligible(tried) && m.State.TryAcquire(m.MaxConns) {
		return m
	}
	return nil
}

// Release ends a count made by Acquire or AcquireID, waking a request or
// a connection waiting in the queue.
func (b *Backend) Release(m *balance.Member) {
	m.State.Release()
	b.queue.signal()
}

// Observe feeds m's passive health check (see Server.Observe).
func (b *Backend) Observe(m *balance.Member, ok bool) { b.servers[m].Observe(ok) }

// SendProxy is the PROXY protocol version to start connections to m with,
// or 0 for none (see Server.SendProxy).
func (b *Backend) SendProxy(m *balance.Member) int {
	if s := b.servers[m]; s != nil {
		return s.sendProxy
	}
	return 0
}

// Request counts a request (or a connection) against the retry budget.
func (b *Backend) Request() { b.budget.request() }

// AllowRetry reports whether one more retry fits the retry budget, and
// counts it when it does.
func (b *Backend) AllowRetry() bool { return b.budget.allow() }

// Retries is how many more servers a request or connection may try
// (Options.Retries).
func (b *Backend) Retries() int { return b.opt.Retries }

// ConnectTimeout bounds one connect to a server; 0: none but the
// system's (Options.ConnectTimeout).
func (b *Backend) ConnectTimeout() time.Duration { return b.opt.ConnectTimeout }

// HashKey is what balance.Hash hashes (Options.HashKey).
func (b *Backend) HashKey() HashKey { return b.opt.HashKey }

// HashSource reports whether the backend hashes the client address.
func (b *Backend) HashSource() bool { return b.opt.HashKey.Kind == HashSource }

// Sticky is how the backend pins HTTP clients (Options.Sticky).
func (b *Backend) Sticky() Sticky { return b.opt.Sticky }

// Count5xx reports whether a 5xx response counts as a failure for passive
// health checks (Options.Count5xx).
func (b *Backend) Count5xx() bool { return b.opt.Count5xx }
