package quic

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// RetryMode says when a client must prove its address with a Retry
// round trip (RFC 9000, section 8.1.2) before the server keeps any state
// for its connection.
type RetryMode uint8

const (
	// RetryAuto sends Retry only under a handshake flood (see
	// RetryLimits). The default.
	RetryAuto RetryMode = iota
	// RetryAlways validates every new client without a valid token: one
	// more round trip for each, no state for spoofed sources.
	RetryAlways
	// RetryNever never sends Retry.
	RetryNever
)

// ParseRetryMode parses the configuration's retry: auto (also the empty
// string), always or never.
func ParseRetryMode(s string) (RetryMode, error) {
	switch s {
	case "", "auto":
		return RetryAuto, nil
	case "always":
		return RetryAlways, nil
	case "never":
		return RetryNever, nil
	}
	return 0, fmt.Errorf("quic retry %q: want auto, always or never", s)
}

func (m RetryMode) String() string {
	switch m {
	case RetryAuto:
		return "auto"
	case RetryAlways:
		return "always"
	case RetryNever:
		return "never"
	}
	return fmt.Sprintf("RetryMode(%d)", uint8(m))
}

// RetryLimits are the thresholds of RetryAuto, for one group of shards
// (one bind). Zero fields take their defaults.
type RetryLimits struct {
	// HandshakesPerSecond: Retry once more than this many new
	// handshakes from unvalidated addresses started in the last second
	// (a sliding window). Default 1000.
	HandshakesPerSecond int
	// InProgress: Retry once this many handshakes admitted without
	// Retry may still be in progress. Default 10000.
	InProgress int
	// HandshakeTimeout is how long an admitted handshake counts as in
	// progress. quic-go gives the Transport no hook for a handshake's end,
	// but aborts any handshake not done within twice
	// quic.Config.HandshakeIdleTimeout, so every handshake admitted in the
	// last HandshakeTimeout is counted: an upper bound. Default 10s (twice
	// quic-go's default of 5s); set it to twice HandshakeIdleTimeout.
	HandshakeTimeout time.Duration
}

// maxLimit bounds the limits: the policy keeps one 8-byte time per unit.
const maxLimit = 1 << 20

// RetryPolicy implements Transport.VerifySourceAddress for every shard
// of one bind, and counts its decisions. quic-go calls it for each Initial
// packet that carries no valid token and belongs to no connection yet,
// that is, for each new handshake from an address not yet validated;
// clients that come back with a Retry or NEW_TOKEN token are not asked
// again. A ClientHello spread over two Initial packets (as with
// post-quantum key shares) is asked about twice when the first is answered
// with Retry, once otherwise: the counts are of packets, not clients.
type RetryPolicy struct {
	mode   RetryMode
	limits RetryLimits

	attempts, retries atomic.Uint64

	mu      sync.Mutex
	now     func() time.Time
	epoch   time.Time
	started ring // recent attempts, for HandshakesPerSecond
	alive   ring // recent admitted attempts, for InProgress
}

// RetryStats are a policy's counters since it was made.
type RetryStats struct {
	// Unvalidated is how many times quic-go asked: once per Initial
	// packet that opens no known connection and has no valid token.
	Unvalidated uint64
	// Retries is how many of them it answered with Retry. (quic-go
	// drops a Retry when its send queue is full; Metrics counts those
	// sent.)
	Retries uint64
}

// NewRetryPolicy returns the policy for mode; limits only matter for
// RetryAuto.
func NewRetryPolicy(mode RetryMode, limits RetryLimits) (*RetryPolicy, error) {
	return newRetryPolicy(mode, limits, time.Now)
}

func newRetryPolicy(mode RetryMode, limits RetryLimits, now func() time.Time) (*RetryPolicy, error) {
	if mode > RetryNever {
		return nil, fmt.Errorf("quic retry: unknown mode %d", mode)
	}
	if limits.HandshakesPerSecond == 0 {
		limits.HandshakesPerSecond = 1000
	}
	if limits.InProgress == 0 {
		limits.InProgress = 10000
	}
	if limits.HandshakeTimeout == 0 {
		limits.HandshakeTimeout = 10 * time.Second
	}
	if limits.HandshakesPerSecond < 0 || limits.HandshakesPerSecond > maxLimit ||
		limits.InProgress < 0 || limits.InProgress > maxLimit || limits.HandshakeTimeout < 0 {
		return nil, fmt.Errorf("quic retry limits %+v: want limits from 1 to %d and a positive handshake timeout (0: default)", limits, maxLimit)
	}
	p := &RetryPolicy{mode: mode, limits: limits, now: now, epoch: now()}
	if mode == RetryAuto {
		p.started = newRing(limits.HandshakesPerSecond)
		p.alive = newRing(limits.InProgress)
	}
	return p, nil
}

// Mode returns the policy's mode.
func (p *RetryPolicy) Mode() RetryMode { return p.mode }

// VerifySourceAddress is the Transport.VerifySourceAddress hook: true
// means send a Retry. It is safe for concurrent use by all shards.
func (p *RetryPolicy) VerifySourceAddress(net.Addr) bool {
	p.attempts.Add(1)
	retry := p.mode == RetryAlways
	if p.mode == RetryAuto {
		retry = p.auto()
	}
	if retry {
		p.retries.Add(1)
	}
	return retry
}

func (p *RetryPolicy) auto() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := int64(p.now().Sub(p.epoch))
	// Every attempt counts toward the rate, Retried or not: under a
	// flood of spoofed Initials, every new client is validated until the
	// rate falls back below the limit.
	flood := p.started.exceeded(t, int64(time.Second))
	p.started.add(t)
	if flood || p.alive.exceeded(t, int64(p.limits.HandshakeTimeout)) {
		return true
	}
	p.alive.add(t)
	return false
}

// Stats returns the counters.
func (p *RetryPolicy) Stats() RetryStats {
	return RetryStats{Unvalidated: p.attempts.Load(), Retries: p.retries.Load()}
}

// ring holds the times of the last len(t) events, oldest at next.
type ring struct {
	t    []int64
	next int
	n    int // events recorded, up to len(t)
}

func newRing(size int) ring { return ring{t: make([]int64, size)} }

// exceeded reports whether one more event at now would make more than
// len(t) events within window: true when the ring is full and its oldest
// event is still inside the window.
func (r *ring) exceeded(now, window int64) bool {
	return r.n == len(r.t) && now-r.t[r.next] < window
}

func (r *ring) add(now int64) {
	r.t[r.next] = now
	r.next = (r.next + 1) % len(r.t)
	r.n = min(r.n+1, len(r.t))
}
