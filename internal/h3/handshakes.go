package h3

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// Names of the limits of HandshakeLimits, as the configuration spells
// them and log lines name them.
const (
	// LimitMaxHandshakes is HandshakeLimits.MaxHandshakes.
	LimitMaxHandshakes = "max_handshakes"
	// LimitRetryRate is HandshakeLimits.RetryRate.
	LimitRetryRate = "retry_rate"
	// LimitRetryInProgress is HandshakeLimits.RetryInProgress.
	LimitRetryInProgress = "retry_in_progress"
)

// HandshakeLimits bound the new connections of one bind, all its shards
// together. Every field must be set (the configuration fills in its
// defaults): see Check.
type HandshakeLimits struct {
	// Retry says when a client must prove its address with a Retry round
	// trip before the server keeps any state for it.
	Retry RetryMode
	// RetryRate: with RetryAuto, Retry once more than this many new
	// handshakes from unvalidated addresses started in the last second
	// (a sliding window).
	RetryRate int
	// RetryInProgress: with RetryAuto, Retry once this many handshakes
	// are in progress. Below MaxHandshakes, so that clients validated by
	// Retry still find room.
	RetryInProgress int
	// MaxHandshakes bounds the handshakes in progress: beyond it, a new
	// connection attempt is refused (CONNECTION_REFUSED, RFC 9000
	// section 20.1) before quic-go keeps any state for it, validated or
	// not, whatever Retry is.
	MaxHandshakes int
}

// maxLimit bounds the limits: the rate window keeps one 8-byte time per
// handshake of RetryRate.
const maxLimit = 1 << 20

// Check reports whether the limits can be used, with the reason if not.
func (l HandshakeLimits) Check() error {
	if l.Retry > RetryNever {
		return fmt.Errorf("quic retry: unknown mode %d", l.Retry)
	}
	for _, v := range []struct {
		name string
		n    int
	}{{LimitRetryRate, l.RetryRate}, {LimitRetryInProgress, l.RetryInProgress}, {LimitMaxHandshakes, l.MaxHandshakes}} {
		if v.n < 1 || v.n > maxLimit {
			return fmt.Errorf("quic %s %d: want 1 to %d", v.name, v.n, maxLimit)
		}
	}
	if l.Retry == RetryAuto && l.RetryInProgress >= l.MaxHandshakes {
		return fmt.Errorf("quic %s %d: want less than %s (%d): beyond %s every new connection is refused, Retry or not",
			LimitRetryInProgress, l.RetryInProgress, LimitMaxHandshakes, l.MaxHandshakes, LimitMaxHandshakes)
	}
	return nil
}

// Handshakes admits the new QUIC connections of one bind (every shard's
// Transport shares it) and counts its handshakes in progress exactly:
// from the moment quic-go is about to create a connection for a client's
// Initial (Transport.ConnContext) until the server takes the connection
// whose handshake completed (HandshakeDone) or the connection ends
// (handshake failed or timed out, or refused by a later hook).
//
// It sends Retry under the thresholds of HandshakeLimits
// (VerifySourceAddress), and refuses a new connection beyond
// MaxHandshakes in ConnContext, which quic-go calls before it allocates
// the connection: a refusal costs a CONNECTION_CLOSE packet and no state.
//
// It is live state: the counts belong to the running transports and
// survive a reload, which changes the limits with SetLimits.
type Handshakes struct {
	limits atomic.Pointer[HandshakeLimits]
	// onLimit, if set, is told every time a limit fires (see NewHandshakes).
	onLimit func(limit string)

	inProgress                   atomic.Int64
	unvalidated, retries, refuse atomic.Uint64

	mu      sync.Mutex
	now     func() time.Time
	epoch   time.Time
	started ring // recent attempts, for RetryRate
}

// HandshakeStats are the counters of a Handshakes.
type HandshakeStats struct {
	// InProgress is the handshakes in progress now.
	InProgress int
	// Unvalidated is how many times quic-go asked whether to send a
	// Retry: once per Initial packet that opens no known connection and
	// has no valid token.
	Unvalidated uint64
	// Retries is how many of them were answered with Retry. (quic-go
	// drops a Retry when its send queue is full; Metrics counts those
	// sent.)
	Retries uint64
	// Refused is how many connection attempts were refused at
	// MaxHandshakes.
	Refused uint64
}

