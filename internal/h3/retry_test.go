package h3

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/portcullis/portcullis/internal/quiclb"
	"github.com/portcullis/portcullis/internal/testutil"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time          { return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.t = c.t.Add(d) }

// testLimits are limits high enough not to matter, with mode m.
func testLimits(m RetryMode) HandshakeLimits {
	return HandshakeLimits{Retry: m, RetryRate: 1000, RetryInProgress: 1000, MaxHandshakes: 2000}
}

func newFakeHandshakes(t *testing.T, l HandshakeLimits, onLimit func(string)) (*Handshakes, *fakeClock) {
	t.Helper()
	c := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	h, err := newHandshakes(l, onLimit, c.Now)
	if err != nil {
		t.Fatal(err)
	}
	return h, c
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
	always, _ := newFakeHandshakes(t, testLimits(RetryAlways), nil)
	never, _ := newFakeHandshakes(t, testLimits(RetryNever), nil)
	for i := 0; i < 5000; i++ {
		if !always.VerifySourceAddress(client) {
			t.Fatal("always did not Retry")
		}
		if never.VerifySourceAddress(client) {
			t.Fatal("never sent Retry")
		}
	}
	if s := always.Stats(); s != (HandshakeStats{Unvalidated: 5000, Retries: 5000}) {
		t.Errorf("always: %+v", s)
	}
	if s := never.Stats(); s != (HandshakeStats{Unvalidated: 5000}) {
		t.Errorf("never: %+v", s)
	}
}

func TestRetryAutoRate(t *testing.T) {
	var fired []string
	p, c := newFakeHandshakes(t, HandshakeLimits{Retry: RetryAuto, RetryRate: 10, RetryInProgress: 1000, MaxHandshakes: 2000},
		func(l string) { fired = append(fired, l) })
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
	if len(fired) != 21 || fired[0] != LimitRetryRate {
		t.Errorf("limits fired: %q, want retry_rate for each of the 21 Retries", fired)
	}
}

