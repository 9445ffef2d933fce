package attack

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

func TestRapidResetGoAway(t *testing.T) {
	// Handlers that outlive the reset of their stream: x/net/http2 queues
	// new streams behind them and, past four times its stream limit,
	// answers GOAWAY(ENHANCE_YOUR_CALM).
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-time.After(5 * time.Second):
		}
	})
	addr := startH2C(t, &http2.Server{MaxConcurrentStreams: 5}, slow)
	res, err := RapidReset(context.Background(), RapidResetOptions{
		Target: target(addr), Rate: 1000, Duration: scaled(2 * time.Second),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if !res.GoAway || res.GoAwayCode != http2.ErrCodeEnhanceYourCalm || !res.Closed {
		t.Fatalf("want GOAWAY(ENHANCE_YOUR_CALM) and a close, got %v", res)
	}
	if res.SentBeforeGoAway < 25 || res.SentBeforeGoAway > res.Sent || res.GoAwayAfter > res.ClosedAfter {
		t.Errorf("inconsistent counts: %v", res)
	}
}

func TestRapidResetTolerated(t *testing.T) {
	addr := startH2C(t, &http2.Server{}, http.HandlerFunc(hello))
	start := time.Now()
	res, err := RapidReset(context.Background(), RapidResetOptions{
		Target: target(addr), Rate: 200, Duration: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if res.GoAway || res.Closed {
		t.Errorf("want no GOAWAY and no close from a server with fast handlers, got %v", res)
	}
	if res.Sent < 30 || res.Sent > 61 || res.SentBeforeGoAway != res.Sent {
		t.Errorf("want about 60 streams at 200/s for 300ms, got %v", res)
	}
	if d := time.Since(start); d > scaled(3*time.Second) {
		t.Errorf("took %v", d)
	}
}

func TestRapidResetStreamsCap(t *testing.T) {
	addr := startH2C(t, &http2.Server{}, http.HandlerFunc(hello))
	res, err := RapidReset(context.Background(), RapidResetOptions{
		Target: target(addr), Rate: 1000, Duration: scaled(5 * time.Second), Streams: 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 20 || res.Elapsed > scaled(time.Second) {
		t.Fatalf("want exactly 20 streams, quickly; got %v", res)
	}
}

func TestRapidResetAfter(t *testing.T) {
	var mu sync.Mutex
	var lived []time.Duration
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		select {
		case <-r.Context().Done():
		case <-time.After(scaled(5 * time.Second)):
		}
		mu.Lock()
		lived = append(lived, time.Since(start))
		mu.Unlock()
	})
	addr := startH2C(t, &http2.Server{}, h)
	res, err := RapidReset(context.Background(), RapidResetOptions{
		Target: target(addr), Rate: 100, Duration: 100 * time.Millisecond, ResetAfter: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent < 5 || res.GoAway || res.Closed {
		t.Fatalf("want about 10 streams, no GOAWAY; got %v", res)
	}
	deadline := time.Now().Add(scaled(2 * time.Second))
	for {
		mu.Lock()
		n := len(lived)
		mu.Unlock()
		if n == res.Sent || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lived) != res.Sent {
		t.Fatalf("%d handlers ended, want %d", len(lived), res.Sent)
	}
	for _, d := range lived {
		if d < 30*time.Millisecond || d > scaled(time.Second) {
			t.Errorf("a handler lived %v, want about 50ms", d)
		}
	}
}
