package balance

import "time"

// Member is one server of a compiled backend: its configuration, which is
// immutable, and its live State, which is shared across reloads.
type Member struct {
	State *State
	// Weight is the server's share relative to the others, ≥ 1. Default 1.
	Weight int
	// Backup members are used only when no primary member is usable.
	Backup bool
	// MaxConns limits concurrent requests at the server; 0 means no limit.
	MaxConns int
	// SlowStart ramps a server's weight up from near zero to Weight over
	// this long after it becomes usable; 0 means no ramp.
	SlowStart time.Duration
	// ID is a stable opaque identifier of the server (for sticky cookies).
	ID string
}

// EffectiveWeight is Weight scaled down during slow start, never below 1.
func (m *Member) EffectiveWeight(now time.Time) int {
	if m.SlowStart <= 0 {
		return m.Weight
	}
	up := now.Sub(m.State.UpSince())
	if up >= m.SlowStart || up < 0 {
		return m.Weight
	}
	w := int(int64(m.Weight) * int64(up) / int64(m.SlowStart))
	if w < 1 {
		w = 1
	}
	return w
}

// Full reports whether the server is at its MaxConns.
func (m *Member) Full() bool {
	return m.MaxConns > 0 && m.State.InFlight() >= int64(m.MaxConns)
}

// Eligible reports whether m may take a new request now: usable, not
// full, and not among tried (the servers this request already failed on).
func (m *Member) Eligible(tried []*Member) bool {
	if !m.State.Usable() || m.Full() {
		return false
	}
	for _, t := range tried {
		if t == m {
			return false
		}
	}
	return true
}

// Balancer picks one of a fixed set of members.
type Balancer interface {
	// Pick returns an eligible member (see Member.Eligible), or nil when
	// there is none. hash is the request's key for hash balancing (ignored
	// by the others). Pick must not allocate.
	Pick(hash uint64, tried []*Member) *Member
}
