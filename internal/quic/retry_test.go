package quic

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time          { return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.t = c.t.Add(d) }

func newFakePolicy(t *testing.T, mode RetryMode, l RetryLimits) (*RetryPolicy, *fakeClock) {
	t.Helper()
	c := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	p, err := newRetryPolicy(mode, l, c.Now)
	if err != nil {
		t.Fatal(err)
	}
	return p, c
}

var client = &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 4433}

func TestParseRetryMode(t *testing.T) {
	for in, want := range map[string]RetryMode{"": RetryAuto, "auto": RetryAuto, "always": RetryAlways, "never": RetryNever} {
		if got, err := ParseRetryMode(in); err != nil || got != want {
			t.Errorf("ParseRetryMode(%q) = %v, %v", in, got, err)
		}
		if in != "" && want.String() != in {
			t.Errorf("%v.String() = %q", want, want.String())
		}
	}
	if _, err := ParseRetryMode("sometimes"); err == nil || !strings.Contains(err.Error(), "want auto, always or never") {
		t.Errorf("err = %v", err)
	}
}

func TestRetryAlwaysAndNever(t *testing.T) {
	always, _ := newFakePolicy(t, RetryAlways, RetryLimits{})
	never, _ := newFakePolicy(t, RetryNever, RetryLimits{})
	for i := 0; i < 5000; i++ {
		if !always.VerifySourceAddress(client) {
			t.Fatal("always did not Retry")
		}
		if never.VerifySourceAddress(client) {
			t.Fatal("never sent Retry")
		}
	}
	if s := always.Stats(); s != (RetryStats{Unvalidated: 5000, Retries: 5000}) {
		t.Errorf("always: %+v", s)
	}
	if s := never.Stats(); s != (RetryStats{Unvalidated: 5000}) {
		t.Errorf("never: %+v", s)
	}
}

func TestRetryAutoRate(t *testing.T) {
	p, c := newFakePolicy(t, RetryAuto, RetryLimits{HandshakesPerSecond: 10, InProgress: 1000})
	// 10 handshakes in 0.9 s: all admitted.
	for i := 0; i < 10; i++ {
		if p.VerifySourceAddress(client) {
			t.Fatalf("handshake %d of 10 in a second got Retry", i+1)
		}
		c.Advance(100 * time.Millisecond)
	}
	// t = 1.0 s: the first (t = 0) left the window, so an 11th is fine.
	if p.VerifySourceAddress(client) {
		t.Fatal("the window does not slide")
	}
	// A burst: everything beyond 10 per second gets Retry.
	retries := 0
	for i := 0; i < 20; i++ {
		if p.VerifySourceAddress(client) {
			retries++
		}
	}
	if retries != 20 {
		t.Fatalf("burst: %d of 20 got Retry, want all (the window is full)", retries)
	}
	// Retried attempts count toward the rate: while the flood lasts, it
	// stays on.
	c.Advance(500 * time.Millisecond)
	if !p.VerifySourceAddress(client) {
		t.Fatal("flood over after half a second")
	}
	// A quiet second later, admitted again.
	c.Advance(time.Second)
	if p.VerifySourceAddress(client) {
		t.Fatal("still Retry after a quiet second")
	}
	if s := p.Stats(); s.Unvalidated != 33 || s.Retries != 21 {
		t.Errorf("stats %+v, want 33 attempts and 21 Retries", s)
	}
}

func TestRetryAutoInProgress(t *testing.T) {
	p, c := newFakePolicy(t, RetryAuto, RetryLimits{HandshakesPerSecond: 100, InProgress: 150, HandshakeTimeout: 3 * time.Second})
	admit := func(n int) (admitted int) {
		for i := 0; i < n; i++ {
			if !p.VerifySourceAddress(client) {
				admitted++
			}
		}
		return admitted
	}
	// 100 per second, under the rate limit: the first 150 fill the
	// in-progress budget, the rest of the second second get Retry.
	if got := admit(100); got != 100 {
		t.Fatalf("second 0: admitted %d", got)
	}
	c.Advance(time.Second)
	if got := admit(100); got != 50 {
		t.Fatalf("second 1: admitted %d, want 50 (150 in progress)", got)
	}
	c.Advance(time.Second)
	if got := admit(100); got != 0 {
		t.Fatalf("second 2: admitted %d, want 0", got)
	}
	// At 3 s the first 100 count as done.
	c.Advance(time.Second)
	if got := admit(100); got != 100 {
		t.Fatalf("second 3: admitted %d, want 100", got)
	}
}

func TestRetryDefaultsAndBadLimits(t *testing.T) {
	p, err := NewRetryPolicy(RetryAuto, RetryLimits{})
	if err != nil {
		t.Fatal(err)
	}
	if p.limits != (RetryLimits{HandshakesPerSecond: 1000, InProgress: 10000, HandshakeTimeout: 10 * time.Second}) {
		t.Errorf("defaults: %+v", p.limits)
	}
	if p.Mode() != RetryAuto {
		t.Errorf("mode %v", p.Mode())
	}
	for _, l := range []RetryLimits{{HandshakesPerSecond: -1}, {InProgress: maxLimit + 1}, {HandshakeTimeout: -time.Second}} {
		if _, err := NewRetryPolicy(RetryAuto, l); err == nil {
			t.Errorf("%+v: no error", l)
		}
	}
	if _, err := NewRetryPolicy(RetryMode(9), RetryLimits{}); err == nil {
		t.Error("unknown mode: no error")
	}
}

func TestRetryConcurrentShards(t *testing.T) {
	p, err := NewRetryPolicy(RetryAuto, RetryLimits{HandshakesPerSecond: 1_000_000, InProgress: 100})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := 0
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if !p.VerifySourceAddress(client) {
					mu.Lock()
					admitted++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if admitted != 100 {
		t.Fatalf("admitted %d, want exactly the in-progress limit of 100", admitted)
	}
	if s := p.Stats(); s.Unvalidated != 800 || s.Retries != 700 {
		t.Fatalf("stats %+v", s)
	}
}

// TestRetryWithQuicGo checks the hook in a real handshake: with always, the
// client is sent a Retry (whose Source Connection ID comes from the shard's
// generator), comes back with the token, and connects without being asked
// again.
func TestRetryWithQuicGo(t *testing.T) {
	p, err := NewRetryPolicy(RetryAlways, RetryLimits{})
	if err != nil {
		t.Fatal(err)
	}
	f := mustFormat(t, nil)
	srv := startServer(t, serverOptions{transport: &quicgo.Transport{
		ConnectionIDGenerator: NewCIDGenerator(f, 1),
		VerifySourceAddress:   p.VerifySourceAddress,
	}})
	roundTrip(t, context.Background(), srv.addr)
	// A ClientHello with post-quantum key shares spans two Initial
	// packets; quic-go asks for each and sends a Retry for each.
	if s := p.Stats(); s.Unvalidated < 1 || s.Unvalidated > 2 || s.Retries != s.Unvalidated {
		t.Fatalf("stats %+v, want one or two attempts, each answered with Retry", s)
	}
}
