package upstream

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/testutil"
)

func scaled(d time.Duration) time.Duration { return testutil.Scaled(d) }

// connBackend is a backend of n servers (s0, s1, …) that nobody connects
// to: Acquire only counts.
func connBackend(t *testing.T, n int, maxConns int, opt Options) (*Backend, []*balance.Member) {
	t.Helper()
	servers := make([]*Server, n)
	members := make([]*balance.Member, n)
	for i := range servers {
		addr := "192.0.2.1:" + strconv.Itoa(8000+i)
		members[i] = &balance.Member{State: balance.NewState(addr), Weight: 1, MaxConns: maxConns, ID: "s" + strconv.Itoa(i)}
		servers[i] = NewServer(members[i], 0, nil)
	}
	b, err := NewBackend("tcp", servers, opt)
	if err != nil {
		t.Fatal(err)
	}
	return b, members
}

func TestAcquireSpreads(t *testing.T) {
	ctx := context.Background()
	t.Run("round_robin", func(t *testing.T) {
		b, members := connBackend(t, 3, 0, Options{})
		count := picks(t, b, 6, nil)
		for i, m := range members {
			if count[m] != 2 {
				t.Errorf("server %d took %d of 6 connections, want 2", i, count[m])
			}
		}
	})
	t.Run("least_conn", func(t *testing.T) {
		b, members := connBackend(t, 3, 0, Options{Algorithm: balance.LeastConn})
		seen := map[*balance.Member]bool{}
		for range 3 {
			m, err := b.Acquire(ctx, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			seen[m] = true // held: the next pick goes elsewhere
		}
		if len(seen) != 3 {
			t.Errorf("3 connections held went to %d servers, want 3", len(seen))
		}
		for i, m := range members {
			if n := m.State.InFlight(); n != 1 {
				t.Errorf("server %d has %d connections in flight, want 1", i, n)
			}
			b.Release(m)
		}
	})
	t.Run("hash", func(t *testing.T) {
		b, _ := connBackend(t, 3, 0, Options{Algorithm: balance.Hash, HashKey: HashKey{Kind: HashSource}})
		if !b.HashSource() {
			t.Error("HashSource() = false with hash_key source")
		}
		seen := map[*balance.Member]bool{}
		for i := range 64 {
			h := balance.HashString("192.0.2." + strconv.Itoa(i))
			m1, err := b.Acquire(ctx, h, nil)
			if err != nil {
				t.Fatal(err)
			}
			b.Release(m1)
			m2, err := b.Acquire(ctx, h, nil)
			if err != nil {
				t.Fatal(err)
			}
			b.Release(m2)
			if m1 != m2 {
				t.Fatalf("hash %x went to %s, then to %s", h, m1.ID, m2.ID)
			}
			seen[m1] = true
		}
		if len(seen) != 3 {
			t.Errorf("64 client addresses went to %d servers, want 3", len(seen))
		}
	})
	t.Run("random", func(t *testing.T) {
		b, members := connBackend(t, 3, 0, Options{Algorithm: balance.Random})
		count := picks(t, b, 300, nil)
		for i, m := range members {
			if count[m] == 0 {
				t.Errorf("server %d took none of 300 connections", i)
			}
		}
	})
}

func TestAcquireTried(t *testing.T) {
	ctx := context.Background()
	b, members := connBackend(t, 3, 0, Options{})
	if n := picks(t, b, 6, members[:2])[members[2]]; n != 6 {
		t.Fatalf("with servers 0 and 1 tried, server 2 took %d of 6 connections, want all", n)
	}
	if m, err := b.Acquire(ctx, 0, members); !errors.Is(err, ErrNoServer) {
		t.Fatalf("with every server tried: %v, %v; want ErrNoServer", m, err)
	}
}

func TestAcquireNoServer(t *testing.T) {
	ctx := context.Background()
	b, members := connBackend(t, 2, 0, Options{QueueTimeout: scaled(10 * time.Second)})
	members[0].State.SetHealthy(false)
	members[1].State.SetAdmin(balance.Disabled)
	start := time.Now()
	m, err := b.Acquire(ctx, 0, nil)
	if !errors.Is(err, ErrNoServer) {
		t.Fatalf("with one server down and one disabled: %v, %v; want ErrNoServer", m, err)
	}
	if d := time.Since(start); d > scaled(time.Second) {
		t.Errorf("failing took %v: it must not wait in the queue", d)
	}
}

func TestAcquireMaxConns(t *testing.T) {
	ctx := context.Background()
	const queue = 100 * time.Millisecond
	b, members := connBackend(t, 2, 1, Options{QueueTimeout: queue})
	m1, err := b.Acquire(ctx, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := b.Acquire(ctx, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m1 == m2 {
		t.Fatalf("both connections went to %s, which has max_conns 1", m1.ID)
	}

	t.Run("queue timeout", func(t *testing.T) {
		start := time.Now()
		m, err := b.Acquire(ctx, 0, nil)
		if !errors.Is(err, ErrQueueTimeout) {
			t.Fatalf("every server full: %v, %v; want ErrQueueTimeout", m, err)
		}
		if d := time.Since(start); d < queue {
			t.Errorf("gave up after %v, before the queue timeout %v", d, queue)
		}
	})

	t.Run("ctx", func(t *testing.T) {
		b, _ := connBackend(t, 1, 1, Options{QueueTimeout: scaled(10 * time.Second)})
		held, err := b.Acquire(ctx, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Release(held)
		ctx, cancel := context.WithCancel(ctx)
		time.AfterFunc(10*time.Millisecond, cancel)
		if m, err := b.Acquire(ctx, 0, nil); !errors.Is(err, context.Canceled) {
			t.Fatalf("canceled while queued: %v, %v; want context.Canceled", m, err)
		}
	})

	t.Run("release wakes the queue", func(t *testing.T) {
		b, _ := connBackend(t, 1, 1, Options{QueueTimeout: scaled(10 * time.Second)})
		held, err := b.Acquire(ctx, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(20*time.Millisecond, func() { b.Release(held) })
		start := time.Now()
		m, err := b.Acquire(ctx, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if m != held {
			t.Fatalf("got %s, want the released %s", m.ID, held.ID)
		}
		if d := time.Since(start); d > scaled(time.Second) {
			t.Errorf("the queued connection waited %v after a release", d)
		}
		b.Release(m)
	})

	for _, m := range members {
		b.Release(m)
		if n := m.State.InFlight(); n != 0 {
			t.Errorf("%s: %d in flight after every release", m.ID, n)
		}
	}
}

func TestBackendSettings(t *testing.T) {
	var seen []bool
	m := &balance.Member{State: balance.NewState("192.0.2.1:80"), Weight: 1, ID: "a"}
	srv := NewServer(m, 2, func(ok bool) { seen = append(seen, ok) })
	b, err := NewBackend("tcp", []*Server{srv}, Options{Retries: 2, HashKey: HashKey{Kind: HashURI}, ConnectTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	b.Observe(m, false)
	b.Observe(m, true)
	if len(seen) != 2 || seen[0] || !seen[1] {
		t.Errorf("the server observed %v, want [false true]", seen)
	}
	if d := b.ConnectTimeout(); d != 5*time.Second {
		t.Errorf("ConnectTimeout() = %v, want the 5s given", d)
	}
	if n := b.Retries(); n != 2 {
		t.Errorf("Retries() = %d, want 2", n)
	}
	if v := b.SendProxy(m); v != 2 {
		t.Errorf("SendProxy() = %d, want 2", v)
	}
	if b.HashSource() {
		t.Error("HashSource() = true with hash_key uri")
	}
}

// picks acquires and releases a server of b n times, tried excluded, and
// counts the picks of each.
func picks(t *testing.T, b *Backend, n int, tried []*balance.Member) map[*balance.Member]int {
	t.Helper()
	count := map[*balance.Member]int{}
	for range n {
		m, err := b.Acquire(context.Background(), 0, tried)
		if err != nil {
			t.Fatal(err)
		}
		count[m]++
		b.Release(m)
	}
	return count
}
