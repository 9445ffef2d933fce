package config

import (
	"encoding/hex"
	"slices"
	"strings"
)

// QUIC defaults.
const (
	DefaultQUICBuffer = 7 << 20 // bytes
	DefaultRetry      = "auto"
	maxShards         = 64
)

func (q *QUIC) setDefaults() {
	if q.Retry == "" {
		q.Retry = DefaultRetry
	}
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
}
