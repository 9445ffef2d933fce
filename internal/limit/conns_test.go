package limit

import (
	"net/netip"
	"testing"
)

func TestConnsLimits(t *testing.T) {
	global := NewConns(nil)
	global.SetLimits(5, 0)
	fe := NewConns(global)
	fe.SetLimits(4, 2)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")

	for i := 0; i < 2; i++ {
		if got := fe.Acquire(a); got != "" {
			t.Fatalf("connection %d of a refused by %s", i+1, got)
		}
	}
	if got := fe.Acquire(a); got != MaxConnsPerClient {
		t.Fatalf("third connection of a: got %q, want %s", got, MaxConnsPerClient)
	}
	// IPv4-mapped IPv6 is the same client.
	if got := fe.Acquire(netip.MustParseAddr("::ffff:192.0.2.1")); got != MaxConnsPerClient {
		t.Fatalf("a as ::ffff:192.0.2.1: got %q, want %s", got, MaxConnsPerClient)
	}
	for i := 0; i < 2; i++ {
		if got := fe.Acquire(b); got != "" {
			t.Fatalf("connection %d of b refused by %s", i+1, got)
		}
	}
	if got := fe.Acquire(netip.MustParseAddr("192.0.2.3")); got != MaxConns {
		t.Fatalf("fifth connection: got %q, want %s", got, MaxConns)
	}
	if fe.Open() != 4 || global.Open() != 4 {
		t.Fatalf("open: frontend %d, global %d; want 4 and 4 (refusals must not count)", fe.Open(), global.Open())
	}
	// Another frontend under the same global limit.
	other := NewConns(global)
	if got := other.Acquire(netip.Addr{}); got != "" {
		t.Fatalf("other frontend: refused by %s", got)
	}
	if got := other.Acquire(netip.Addr{}); got != GlobalMaxConns {
		t.Fatalf("sixth connection of the process: got %q, want %s", got, GlobalMaxConns)
	}
	fe.Release(a)
	if got := fe.Acquire(a); got != "" {
		t.Fatalf("a after one of its connections closed: refused by %s", got)
	}
	fe.Release(a)
	fe.Release(a)
	fe.Release(b)
	fe.Release(b)
	other.Release(netip.Addr{})
	if fe.Open() != 0 || global.Open() != 0 || len(fe.byClient) != 0 {
		t.Fatalf("after every release: frontend %d, global %d, clients %v", fe.Open(), global.Open(), fe.byClient)
	}
	// No limits: everything is admitted.
	fe.SetLimits(0, 0)
	global.SetLimits(0, 0)
	for i := 0; i < 100; i++ {
		if got := fe.Acquire(a); got != "" {
			t.Fatalf("without limits: refused by %s", got)
		}
	}
}
