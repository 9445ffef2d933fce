package balance

import (
	"fmt"
	"testing"
	"time"
)

// mapping returns, for keys 0..n-1, the address each lands on.
func mapping(t *testing.T, p *Pool, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range n {
		m, _ := p.Pick(keyHash(i), nil)
		if m == nil {
			t.Fatalf("key %d: no server", i)
		}
		out[i] = m.State.Address
	}
	return out
}

const keys = 10000

func TestHashStringIsStable(t *testing.T) {
	// These values are a contract: instances and restarts must agree. A
	// change here remaps every hashed client. (FNV-1a 64 of "" is its
	// offset basis 0xcbf29ce484222325, of "a" 0xaf63dc4c8601ec8c; these are
	// those through fmix64.)
	for s, want := range map[string]uint64{
		"":              0xefd01f60ba992926,
		"a":             0x82a2a958a9bece5b,
		"203.0.113.7":   0x987c7c1923965ade,
		"/index.html?x": 0x587dafe237e29cc6,
	} {
		if got := HashString(s); got != want {
			t.Errorf("HashString(%q) = %#x, want %#x", s, got, want)
		}
		if got := HashBytes([]byte(s)); got != want {
			t.Errorf("HashBytes(%q) = %#x, want %#x", s, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { HashString("203.0.113.7") }); n != 0 {
		t.Errorf("HashString allocates %v times", n)
	}
}

func TestHashSameKeySameServer(t *testing.T) {
	ms := newMembers(1, 2, 3, 1, 1)
	first := mapping(t, mustPool(t, Hash, ms, nil), keys)
	again := mapping(t, mustPool(t, Hash, ms, nil), keys)
	// Another instance, which lists the servers in another order and has
	// its own State objects, agrees.
	other := newMembers(1, 2, 3, 1, 1)
	reversed := []*Member{other[4], other[3], other[2], other[1], other[0]}
	elsewhere := mapping(t, mustPool(t, Hash, reversed, nil), keys)
	for i := range keys {
		if first[i] != again[i] || first[i] != elsewhere[i] {
			t.Fatalf("key %d: %s, then %s, on another instance %s", i, first[i], again[i], elsewhere[i])
		}
	}
}

func TestHashRemoveMovesOnlyRemovedKeys(t *testing.T) {
	ms := newMembers(1, 1, 1, 1, 1)
	before := mapping(t, mustPool(t, Hash, ms, nil), keys)
	gone := ms[2].State.Address
	after := mapping(t, mustPool(t, Hash, []*Member{ms[0], ms[1], ms[3], ms[4]}, nil), keys)
	moved := 0
	for i := range keys {
		if before[i] == after[i] {
			continue
		}
		moved++
		if before[i] != gone {
			t.Fatalf("key %d moved from %s to %s, but only %s was removed", i, before[i], after[i], gone)
		}
	}
	if moved > keys*30/100 {
		t.Errorf("removing one of five servers moved %d of %d keys, want at most 30%%", moved, keys)
	}
	if moved == 0 {
		t.Error("removing a server moved no keys")
	}
}

func TestHashAddMovesKeysOnlyToNewServer(t *testing.T) {
	ms := newMembers(1, 1, 1, 1, 1, 1)
	before := mapping(t, mustPool(t, Hash, ms[:5], nil), keys)
	after := mapping(t, mustPool(t, Hash, ms, nil), keys)
	added := ms[5].State.Address
	moved := 0
	for i := range keys {
		if before[i] == after[i] {
			continue
		}
		moved++
		if after[i] != added {
			t.Fatalf("key %d moved from %s to %s, not to the added %s", i, before[i], after[i], added)
		}
	}
	if moved > keys*30/100 || moved == 0 {
		t.Errorf("adding a sixth server moved %d of %d keys, want about 1/6", moved, keys)
	}
}

func TestHashDownServerFallsBackAndReturns(t *testing.T) {
	ms := newMembers(1, 1, 1, 1, 1)
	p := mustPool(t, Hash, ms, nil)
	before := mapping(t, p, keys)
	down := ms[1]
	down.State.SetHealthy(false)
	during := mapping(t, p, keys)
	for i := range keys {
		switch {
		case during[i] == down.State.Address:
			t.Fatalf("key %d still goes to the down server", i)
		case before[i] != down.State.Address && during[i] != before[i]:
			t.Fatalf("key %d moved from %s to %s, but only %s went down", i, before[i], during[i], down.State.Address)
		}
	}
	down.State.SetHealthy(true)
	after := mapping(t, p, keys)
	for i := range keys {
		if after[i] != before[i] {
			t.Fatalf("key %d: %s before, %s after the server came back", i, before[i], after[i])
		}
	}
}

func TestHashRespectsWeights(t *testing.T) {
	for _, weights := range [][]int{{1, 2, 7}, {5, 3, 2}, {1, 1, 1, 1, 1}} {
		t.Run(fmt.Sprint(weights), func(t *testing.T) {
			ms := newMembers(weights...)
			checkShares(t, pickCounts(t, mustPool(t, Hash, ms, nil), ms, keys), weights, 0.05)
		})
	}
}

func TestHashUsesIDOverAddress(t *testing.T) {
	// A server that keeps its ID keeps its keys when its address changes.
	ms := newMembers(1, 1, 1)
	for i, m := range ms {
		m.ID = fmt.Sprintf("s%d", i)
	}
	before := mapping(t, mustPool(t, Hash, ms, nil), keys)
	moved := &Member{State: NewState("10.9.9.9:80"), Weight: 1, ID: ms[1].ID}
	after := mapping(t, mustPool(t, Hash, []*Member{ms[0], moved, ms[2]}, nil), keys)
	for i := range keys {
		if (before[i] == ms[1].State.Address) != (after[i] == moved.State.Address) {
			t.Fatalf("key %d: %s before, %s after the address change", i, before[i], after[i])
		}
	}
}

func TestHashEqualWeightsShortcut(t *testing.T) {
	// Equal weights skip the logarithm; the mapping must be the one the
	// scores give. A slow start that ended long ago forces the scores.
	plain := newMembers(3, 3, 3, 3, 3, 3, 3)
	scored := newMembers(3, 3, 3, 3, 3, 3, 3)
	scored[0].SlowStart = time.Second
	clock := &fakeClock{t: scored[0].State.UpSince().Add(time.Hour)}
	a := mapping(t, mustPool(t, Hash, plain, nil), keys)
	b := mapping(t, mustPool(t, Hash, scored, clock.now), keys)
	for i := range keys {
		if a[i] != b[i] {
			t.Fatalf("key %d: %s by comparing u, %s by score", i, a[i], b[i])
		}
	}
}
