package balance

import (
	"math/bits"
	"sync"
	"time"
)

// random is the power of two choices (Mitzenmacher, "The Power of Two
// Choices in Randomized Load Balancing", 2001): draw two members at random,
// each with probability proportional to its effective weight, and send the
// request to the one with fewer requests in flight relative to its weight;
// on a tie, the first. When requests finish before the next one starts,
// that makes the shares follow the weights exactly; under load it steers
// away from slow servers without the herding of a global least-connections
// choice across many proxies.
//
// The two draws are independent (with replacement), so a member with most
// of the weight may be drawn twice; drawing without replacement would skew
// the shares away from the weights.
type random struct {
	members []*Member
	now     func() time.Time
	rand    func() uint64
	mu      *sync.Mutex // non-nil: rand is called under it
}

// newRandom returns the balancer; when mu is not nil, rand is called under
// it.
func newRandom(members []*Member, rand func() uint64, mu *sync.Mutex, now func() time.Time) *random {
	return &random{members: members, now: now, rand: rand, mu: mu}
}

func (b *random) Pick(_ uint64, tried []*Member) *Member {
	now := b.now()
	var total uint64
	for _, m := range b.members {
		if m.Eligible(tried) {
			total += uint64(m.EffectiveWeight(now))
		}
	}
	if total == 0 {
		return nil
	}
	if b.mu != nil {
		b.mu.Lock()
	}
	x, y := b.rand(), b.rand()
	if b.mu != nil {
		b.mu.Unlock()
	}
	// Uniform in [0, total) by multiply-shift (Lemire); the bias is at most
	// total/2^64.
	r1, _ := bits.Mul64(x, total)
	r2, _ := bits.Mul64(y, total)

	var first, second, last *Member
	var w1, w2, lastW int64
	var acc uint64
	for _, m := range b.members {
		if !m.Eligible(tried) {
			continue
		}
		w := m.EffectiveWeight(now)
		acc += uint64(w)
		last, lastW = m, int64(w)
		if first == nil && r1 < acc {
			first, w1 = m, int64(w)
		}
		if second == nil && r2 < acc {
			second, w2 = m, int64(w)
		}
		if first != nil && second != nil {
			break
		}
	}
	// Members may have become ineligible since the first pass; then a draw
	// can run past the end, and the last eligible member stands in.
	if first == nil {
		first, w1 = last, lastW
	}
	if second == nil {
		second, w2 = last, lastW
	}
	if first == nil || first == second {
		return first
	}
	if second.State.InFlight()*w1 < first.State.InFlight()*w2 {
		return second
	}
	return first
}
