package balance

import (
	"sync"
	"time"
)

// roundRobin is smooth weighted round robin, nginx's algorithm
// (ngx_http_upstream_get_peer, nginx commit 52327e0627f4): on each pick
// every eligible member's current weight grows by its effective weight, the
// member with the largest current weight wins, and the winner's current
// weight drops by the total. Over total picks each member wins exactly its
// weight, and the wins are spread out: weights 5, 1, 1 give a a b a c a a.
// Members that are not eligible neither gain nor lose.
type roundRobin struct {
	members []*Member
	now     func() time.Time

	mu      sync.Mutex
	current []int // per member, guarded by mu
}

func newRoundRobin(members []*Member, now func() time.Time) *roundRobin {
	return &roundRobin{members: members, now: now, current: make([]int, len(members))}
}

func (b *roundRobin) Pick(_ uint64, tried []*Member) *Member {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	best, total := -1, 0
	for i, m := range b.members {
		if !m.Eligible(tried) {
			continue
		}
		w := m.EffectiveWeight(now)
		b.current[i] += w
		total += w
		if best < 0 || b.current[i] > b.current[best] {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	b.current[best] -= total
	return b.members[best]
}
