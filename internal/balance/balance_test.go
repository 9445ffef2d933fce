package balance

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// Helpers shared by the tests of this package.

// newMembers returns one active, healthy primary member per weight, at
// addresses 10.0.0.1:80, 10.0.0.2:80, …
func newMembers(weights ...int) []*Member {
	ms := make([]*Member, len(weights))
	for i, w := range weights {
		ms[i] = &Member{State: NewState(fmt.Sprintf("10.0.0.%d:80", i+1)), Weight: w}
	}
	return ms
}

// seeded returns a deterministic Options.Rand.
func seeded(seed uint64) func() uint64 {
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)).Uint64
}

// mustPool builds a pool with deterministic randomness and, when now is not
// nil, that clock.
func mustPool(t testing.TB, algorithm Algorithm, ms []*Member, now func() time.Time) *Pool {
	t.Helper()
	p, err := newPool(algorithm, ms, Options{Rand: seeded(1)}, now)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// keyHash is the hash of the i-th test key.
func keyHash(i int) uint64 { return HashString(fmt.Sprintf("client-%d", i)) }

// pickCounts picks n times, the i-th with keyHash(i), without counting
// the requests in flight (they complete at once), and returns how often
// each member was picked, by index in ms.
func pickCounts(t testing.TB, p *Pool, ms []*Member, n int) []int {
	t.Helper()
	counts := make([]int, len(ms))
	for i := range n {
		m, busy := p.Pick(keyHash(i), nil)
		if m == nil {
			t.Fatalf("pick %d: nil (busy=%v)", i, busy)
		}
		counts[indexOf(ms, m)]++
	}
	return counts
}

func indexOf(ms []*Member, m *Member) int {
	for i, x := range ms {
		if x == m {
			return i
		}
	}
	panic("member not in pool")
}

// checkShares fails unless each member's share of counts is within tol
// (absolute, 0.03 = 3 percentage points) of its share of the weights.
func checkShares(t *testing.T, counts, weights []int, tol float64) {
	t.Helper()
	var n, total int
	for i := range counts {
		n += counts[i]
		total += weights[i]
	}
	for i := range counts {
		got, want := float64(counts[i])/float64(n), float64(weights[i])/float64(total)
		if math.Abs(got-want) > tol {
			t.Errorf("server %d (weight %d): share %.3f, want %.3f ± %.2f (counts %v)", i, weights[i], got, want, tol, counts)
		}
	}
}

func TestEffectiveWeightRamps(t *testing.T) {
	m := &Member{State: NewState("a:1"), Weight: 10, SlowStart: 10 * time.Second}
	up := m.State.UpSince()
	for _, c := range []struct {
		after time.Duration
		want  int
	}{
		{-time.Second, 10}, // clock went back: no ramp
		{0, 1},
		{time.Second, 1},
		{5 * time.Second, 5},
		{9999 * time.Millisecond, 9},
		{10 * time.Second, 10},
		{time.Hour, 10},
	} {
		if got := m.EffectiveWeight(up.Add(c.after)); got != c.want {
			t.Errorf("%v after coming up: weight %d, want %d", c.after, got, c.want)
		}
	}
	m.SlowStart = 0
	if got := m.EffectiveWeight(up); got != 10 {
		t.Errorf("without slow start: weight %d, want 10", got)
	}
}

func TestEligible(t *testing.T) {
	ms := newMembers(1, 1)
	a, b := ms[0], ms[1]
	if !a.Eligible(nil) || !a.Eligible([]*Member{b}) {
		t.Error("an active, healthy member that was not tried is not eligible")
	}
	if a.Eligible([]*Member{b, a}) {
		t.Error("a tried member is eligible")
	}
	a.MaxConns = 2
	a.State.Acquire()
	if !a.Eligible(nil) || a.Full() {
		t.Error("1 of max 2 in flight: not eligible")
	}
	a.State.Acquire()
	if a.Eligible(nil) || !a.Full() {
		t.Error("2 of max 2 in flight: still eligible")
	}
	a.State.Release()
	for _, admin := range []Admin{Drain, Disabled} {
		b.State.SetAdmin(admin)
		if b.Eligible(nil) {
			t.Errorf("%v member is eligible", admin)
		}
	}
	b.State.SetAdmin(Active)
	b.State.SetHealthy(false)
	if b.Eligible(nil) {
		t.Error("unhealthy member is eligible")
	}
}
