package balance

import (
	"testing"
)

func TestRandomPrefersLessLoaded(t *testing.T) {
	// Power of two choices: the loaded server wins only when both draws
	// land on it, 1/4 of the time with two equal servers.
	ms := newMembers(1, 1)
	p := mustPool(t, Random, ms, nil)
	for range 5 {
		ms[0].State.Acquire()
	}
	counts := pickCounts(t, p, ms, 10000)
	if share := float64(counts[0]) / 10000; share < 0.22 || share > 0.28 {
		t.Errorf("loaded server got %.3f of picks, want about 0.25", share)
	}
}

func TestRandomIsReproducible(t *testing.T) {
	ms := newMembers(1, 2, 3, 4)
	a := sequence(t, mustPool(t, Random, ms, nil), ms, 200)
	b := sequence(t, mustPool(t, Random, ms, nil), ms, 200)
	if a != b {
		t.Errorf("same seed, different picks:\n%s\n%s", a, b)
	}
}

func TestRandomDefaultSource(t *testing.T) {
	ms := newMembers(1, 1, 1)
	p, err := NewPool(Random, ms, Options{})
	if err != nil {
		t.Fatal(err)
	}
	counts := pickCounts(t, p, ms, 3000)
	for i, n := range counts {
		if n < 800 {
			t.Errorf("server %d: %d of 3000 picks with the default random source", i, n)
		}
	}
}
