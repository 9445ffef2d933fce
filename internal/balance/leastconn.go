package balance

import (
	"sync"
	"time"
)

// leastConn sends a request to the eligible member with the fewest requests
// in flight relative to its (effective) weight: a beats b when
// inflight_a/weight_a < inflight_b/weight_b, compared as
// inflight_a*weight_b < inflight_b*weight_a to stay in integers.
//
// Ties are broken by smooth weighted round robin among the tied members, as
// nginx's least_conn does, rather than by member order: equal idle servers
// share the load instead of the first one taking it all, and when requests
// finish before the next one starts (everyone at zero) the shares follow
// the weights.
type leastConn struct {
	members []*Member
	now     func() time.Time

	mu sync.Mutex
	// Guarded by mu, one entry per member.
	current []int   // round-robin current weight, for ties
	weight  []int   // effective weight in this pick; 0: not eligible
	load    []int64 // in flight in this pick
}

func newLeastConn(members []*Member, now func() time.Time) *leastConn {
	n := len(members)
	return &leastConn{
		members: members,
		now:     now,
		current: make([]int, n),
		weight:  make([]int, n),
		load:    make([]int64, n),
	}
}

func (b *leastConn) Pick(_ uint64, tried []*Member) *Member {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	// One snapshot of load and weight per member, so both passes see the
	// same numbers while requests start and end concurrently.
	best, ties := -1, 0
	for i, m := range b.members {
		b.weight[i] = 0
		if !m.Eligible(tried) {
			continue
		}
		w, in := m.EffectiveWeight(now), m.State.InFlight()
		b.weight[i], b.load[i] = w, in
		if best < 0 {
			best, ties = i, 1
			continue
		}
		l, r := in*int64(b.weight[best]), b.load[best]*int64(w)
		switch {
		case l < r:
			best, ties = i, 1
		case l == r:
			ties++
		}
	}
	if ties <= 1 {
		if best < 0 {
			return nil
		}
		return b.members[best]
	}
	bestIn, bestW := b.load[best], int64(b.weight[best])
	pick, total := -1, 0
	for i := best; i < len(b.members); i++ {
		w := b.weight[i]
		if w == 0 || b.load[i]*bestW != bestIn*int64(w) {
			continue
		}
		b.current[i] += w
		total += w
		if pick < 0 || b.current[i] > b.current[pick] {
			pick = i
		}
	}
	b.current[pick] -= total
	return b.members[pick]
}
