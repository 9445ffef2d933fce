package balance

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestNewPoolAlgorithms(t *testing.T) {
	for _, a := range []Algorithm{"", RoundRobin, LeastConn, Random, Hash} {
		ms := newMembers(1, 1)
		p, err := NewPool(a, ms, Options{})
		if err != nil {
			t.Errorf("%q: %v", a, err)
			continue
		}
		if got := p.Members(); len(got) != 2 || got[0] != ms[0] || got[1] != ms[1] {
			t.Errorf("%q: Members() = %v", a, got)
		}
	}
	_, err := NewPool("roundrobin", newMembers(1), Options{})
	if err == nil || !strings.Contains(err.Error(), `"roundrobin"`) ||
		!strings.Contains(err.Error(), "round_robin, least_conn, random, hash") {
		t.Errorf("unknown algorithm: error %v, want it to name the algorithm and list the valid ones", err)
	}
	bad := newMembers(1, 0)
	if _, err := NewPool("", bad, Options{}); err == nil || !strings.Contains(err.Error(), bad[1].State.Address) {
		t.Errorf("weight 0: error %v, want one naming the server", err)
	}
	if _, err := NewPool("", []*Member{{Weight: 1}}, Options{}); err == nil {
		t.Error("member without State: no error")
	}
}

func TestEmptyPool(t *testing.T) {
	p, err := NewPool(Hash, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if m, busy := p.Pick(1, nil); m != nil || busy {
		t.Errorf("empty pool: %v, %v", m, busy)
	}
}

// algorithmsUnder runs f once per algorithm.
func algorithmsUnder(t *testing.T, f func(t *testing.T, algorithm Algorithm)) {
	for _, a := range algorithms {
		t.Run(string(a), func(t *testing.T) { f(t, a) })
	}
}

func TestSharesFollowWeights(t *testing.T) {
	// Requests complete at once (nothing stays in flight); hash spreads
	// 10,000 different keys.
	for _, a := range algorithms {
		for _, weights := range [][]int{{1, 2, 7}, {5, 3, 2}} {
			t.Run(fmt.Sprintf("%s/%v", a, weights), func(t *testing.T) {
				tol := 0.03
				if a == Hash {
					tol = 0.05
				}
				ms := newMembers(weights...)
				checkShares(t, pickCounts(t, mustPool(t, a, ms, nil), ms, 10000), weights, tol)
			})
		}
	}
}

func TestNeverPicksIneligible(t *testing.T) {
	algorithmsUnder(t, func(t *testing.T, a Algorithm) {
		ms := newMembers(1, 1, 1, 1, 1, 1)
		ms[1].State.SetAdmin(Drain)
		ms[2].State.SetAdmin(Disabled)
		ms[3].State.SetHealthy(false)
		ms[4].MaxConns = 1
		ms[4].State.Acquire()
		tried := []*Member{ms[5]}
		p := mustPool(t, a, ms, nil)
		for i := range 1000 {
			m, busy := p.Pick(keyHash(i), tried)
			if m != ms[0] || busy {
				t.Fatalf("pick %d: %v busy=%v, want the one eligible server", i, m.State.Address, busy)
			}
		}
	})
}

func TestNothingUsable(t *testing.T) {
	algorithmsUnder(t, func(t *testing.T, a Algorithm) {
		ms := newMembers(1, 1, 1)
		ms = append(ms, &Member{State: NewState("10.0.1.1:80"), Weight: 1, Backup: true})
		p := mustPool(t, a, ms, nil)
		ms[0].State.SetHealthy(false)
		ms[1].State.SetAdmin(Disabled)
		ms[2].State.SetAdmin(Drain)
		ms[3].State.SetHealthy(false)
		if m, busy := p.Pick(1, nil); m != nil || busy {
			t.Errorf("all down: %v busy=%v, want nil, false (503)", m, busy)
		}
		// Every server tried: nothing left either.
		for _, m := range ms {
			m.State.SetHealthy(true)
			m.State.SetAdmin(Active)
		}
		if m, busy := p.Pick(1, ms); m != nil || busy {
			t.Errorf("all tried: %v busy=%v, want nil, false", m, busy)
		}
	})
}

func TestAllFullIsBusy(t *testing.T) {
	algorithmsUnder(t, func(t *testing.T, a Algorithm) {
		ms := newMembers(1, 2)
		for _, m := range ms {
			m.MaxConns = 2
			m.State.Acquire()
			m.State.Acquire()
		}
		backup := &Member{State: NewState("10.0.1.1:80"), Weight: 1, Backup: true}
		p := mustPool(t, a, append(ms, backup), nil)
		if m, busy := p.Pick(1, nil); m != nil || !busy {
			t.Errorf("primaries full: %v busy=%v, want nil, true (queue, not the backup)", m, busy)
		}
		// The only usable primary was tried (and is full): the retry goes
		// to the backup rather than waiting for a server that failed it.
		ms[1].State.SetHealthy(false)
		if m, busy := p.Pick(1, []*Member{ms[0]}); m != backup || busy {
			t.Errorf("only usable primary tried: %v busy=%v, want the backup", m, busy)
		}
		ms[0].State.Release()
		if m, busy := p.Pick(1, nil); m != ms[0] || busy {
			t.Errorf("a slot freed: %v busy=%v", m, busy)
		}
	})
}

func TestBackupsOnlyWithoutUsablePrimary(t *testing.T) {
	algorithmsUnder(t, func(t *testing.T, a Algorithm) {
		primaries := newMembers(1, 1)
		backups := []*Member{
			{State: NewState("10.0.1.1:80"), Weight: 1, Backup: true},
			{State: NewState("10.0.1.2:80"), Weight: 1, Backup: true},
		}
		ms := []*Member{backups[0], primaries[0], backups[1], primaries[1]}
		p := mustPool(t, a, ms, nil)
		isBackup := func(m *Member) bool { return m != nil && m.Backup }

		for i := range 200 {
			if m, _ := p.Pick(keyHash(i), nil); m == nil || isBackup(m) {
				t.Fatalf("primaries up: pick %d went to %v", i, m)
			}
		}
		primaries[0].State.SetHealthy(false)
		for i := range 200 {
			if m, _ := p.Pick(keyHash(i), nil); m != primaries[1] {
				t.Fatalf("one primary up: pick %d went to %v", i, m)
			}
		}
		primaries[1].State.SetAdmin(Drain)
		seen := map[*Member]int{}
		for i := range 200 {
			m, busy := p.Pick(keyHash(i), nil)
			if !isBackup(m) || busy {
				t.Fatalf("no primary usable: pick %d went to %v busy=%v", i, m, busy)
			}
			seen[m]++
		}
		if a != Hash && len(seen) != 2 {
			t.Errorf("backups are balanced like primaries: picks %v", seen)
		}
		primaries[0].State.SetHealthy(true)
		for i := range 200 {
			if m, _ := p.Pick(keyHash(i), nil); m != primaries[0] {
				t.Fatalf("a primary is back: pick %d went to %v", i, m)
			}
		}
	})
}

func TestSlowStart(t *testing.T) {
	algorithmsUnder(t, func(t *testing.T, a Algorithm) {
		const ramp = 10 * time.Second
		ms := newMembers(10, 10)
		ms[1].SlowStart = ramp
		ms[1].State.SetHealthy(false)
		ms[1].State.SetHealthy(true)
		up := ms[1].State.UpSince()
		clock := &fakeClock{t: up}
		p := mustPool(t, a, ms, clock.now)

		share := func() float64 {
			return float64(pickCounts(t, p, ms, 10000)[1]) / 10000
		}
		for _, c := range []struct {
			after    time.Duration
			min, max float64
		}{
			{0, 0, 0.13},            // weight 1 of 11: about 9%
			{ramp / 2, 0.28, 0.38},  // weight 5 of 15: about 33%
			{ramp, 0.45, 0.55},      // full weight: half
			{10 * ramp, 0.45, 0.55}, // and it stays there
		} {
			clock.set(up.Add(c.after))
			if s := share(); s < c.min || s > c.max {
				t.Errorf("%v after coming up: share %.3f, want %.2f to %.2f", c.after, s, c.min, c.max)
			}
		}
	})
}

func TestPickDoesNotAllocate(t *testing.T) {
	algorithmsUnder(t, func(t *testing.T, a Algorithm) {
		ms := newMembers(1, 2, 3, 4, 5)
		ms[2].SlowStart = time.Minute // exercise the clock too
		ms = append(ms, &Member{State: NewState("10.0.1.1:80"), Weight: 1, Backup: true})
		p, err := NewPool(a, ms, Options{})
		if err != nil {
			t.Fatal(err)
		}
		tried := []*Member{ms[0], ms[1]}
		var h uint64
		if n := testing.AllocsPerRun(1000, func() {
			h += 0x9e3779b97f4a7c15
			p.Pick(h, tried)
		}); n != 0 {
			t.Errorf("Pick allocates %v times", n)
		}
		for _, m := range ms[:5] {
			m.State.SetHealthy(false)
		}
		if n := testing.AllocsPerRun(1000, func() { p.Pick(h, nil) }); n != 0 {
			t.Errorf("Pick of a backup allocates %v times", n)
		}
	})
}

func TestPickConcurrently(t *testing.T) {
	// Run with -race: picks, request accounting and state changes at once.
	algorithmsUnder(t, func(t *testing.T, a Algorithm) {
		ms := newMembers(1, 2, 3)
		for _, m := range ms {
			m.MaxConns = 4
			m.SlowStart = time.Millisecond
		}
		p := mustPool(t, a, ms, nil)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := range 200 {
				ms[i%3].State.SetHealthy(i%2 == 0)
			}
		}()
		n := concurrently(func() bool {
			for i := range 200 {
				m, _ := p.Pick(uint64(i), nil)
				if m != nil && m.State.TryAcquire(m.MaxConns) {
					m.State.Release()
				}
			}
			return true
		})
		<-done
		if n != 50 {
			t.Fatal("not every worker finished")
		}
	})
}