// TestRetryAutoInProgress: under the rate limit, Retry starts when
// RetryInProgress handshakes are in progress, and stops as soon as one
// of them ends, by HandshakeDone or by its context.
func TestRetryAutoInProgress(t *testing.T) {
	var fired []string
	p, _ := newFakeHandshakes(t, HandshakeLimits{Retry: RetryAuto, RetryRate: 1000, RetryInProgress: 3, MaxHandshakes: 5},
		func(l string) { fired = append(fired, l) })
	var ctxs []context.Context
	var cancels []context.CancelFunc
	for i := range 3 {
		if p.VerifySourceAddress(client) {
			t.Fatalf("handshake %d got Retry", i+1)
		}
		ctx, cancel := context.WithCancel(context.Background())
		ctx, err := p.ConnContext(ctx, &quic.ClientInfo{RemoteAddr: client})
		if err != nil {
			t.Fatal(err)
		}
		ctxs, cancels = append(ctxs, ctx), append(cancels, cancel)
	}
	if !p.VerifySourceAddress(client) || p.InProgress() != 3 {
		t.Fatalf("no Retry with %d of 3 in progress", p.InProgress())
	}
	// A client validated by Retry is admitted up to MaxHandshakes.
	for range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if _, err := p.ConnContext(ctx, &quic.ClientInfo{RemoteAddr: client, AddrVerified: true}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.ConnContext(context.Background(), &quic.ClientInfo{RemoteAddr: client, AddrVerified: true}); !errors.Is(err, ErrTooManyHandshakes) {
		t.Fatalf("the 6th handshake: %v, want ErrTooManyHandshakes", err)
	}
	// One completes, one fails (quic-go cancels its context): 3 left.
	HandshakeDone(ctxs[0])
	HandshakeDone(ctxs[0]) // counted once
	cancels[1]()
	waitFor(t, func() bool { return p.InProgress() == 3 })
	cancels[0]() // after HandshakeDone: not counted again
	HandshakeDone(context.Background())
	time.Sleep(10 * time.Millisecond)
	if p.InProgress() != 3 {
		t.Fatalf("in progress %d, want 3", p.InProgress())
	}
	cancels[2]()
	waitFor(t, func() bool { return p.InProgress() == 2 })
	if p.VerifySourceAddress(client) {
		t.Fatal("Retry with 2 of 3 in progress")
	}
	want := []string{LimitRetryInProgress, LimitMaxHandshakes}
	if !slices.Equal(fired, want) {
		t.Errorf("limits fired: %q, want %q", fired, want)
	}
	if s := p.Stats(); s != (HandshakeStats{InProgress: 2, Unvalidated: 5, Retries: 1, Refused: 1}) {
		t.Errorf("stats %+v", s)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testutil.Scaled(5 * time.Second))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestHandshakeLimitsCheck(t *testing.T) {
	good := HandshakeLimits{Retry: RetryAuto, RetryRate: 1000, RetryInProgress: 1000, MaxHandshakes: 2000}
	if err := good.Check(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		change func(*HandshakeLimits)
		want   string
	}{
		{func(l *HandshakeLimits) { l.RetryRate = 0 }, "quic retry_rate 0: want 1 to 1048576"},
		{func(l *HandshakeLimits) { l.RetryInProgress = -1 }, "quic retry_in_progress -1: want 1 to"},
		{func(l *HandshakeLimits) { l.MaxHandshakes = maxLimit + 1 }, "quic max_handshakes 1048577: want 1 to"},
		{func(l *HandshakeLimits) { l.RetryInProgress = 2000 }, "quic retry_in_progress 2000: want less than max_handshakes (2000)"},
		{func(l *HandshakeLimits) { l.Retry = RetryMode(9) }, "unknown mode"},
	} {
		l := good
		c.change(&l)
		err := l.Check()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", l, err, c.want)
		}
		if _, err := NewHandshakes(l, nil); err == nil {
			t.Errorf("NewHandshakes(%+v): no error", l)
		}
	}
	// Without Retry, retry_in_progress does not matter.
	l := good
	l.Retry, l.RetryInProgress = RetryNever, 5000
	if err := l.Check(); err != nil {
		t.Error(err)
	}
}

// TestHandshakesSetLimits: a reload changes the limits; handshakes in
// progress stay counted.
func TestHandshakesSetLimits(t *testing.T) {
	p, _ := newFakeHandshakes(t, testLimits(RetryAuto), nil)
	for range 3 {
		if _, err := p.ConnContext(context.Background(), &quic.ClientInfo{RemoteAddr: client}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.SetLimits(HandshakeLimits{Retry: RetryNever, RetryRate: 1, RetryInProgress: 1, MaxHandshakes: 3}); err != nil {
		t.Fatal(err)
	}
	if p.VerifySourceAddress(client) {
		t.Error("Retry after the reload to never")
	}
	if _, err := p.ConnContext(context.Background(), &quic.ClientInfo{RemoteAddr: client}); !errors.Is(err, ErrTooManyHandshakes) {
		t.Errorf("4th handshake with max_handshakes 3: %v", err)
	}
	if err := p.SetLimits(HandshakeLimits{Retry: RetryAuto, RetryRate: 1, RetryInProgress: 5, MaxHandshakes: 3}); err == nil {
		t.Error("bad limits accepted")
	}
	if p.Limits().Retry != RetryNever || p.InProgress() != 3 {
		t.Errorf("after a refused change: %+v, %d in progress", p.Limits(), p.InProgress())
	}
}

// TestMaxHandshakesConcurrentShards: the hard limit is exact when every
// shard admits at once.
func TestMaxHandshakesConcurrentShards(t *testing.T) {
	p, err := NewHandshakes(HandshakeLimits{Retry: RetryNever, RetryRate: 1, RetryInProgress: 1, MaxHandshakes: 100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var admitted atomic.Int64
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if _, err := p.ConnContext(context.Background(), &quic.ClientInfo{RemoteAddr: client}); err == nil {
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if admitted.Load() != 100 || p.InProgress() != 100 {
		t.Fatalf("admitted %d, %d in progress; want exactly max_handshakes, 100", admitted.Load(), p.InProgress())
	}
	if s := p.Stats(); s.Refused != 700 {
		t.Fatalf("stats %+v", s)
	}
}

// TestRetryWithQuicGo checks the hook in a real handshake: with always, the
// client is sent a Retry (whose Source Connection ID comes from the shard's
// generator), comes back with the token, and connects without being asked
// again.
func TestRetryWithQuicGo(t *testing.T) {
	p, err := NewHandshakes(testLimits(RetryAlways), nil)
	if err != nil {
		t.Fatal(err)
	}
	f := mustFormat(t, nil)
	srv := startServer(t, serverOptions{transport: &quic.Transport{
		ConnectionIDGenerator: quiclb.NewCIDGenerator(f, 1),
		VerifySourceAddress:   p.VerifySourceAddress,
	}})
	roundTrip(t, context.Background(), srv.addr)
	// A ClientHello with post-quantum key shares spans two Initial
	// packets; quic-go asks for each and sends a Retry for each.
	if s := p.Stats(); s.Unvalidated < 1 || s.Unvalidated > 2 || s.Retries != s.Unvalidated {
		t.Fatalf("stats %+v, want one or two attempts, each answered with Retry", s)
	}
}