// NewHandshakes returns the admission of a bind with limits l. onLimit,
// if not nil, is called each time a limit fires, with its name:
// LimitMaxHandshakes when an attempt is refused, LimitRetryRate or
// LimitRetryInProgress when one is sent a Retry under RetryAuto. It runs
// on quic-go's packet path, once per attempt: it must be cheap (a
// summarizer that logs once a second, not a log line).
func NewHandshakes(l HandshakeLimits, onLimit func(limit string)) (*Handshakes, error) {
	return newHandshakes(l, onLimit, time.Now)
}

func newHandshakes(l HandshakeLimits, onLimit func(string), now func() time.Time) (*Handshakes, error) {
	h := &Handshakes{onLimit: onLimit, now: now, epoch: now()}
	if err := h.SetLimits(l); err != nil {
		return nil, err
	}
	return h, nil
}

// SetLimits applies new limits to the attempts from now on. Handshakes
// in progress stay counted. A new RetryRate starts its window afresh.
func (h *Handshakes) SetLimits(l HandshakeLimits) error {
	if err := l.Check(); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if old := h.limits.Load(); old == nil || old.RetryRate != l.RetryRate {
		h.started = newRing(l.RetryRate)
	}
	h.limits.Store(&l)
	return nil
}

// Limits returns the limits in force.
func (h *Handshakes) Limits() HandshakeLimits { return *h.limits.Load() }

// ErrTooManyHandshakes is what ConnContext refuses a connection with at
// MaxHandshakes.
var ErrTooManyHandshakes = errors.New("quic: max_handshakes reached")

// ConnContext is the Transport.ConnContext hook (or the first step of
// one): it counts a new connection as a handshake in progress, or
// refuses it with ErrTooManyHandshakes when MaxHandshakes are. quic-go
// then answers the Initial with CONNECTION_REFUSED, statelessly. The
// count ends at HandshakeDone or when ctx ends, whichever comes first:
// quic-go ends it when the connection closes or its handshake fails,
// and also when a later hook refuses the connection.
func (h *Handshakes) ConnContext(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
	most := int64(h.limits.Load().MaxHandshakes)
	for {
		n := h.inProgress.Load()
		if n >= most {
			h.refuse.Add(1)
			h.fire(LimitMaxHandshakes)
			return ctx, ErrTooManyHandshakes
		}
		if h.inProgress.CompareAndSwap(n, n+1) {
			break
		}
	}
	hs := &handshake{h: h}
	hs.stop = context.AfterFunc(ctx, hs.end)
	return context.WithValue(ctx, handshakeKey{}, hs), nil
}

// HandshakeDone ends the count of the handshake of the connection whose
// context (or one derived from it) is ctx: call it when the server takes
// a connection whose handshake completed (http3.Server.ConnContext,
// with a Listener, not an EarlyListener, which hands connections over
// before their handshake completes). Calls for a context ConnContext did
// not make, and further calls, do nothing.
func HandshakeDone(ctx context.Context) {
	if hs, ok := ctx.Value(handshakeKey{}).(*handshake); ok {
		hs.stop()
		hs.end()
	}
}

// InProgress returns the number of handshakes in progress.
func (h *Handshakes) InProgress() int { return int(h.inProgress.Load()) }

// Stats returns the counters.
func (h *Handshakes) Stats() HandshakeStats {
	return HandshakeStats{
		InProgress:  h.InProgress(),
		Unvalidated: h.unvalidated.Load(),
		Retries:     h.retries.Load(),
		Refused:     h.refuse.Load(),
	}
}

func (h *Handshakes) fire(limit string) {
	if h.onLimit != nil {
		h.onLimit(limit)
	}
}

type handshakeKey struct{}

// handshake is one counted handshake.
type handshake struct {
	h    *Handshakes
	done atomic.Bool
	stop func() bool
}

func (hs *handshake) end() {
	if !hs.done.Swap(true) {
		hs.h.inProgress.Add(-1)
	}
}
