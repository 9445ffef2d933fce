package h3

import (
	"fmt"
	"net"
	"time"
)

// RetryMode says when a client must prove its address with a Retry
// round trip (RFC 9000, section 8.1.2) before the server keeps any state
// for its connection.
type RetryMode uint8

const (
	// RetryAuto sends Retry only under a handshake flood (see
	// HandshakeLimits). The default.
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

// String returns the mode as the configuration spells it.
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

// VerifySourceAddress is the Transport.VerifySourceAddress hook: true
// means send a Retry. quic-go calls it for each Initial packet that
// carries no valid token and belongs to no connection yet, that is, for
// each new handshake from an address not yet validated; clients that come
// back with a Retry or NEW_TOKEN token are not asked again. A ClientHello
// spread over two Initial packets (as with post-quantum key shares) is
// asked about twice when the first is answered with Retry, once
// otherwise: the counts are of packets, not clients. It is safe for
// concurrent use by all shards.
func (h *Handshakes) VerifySourceAddress(net.Addr) bool {
	h.unvalidated.Add(1)
	l := h.limits.Load()
	retry := l.Retry == RetryAlways
	if l.Retry == RetryAuto {
		if fired := h.auto(l); fired != "" {
			retry = true
			h.fire(fired)
		}
	}
	if retry {
		h.retries.Add(1)
	}
	return retry
}

// auto decides for RetryAuto: it returns the limit that calls for a
// Retry, or "".
func (h *Handshakes) auto(l *HandshakeLimits) string {
	h.mu.Lock()
	t := int64(h.now().Sub(h.epoch))
	// Every attempt counts toward the rate, Retried or not: under a
	// flood of spoofed Initials, every new client is validated until the
	// rate falls back below the limit.
	flood := h.started.exceeded(t, int64(time.Second))
	h.started.add(t)
	h.mu.Unlock()
	switch {
	case flood:
		return LimitRetryRate
	case h.inProgress.Load() >= int64(l.RetryInProgress):
		return LimitRetryInProgress
	}
	return ""
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
