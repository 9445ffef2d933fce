package balance

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Options tune a Pool. The zero value is ready to use.
type Options struct {
	// Rand returns uniformly random 64-bit values for the random
	// algorithm (other algorithms ignore it). The Pool calls it under its
	// own lock, so it need not be safe for concurrent use: a seeded
	// math/rand/v2 generator's Uint64 makes picks reproducible in tests.
	// Nil: math/rand/v2's Uint64 (ChaCha8, randomly seeded per process),
	// called without a lock.
	Rand func() uint64
}

// Pool chooses a server of one backend for each request: primary members
// by the backend's algorithm, backup members (by the same algorithm) only
// when no primary can be used. It is safe for concurrent use.
type Pool struct {
	members []*Member
	primary tier
	backup  tier
}

// tier is the primaries or the backups of a pool.
type tier struct {
	members []*Member
	bal     Balancer // nil when members is empty
}

// NewPool returns the pool of members balanced by algorithm (RoundRobin
// also when algorithm is ""). Every member needs a State and a Weight of
// at least 1.
func NewPool(algorithm Algorithm, members []*Member, opt Options) (*Pool, error) {
	return newPool(algorithm, members, opt, nil)
}

// newPool is NewPool with a clock for slow start; nil means time.Now.
func newPool(algorithm Algorithm, members []*Member, opt Options, now func() time.Time) (*Pool, error) {
	if algorithm == "" {
		algorithm = RoundRobin
	}
	if !slices.Contains(algorithms, algorithm) {
		return nil, fmt.Errorf("balance: unknown algorithm %q: use one of %s", algorithm, algorithmList())
	}
	p := &Pool{members: append([]*Member(nil), members...)}
	for i, m := range p.members {
		switch {
		case m == nil || m.State == nil:
			return nil, fmt.Errorf("balance: member %d has no State: build it with NewState(address)", i)
		case m.Weight < 1:
			return nil, fmt.Errorf("balance: server %s: weight %d, want at least 1 (to take a server out, drain or disable it)", m.State.Address, m.Weight)
		}
		if m.Backup {
			p.backup.members = append(p.backup.members, m)
		} else {
			p.primary.members = append(p.primary.members, m)
		}
	}
	// One lock for a caller's Rand, shared by both tiers.
	var randMu *sync.Mutex
	if opt.Rand != nil {
		randMu = new(sync.Mutex)
	}
	for _, t := range []*tier{&p.primary, &p.backup} {
		if len(t.members) == 0 {
			continue
		}
		clock := now
		if clock == nil {
			clock = defaultClock(t.members)
		}
		switch algorithm {
		case RoundRobin:
			t.bal = newRoundRobin(t.members, clock)
		case LeastConn:
			t.bal = newLeastConn(t.members, clock)
		case Random:
			if opt.Rand != nil {
				t.bal = newRandom(t.members, opt.Rand, randMu, clock)
			} else {
				t.bal = newRandom(t.members, rand.Uint64, nil, clock)
			}
		case Hash:
			t.bal = newRendezvous(t.members, clock)
		}
	}
	return p, nil
}

// defaultClock is time.Now when some member ramps up with slow start, and
// otherwise a stub that saves the clock read on every pick (a member
// without SlowStart ignores the time).
func defaultClock(members []*Member) func() time.Time {
	for _, m := range members {
		if m.SlowStart > 0 {
			return time.Now
		}
	}
	return func() time.Time { return time.Time{} }
}

// Members returns every member of the pool, primaries and backups, in the
// order given to NewPool. The caller must not modify the slice.
func (p *Pool) Members() []*Member { return p.members }

// Pick chooses the member for a request. hash is the request's key (see
// HashString), used by the hash algorithm and ignored by the others; tried
// lists the members this request already failed on (nil on the first try).
//
// Primaries are used while one is usable (active and healthy) and not in
// tried; only then are backups considered, the same way. A member that is
// at its MaxConns is still usable: when every usable, untried member of
// the tier in use is full, Pick returns (nil, true) and the caller queues
// the request rather than spilling to backups. (nil, false) means nothing
// is usable: answer 503.
//
// A member returned is not yet counted: the caller counts the request with
// m.State.TryAcquire(m.MaxConns), which can still fail under a race, and
// then picks again or queues. Pick does not allocate.
func (p *Pool) Pick(hash uint64, tried []*Member) (m *Member, busy bool) {
	if m := p.primary.pick(hash, tried); m != nil {
		return m, false
	}
	if p.primary.open(tried) {
		return nil, true
	}
	if m := p.backup.pick(hash, tried); m != nil {
		return m, false
	}
	return nil, p.backup.open(tried)
}

func (t *tier) pick(hash uint64, tried []*Member) *Member {
	if t.bal == nil {
		return nil
	}
	return t.bal.Pick(hash, tried)
}

// open reports whether some member of t is usable and not in tried.
func (t *tier) open(tried []*Member) bool {
	for _, m := range t.members {
		if m.State.Usable() && !slices.Contains(tried, m) {
			return true
		}
	}
	return false
}
