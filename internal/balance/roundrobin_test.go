package balance

import (
	"strings"
	"testing"
)

// sequence picks n times and names each pick by its index: a, b, c, …
func sequence(t *testing.T, p *Pool, ms []*Member, n int) string {
	t.Helper()
	var sb strings.Builder
	for range n {
		m, _ := p.Pick(0, nil)
		if m == nil {
			t.Fatal("pick: nil")
		}
		sb.WriteByte(byte('a' + indexOf(ms, m)))
	}
	return sb.String()
}

func TestRoundRobinInterleaves(t *testing.T) {
	for _, c := range []struct {
		weights []int
		want    string
	}{
		{[]int{5, 1, 1}, "aabacaa" + "aabacaa"},
		{[]int{1, 1, 1}, "abcabc"},
		{[]int{2, 1}, "abaaba"},
		{[]int{3, 2}, "ababa" + "ababa"},
	} {
		ms := newMembers(c.weights...)
		if got := sequence(t, mustPool(t, RoundRobin, ms, nil), ms, len(c.want)); got != c.want {
			t.Errorf("weights %v: picks %s, want %s", c.weights, got, c.want)
		}
	}
}

func TestRoundRobinNoLongRuns(t *testing.T) {
	// The heaviest server never takes its whole weight in a row while the
	// others wait. With 5,1,1 each cycle is a a b a c a a, so at most four
	// in a row (across the seam of two cycles), never five.
	ms := newMembers(5, 1, 1)
	seq := sequence(t, mustPool(t, RoundRobin, ms, nil), ms, 700)
	if strings.Contains(seq, "aaaaa") {
		t.Errorf("weight-many picks of the same server in a row: %s", seq[:70])
	}
	// With 5,3,2 the heavy server never takes more than two in a row.
	ms = newMembers(5, 3, 2)
	seq = sequence(t, mustPool(t, RoundRobin, ms, nil), ms, 1000)
	if strings.Contains(seq, "aaa") {
		t.Errorf("5,3,2: three picks of the same server in a row: %s", seq[:50])
	}
}

func TestRoundRobinExactOverOneCycle(t *testing.T) {
	ms := newMembers(5, 3, 2)
	counts := pickCounts(t, mustPool(t, RoundRobin, ms, nil), ms, 10)
	for i, want := range []int{5, 3, 2} {
		if counts[i] != want {
			t.Errorf("one cycle of 10 picks: %v, want 5 3 2", counts)
			break
		}
	}
}

func TestRoundRobinSkipsAndResumes(t *testing.T) {
	ms := newMembers(1, 1, 1)
	p := mustPool(t, RoundRobin, ms, nil)
	ms[1].State.SetAdmin(Drain)
	if got := sequence(t, p, ms, 6); got != "acacac" {
		t.Errorf("b drained: picks %s, want acacac", got)
	}
	ms[1].State.SetAdmin(Active)
	counts := pickCounts(t, p, ms, 300)
	for _, n := range counts {
		if n < 99 || n > 101 {
			t.Errorf("b back: counts %v, want about 100 each", counts)
			break
		}
	}
}
