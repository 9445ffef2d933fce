package balance

import "testing"

func TestLeastConnPrefersIdle(t *testing.T) {
	ms := newMembers(1, 1)
	p := mustPool(t, LeastConn, ms, nil)
	for range 5 {
		ms[0].State.Acquire()
	}
	for i := range 100 {
		if m, _ := p.Pick(0, nil); m != ms[1] {
			t.Fatalf("pick %d: %s (5 in flight) instead of the idle server", i, m.State.Address)
		}
	}
}

func TestLeastConnAlternatesOnEqualLoad(t *testing.T) {
	ms := newMembers(1, 1)
	p := mustPool(t, LeastConn, ms, nil)
	for _, m := range ms {
		m.State.Acquire()
		m.State.Acquire()
	}
	if got := sequence(t, p, ms, 8); got != "abababab" {
		t.Errorf("equal load: picks %s, want abababab", got)
	}
}

func TestLeastConnBalancesHeldRequests(t *testing.T) {
	// Requests that stay in flight: load follows the weights.
	weights := []int{1, 3, 2}
	ms := newMembers(weights...)
	p := mustPool(t, LeastConn, ms, nil)
	for range 600 {
		m, _ := p.Pick(0, nil)
		m.State.Acquire()
	}
	for i, m := range ms {
		if want := int64(100 * weights[i]); m.State.InFlight() != want {
			t.Errorf("server %d (weight %d): %d in flight, want %d", i, weights[i], m.State.InFlight(), want)
		}
	}
	// The heaviest finishes its work: new requests go there first.
	for range 300 {
		ms[1].State.Release()
	}
	for i := range 150 {
		if m, _ := p.Pick(0, nil); m != ms[1] {
			t.Fatalf("pick %d after server 1 emptied: %s", i, m.State.Address)
		} else {
			m.State.Acquire()
		}
	}
}

func TestLeastConnRelativeToWeight(t *testing.T) {
	// 3 in flight at weight 3 is a lighter load than 2 at weight 1.
	ms := newMembers(1, 3)
	p := mustPool(t, LeastConn, ms, nil)
	ms[0].State.Acquire()
	ms[0].State.Acquire()
	for range 3 {
		ms[1].State.Acquire()
	}
	if m, _ := p.Pick(0, nil); m != ms[1] {
		t.Errorf("picked weight 1 with 2 in flight over weight 3 with 3 in flight")
	}
}
