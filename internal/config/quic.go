package config

import (
	"encoding/hex"
	"slices"
	"strings"
	"time"
)

// QUIC defaults. docs/quic.md ("Initial floods") explains the handshake
// limits: a handshake in progress holds about 110 KiB of the process's
// resident memory (quic-go's connection and TLS state, four goroutines,
// and the garbage collector's headroom), so max_handshakes bounds that
// memory to about 220 MiB, and an unvalidated flood, held at
// retry_in_progress, to half of it.
const (
	DefaultQUICBuffer       = 7 << 20 // bytes
	DefaultRetry            = "auto"
	DefaultRetryRate        = 1000 // handshakes per second
	DefaultMaxHandshakes    = 2000 // retry_in_progress: half of max_handshakes
	DefaultHandshakeTimeout = 5 * time.Second
	maxShards               = 64
	maxHandshakeLimit       = 1 << 20
	maxHandshakeTimeout     = time.Minute
)

// DefaultQUIC returns the settings of a bind with http3 and no quic block.
func DefaultQUIC() *QUIC {
	q := &QUIC{}
	q.setDefaults()
	return q
}

func (q *QUIC) setDefaults() {
	if q.Retry == "" {
		q.Retry = DefaultRetry
	}
	defaultInt(&q.RetryRate, q.At, "retry_rate", DefaultRetryRate)
	defaultInt(&q.MaxHandshakes, q.At, "max_handshakes", DefaultMaxHandshakes)
	defaultInt(&q.RetryInProgress, q.At, "retry_in_progress", max(q.MaxHandshakes/2, 1))
	defaultDuration(&q.HandshakeTimeout, q.At, "handshake_timeout", DefaultHandshakeTimeout)
	if !q.At.hasValue("rcvbuf") {
		q.RcvBuf = DefaultQUICBuffer
	}
	if !q.At.hasValue("sndbuf") {
		q.SndBuf = DefaultQUICBuffer
	}
}

func (q *QUIC) validate(http3 bool, key Pos, where string, add func(Pos, string, ...any)) {
	if !http3 {
		add(key, "%s: quic tunes HTTP/3: set http3: true on this bind, or remove quic", where)
	}
	if q.Shards < 0 || q.Shards > maxShards {
		add(q.At.Value("shards"), "%s: quic shards %d: want 1 to %d, or 0 for one per CPU (at most 8)", where, q.Shards, maxShards)
	}
	if q.ServerID != "" {
		id, err := hex.DecodeString(strings.TrimPrefix(q.ServerID, "0x"))
		if err != nil || len(id) < 1 || len(id) > 10 {
			add(q.At.Value("server_id"), "%s: quic server_id %q: want 1 to 10 bytes as hex, e.g. 0a1b", where, q.ServerID)
		}
	}
	if !slices.Contains([]string{"auto", "always", "never"}, q.Retry) {
		add(q.At.Value("retry"), "%s: quic retry %q: want auto, always or never", where, q.Retry)
	}
	for _, k := range []struct {
		name string
		v    int
	}{{"rcvbuf", q.RcvBuf}, {"sndbuf", q.SndBuf}} {
		if k.v < 0 {
			add(q.At.Value(k.name), "%s: quic %s must not be negative", where, k.name)
		}
	}
	q.validateHandshakes(where, add)
}

// validateHandshakes checks the limits on handshakes and the timeouts.
func (q *QUIC) validateHandshakes(where string, add func(Pos, string, ...any)) {
	ok := true
	for _, k := range []struct {
		name, what string
		v          int
	}{
		{"retry_rate", "handshakes per second", q.RetryRate},
		{"retry_in_progress", "handshakes in progress", q.RetryInProgress},
		{"max_handshakes", "handshakes in progress", q.MaxHandshakes},
	} {
		if k.v < 1 || k.v > maxHandshakeLimit {
			add(q.At.Value(k.name), "%s: quic %s %d: want 1 to %d %s", where, k.name, k.v, maxHandshakeLimit, k.what)
			ok = false
		}
	}
	switch {
	case !ok || q.Retry != "auto" || q.RetryInProgress < q.MaxHandshakes:
	case q.At.hasValue("retry_in_progress"):
		add(q.At.Value("retry_in_progress"), "%s: quic retry_in_progress %d: want less than max_handshakes (%d): beyond max_handshakes every new connection is refused, so Retry must start before", where, q.RetryInProgress, q.MaxHandshakes)
	default:
		add(q.At.Value("max_handshakes"), "%s: quic max_handshakes %d: want at least 2 with retry auto, whose retry_in_progress (half of max_handshakes unless set) must be less", where, q.MaxHandshakes)
	}
	if q.HandshakeTimeout <= 0 || q.HandshakeTimeout > maxHandshakeTimeout {
		add(q.At.Value("handshake_timeout"), "%s: quic handshake_timeout %s: want more than 0 and at most %s, e.g. 5s (leave it out for the default: %s)", where, q.HandshakeTimeout, maxHandshakeTimeout, DefaultHandshakeTimeout)
	}
	if q.IdleTimeout < 0 {
		add(q.At.Value("idle_timeout"), "%s: quic idle_timeout must not be negative (leave it out, or 0, for the frontend's limits.idle_timeout)", where)
	}
}