// benchCase is one pool shape of the pick benchmarks.
type benchCase struct {
	algorithm Algorithm
	members   int
	equal     bool // all weights 1 (else weights 1 to 4)
}

func (c benchCase) String() string {
	s := fmt.Sprintf("%s/members=%d", c.algorithm, c.members)
	if c.equal {
		s += "/equal_weights"
	}
	return s
}

func benchCases() []benchCase {
	var cs []benchCase
	for _, a := range algorithms {
		for _, n := range []int{3, 20} {
			cs = append(cs, benchCase{a, n, false})
		}
	}
	// Hash has a shortcut for equal weights (no logarithm).
	return append(cs, benchCase{Hash, 3, true}, benchCase{Hash, 20, true})
}

func BenchmarkPick(b *testing.B) {
	for _, c := range benchCases() {
		b.Run(c.String(), func(b *testing.B) {
			p := benchPool(b, c)
			b.ReportAllocs()
			var h uint64
			for b.Loop() {
				h += 0x9e3779b97f4a7c15
				if m, _ := p.Pick(h, nil); m == nil {
					b.Fatal("nil pick")
				}
			}
		})
	}
}

func BenchmarkPickParallel(b *testing.B) {
	for _, c := range benchCases() {
		b.Run(c.String(), func(b *testing.B) {
			p := benchPool(b, c)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				var h uint64
				for pb.Next() {
					h += 0x9e3779b97f4a7c15
					if m, _ := p.Pick(h, nil); m == nil {
						b.Error("nil pick")
						return
					}
				}
			})
		})
	}
}

// benchPool is a pool as NewPool builds it in production (default random
// source, real clock, no slow start).
func benchPool(b *testing.B, c benchCase) *Pool {
	weights := make([]int, c.members)
	for i := range weights {
		weights[i] = 1
		if !c.equal {
			weights[i] += i % 4
		}
	}
	p, err := NewPool(c.algorithm, newMembers(weights...), Options{})
	if err != nil {
		b.Fatal(err)
	}
	return p
}
