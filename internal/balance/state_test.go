package balance

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestTryAcquireRespectsMaxUnderConcurrency(t *testing.T) {
	const max, workers, rounds = 5, 50, 2000
	s := NewState("a:1")
	var over, peak atomic.Int64
	var got atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range rounds {
				if !s.TryAcquire(max) {
					continue
				}
				got.Add(1)
				n := s.InFlight()
				if n > max {
					over.Add(1)
				}
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				s.Release()
			}
		})
	}
	wg.Wait()
	if over.Load() != 0 {
		t.Errorf("%d times more than %d in flight (peak %d)", over.Load(), max, peak.Load())
	}
	if s.InFlight() != 0 {
		t.Errorf("in flight after all released: %d", s.InFlight())
	}
	if got.Load() == 0 {
		t.Error("TryAcquire never succeeded")
	}
}

func TestTryAcquireWithoutLimit(t *testing.T) {
	s := NewState("a:1")
	for i := range 100 {
		if !s.TryAcquire(0) {
			t.Fatalf("TryAcquire(0) refused at %d in flight", i)
		}
	}
	if s.InFlight() != 100 {
		t.Errorf("in flight %d, want 100", s.InFlight())
	}
	if s.TryAcquire(100) {
		t.Error("TryAcquire(100) counted a 101st request")
	}
}

// concurrently runs f in 50 goroutines released at once and returns how
// many of them returned true.
func concurrently(f func() bool) int {
	var start sync.WaitGroup
	start.Add(1)
	var n atomic.Int64
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			start.Wait()
			if f() {
				n.Add(1)
			}
		})
	}
	start.Done()
	wg.Wait()
	return int(n.Load())
}

func TestSetHealthyReportsChangeOnce(t *testing.T) {
	s := NewState("a:1")
	if n := concurrently(func() bool { return s.SetHealthy(true) }); n != 0 {
		t.Errorf("already up: %d calls reported a change", n)
	}
	if n := concurrently(func() bool { return s.SetHealthy(false) }); n != 1 {
		t.Errorf("going down: %d calls reported a change, want 1", n)
	}
	if s.Healthy() || s.Usable() {
		t.Error("down server reports healthy or usable")
	}
	if n := concurrently(func() bool { return s.SetHealthy(true) }); n != 1 {
		t.Errorf("coming up: %d calls reported a change, want 1", n)
	}
	if !s.Healthy() || !s.Usable() {
		t.Error("server that came up is not healthy and usable")
	}
}

func TestSetAdminReportsChangeOnce(t *testing.T) {
	s := NewState("a:1")
	for _, a := range []Admin{Drain, Disabled, Active} {
		if n := concurrently(func() bool { return s.SetAdmin(a) }); n != 1 {
			t.Errorf("to %v: %d calls reported a change, want 1", a, n)
		}
		if s.Admin() != a {
			t.Errorf("admin %v, want %v", s.Admin(), a)
		}
		if s.Usable() != (a == Active) {
			t.Errorf("%v: usable %v", a, s.Usable())
		}
	}
}

func TestComingUpRestartsSlowStart(t *testing.T) {
	s := NewState("a:1")
	before := s.UpSince()
	time.Sleep(time.Millisecond)
	s.SetHealthy(false)
	if !s.UpSince().Equal(before) {
		t.Error("going down moved UpSince")
	}
	s.SetHealthy(true)
	afterUp := s.UpSince()
	if !afterUp.After(before) {
		t.Error("coming up did not restart the slow-start ramp")
	}
	time.Sleep(time.Millisecond)
	s.SetAdmin(Drain)
	s.SetAdmin(Active)
	if !s.UpSince().After(afterUp) {
		t.Error("re-activating a drained server did not restart the slow-start ramp")
	}
}

func TestAdminString(t *testing.T) {
	for a, want := range map[Admin]string{Active: "active", Drain: "drain", Disabled: "disabled"} {
		if a.String() != want {
			t.Errorf("%d.String() = %q, want %q", a, a.String(), want)
		}
	}
}
