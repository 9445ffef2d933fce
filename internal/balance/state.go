// Package balance chooses a server for each request. It holds the live
// state of servers (in-flight count, health, administrative state), which
// outlives any one configuration, and one small type per algorithm behind
// the Balancer interface.
package balance

import (
	"sync/atomic"
	"time"
)

// State is the live state of one server. It is shared by the balancer, the
// health checks and the proxy, and it survives reloads: the runtime keeps
// one State per backend name and server address. All methods are safe for
// concurrent use.
type State struct {
	// Address is the server's "host:port". Immutable.
	Address string

	inflight atomic.Int64
	down     atomic.Bool  // health: false (up) until a check says otherwise
	admin    atomic.Int32 // Admin
	upSince  atomic.Int64 // unix nanoseconds when it last became usable, for slow start
}

// NewState returns the state of a server that is up and active.
func NewState(address string) *State {
	s := &State{Address: address}
	s.upSince.Store(time.Now().UnixNano())
	return s
}

// InFlight is the number of requests at the server now.
func (s *State) InFlight() int64 { return s.inflight.Load() }

// Acquire counts a request that starts at the server.
func (s *State) Acquire() { s.inflight.Add(1) }

// Release counts a request that ended.
func (s *State) Release() { s.inflight.Add(-1) }

// TryAcquire counts a request that starts at the server if fewer than max
// are in flight (max ≤ 0: no limit). It reports whether it counted it.
func (s *State) TryAcquire(max int) bool {
	if max <= 0 {
		s.inflight.Add(1)
		return true
	}
	for {
		n := s.inflight.Load()
		if n >= int64(max) {
			return false
		}
		if s.inflight.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Healthy reports whether health checks consider the server up.
func (s *State) Healthy() bool { return !s.down.Load() }

// SetHealthy records the health verdict and reports whether it changed.
// Coming up restarts the slow-start ramp.
func (s *State) SetHealthy(up bool) (changed bool) {
	if s.down.Swap(!up) == !up {
		return false
	}
	if up && s.Admin() == Active {
		s.upSince.Store(time.Now().UnixNano())
	}
	return true
}

// Admin returns the administrative state.
func (s *State) Admin() Admin { return Admin(s.admin.Load()) }

// SetAdmin sets the administrative state and reports whether it changed.
// It is the one call that drains, disables or re-activates a server, for
// reloads and for a runtime API: draining takes effect for the next pick;
// in-flight requests are never cut.
func (s *State) SetAdmin(a Admin) (changed bool) {
	old := Admin(s.admin.Swap(int32(a)))
	if old != a && a == Active {
		s.upSince.Store(time.Now().UnixNano())
	}
	return old != a
}

// Usable reports whether the server may take a new request: active and
// healthy.
func (s *State) Usable() bool { return s.Admin() == Active && s.Healthy() }

// UpSince is when the server last became usable.
func (s *State) UpSince() time.Time { return time.Unix(0, s.upSince.Load()) }
