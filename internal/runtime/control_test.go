package runtime

import (
	"errors"
	"testing"
	"time"
)

// TestRequestWhileStopping: an admin reload asked for once the loop
// stopped taking requests is refused at once, instead of holding its
// connection (and so the stop) until the grace period ends.
func TestRequestWhileStopping(t *testing.T) {
	s := &serving{requests: make(chan reloadRequest), stopping: make(chan struct{})}
	close(s.stopping)
	done := make(chan error, 1)
	go func() { done <- s.request(false) }()
	select {
	case err := <-done:
		if !errors.Is(err, errStopping) {
			t.Errorf("request while stopping: %v, want %v", err, errStopping)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a request while stopping waits")
	}
}
