package ratelimit

import (
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// allowN sends n requests for key at now and counts the allowed ones.
func allowN(l *Limiter, key string, now time.Time, n int) int {
	ok := 0
	for range n {
		if a, _ := l.Allow(key, now); a {
			ok++
		}
	}
	return ok
}

func TestBurstThenRate(t *testing.T) {
	l := New(Config{Requests: 5, Per: time.Second, Burst: 10})
	now := time.Now()
	if got := allowN(l, "a", now, 50); got != 10 {
		t.Fatalf("at once: %d allowed, want the burst, 10", got)
	}
	// Over 3 s at the rate: 15 more, one every 200 ms.
	got := 0
	for i := 1; i <= 300; i++ {
		got += allowN(l, "a", now.Add(time.Duration(i)*10*time.Millisecond), 1)
	}
	if got != 15 {
		t.Fatalf("over 3s: %d allowed, want 15 (5/s)", got)
	}
}

func TestBurstDefaultsToRequests(t *testing.T) {
	l := New(Config{Requests: 7, Per: time.Minute})
	if got := allowN(l, "a", time.Now(), 20); got != 7 {
		t.Fatalf("%d allowed, want 7 (burst 0 means requests)", got)
	}
}

func TestRefillAndRetryAfter(t *testing.T) {
	l := New(Config{Requests: 2, Per: time.Second, Burst: 2})
	now := time.Now()
	allowN(l, "a", now, 2)
	ok, retry := l.Allow("a", now)
	if ok || retry != 500*time.Millisecond {
		t.Fatalf("over the burst: ok %v retryAfter %v, want refused for 500ms", ok, retry)
	}
	if ok, _ := l.Allow("a", now.Add(499*time.Millisecond)); ok {
		t.Fatal("allowed before retryAfter")
	}
	if ok, _ := l.Allow("a", now.Add(500*time.Millisecond)); !ok {
		t.Fatal("refused at retryAfter")
	}
	// A full refill gives the whole burst again.
	if got := allowN(l, "a", now.Add(10*time.Second), 10); got != 2 {
		t.Fatalf("after a full refill: %d allowed, want 2", got)
	}
	// Another client is untouched by a's state.
	if got := allowN(l, "b", now, 10); got != 2 {
		t.Fatalf("other client: %d allowed, want 2", got)
	}
}

func TestTableBounded(t *testing.T) {
	l := New(Config{Requests: 1, Per: time.Hour, MaxClients: 1024})
	now := time.Now()
	for i := range 100_000 {
		l.Allow(strconv.Itoa(i), now)
	}
	if n := l.Len(); n > 1024 {
		t.Fatalf("table holds %d clients, bound 1024", n)
	}
	// The most recently seen clients are remembered: refused.
	if ok, _ := l.Allow("99999", now); ok {
		t.Fatal("the last client was forgotten")
	}
}

func TestFullBucketsReused(t *testing.T) {
	l := New(Config{Requests: 10, Per: time.Second, MaxClients: 1 << 16})
	now := time.Now()
	// One new client a second: each bucket is full again before the
	// next, so its slot is reused.
	for i := range 1000 {
		l.Allow(strconv.Itoa(i), now.Add(time.Duration(i)*time.Second))
	}
	if n := l.Len(); n > Shards {
		t.Fatalf("table holds %d clients whose buckets were full, want at most one per shard", n)
	}
}

func TestConcurrent(t *testing.T) {
	l := New(Config{Requests: 100, Per: time.Hour, MaxClients: 4096})
	now := time.Now()
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				if ok, _ := l.Allow(fmt.Sprint("k", i%10), now); ok {
					allowed.Add(1)
				}
				l.Allow(fmt.Sprint("g", g, "-", i), now)
			}
		}()
	}
	wg.Wait()
	// 10 shared clients, 100 each, however the goroutines interleave.
	if got := allowed.Load(); got != 1000 {
		t.Fatalf("%d allowed for 10 shared clients, want 1000", got)
	}
}

// TestMemoryPerClient measures the heap one million distinct clients
// take: at most the table's bound, and about EntryBytes each.
func TestMemoryPerClient(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates about 60 MB")
	}
	const clients = 1_000_000
	keys := make([]string, clients)
	for i := range keys {
		keys[i] = "10." + strconv.Itoa(i>>16) + "." + strconv.Itoa(i>>8&255) + "." + strconv.Itoa(i&255)
	}
	for _, bound := range []int{1 << 20, 1 << 16} {
		before := heap()
		l := New(Config{Requests: 1, Per: time.Hour, MaxClients: bound})
		now := time.Now()
		for _, k := range keys {
			l.Allow(k, now)
		}
		used := heap() - before
		n := l.Len()
		per := float64(used) / float64(n)
		t.Logf("max_clients %d: %d distinct clients, %d remembered, heap %d bytes, %.1f bytes per client", bound, clients, n, used, per)
		if n > bound {
			t.Errorf("max_clients %d: %d remembered", bound, n)
		}
		if per > 2*EntryBytes {
			t.Errorf("%.1f bytes per client, documented %d", per, EntryBytes)
		}
		runtime.KeepAlive(l)
	}
}

func heap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

func TestParseKey(t *testing.T) {
	for in, want := range map[string]string{"source": "source", "header:x-client": "header:X-Client"} {
		k, err := ParseKey(in)
		if err != nil || k.String() != want {
			t.Errorf("ParseKey(%q) = %v, %v; want %s", in, k, err, want)
		}
	}
	for _, in := range []string{"", "uri", "header:", "header:a b", "Source"} {
		if _, err := ParseKey(in); err == nil {
			t.Errorf("ParseKey(%q) accepted", in)
		}
	}
}

// BenchmarkAllow is the cost of one decision with every core busy, over
// 64k clients.
func BenchmarkAllow(b *testing.B) {
	l := New(Config{Requests: 1000, Per: time.Second, MaxClients: 1 << 16})
	keys := make([]string, 1<<16)
	for i := range keys {
		keys[i] = "192.0." + strconv.Itoa(i>>8) + "." + strconv.Itoa(i&255)
	}
	var seq atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int(seq.Add(7919))
		for pb.Next() {
			l.Allow(keys[i&(len(keys)-1)], time.Now())
			i++
		}
	})
}
