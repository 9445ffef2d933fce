// Package ratelimit holds per-client rate limits: a token bucket per
// client key, kept in a table whose memory is bounded and whose locking
// is spread over shards, so that cores serving different clients do not
// wait on each other.
package ratelimit

import (
	"hash/maphash"
	"sync"
	"time"
)

// Defaults and bounds of a Config.
const (
	// DefaultMaxClients is Config.MaxClients when zero.
	DefaultMaxClients = 1 << 20
	// Shards is the number of independently locked parts of a Limiter's
	// table (a power of two).
	Shards = 64
	// EntryBytes is about what one remembered client costs, in bytes: its
	// 24-byte slot (key hash, bucket time, list links) and its share of
	// the index map (key, slot number, the map's overhead at its load
	// factor). TestMemoryPerClient measured 63 bytes a client for one
	// million clients (63 MB), 60 for a table bounded at 65536 clients
	// (4 MB); the key itself is not kept, only its 64-bit hash.
	EntryBytes = 64
)

// Config is one rate limit: Requests per Per on average, Burst at once.
type Config struct {
	// Requests is how many requests a client may send per Per, on
	// average. At least 1.
	Requests int
	// Per is the period of Requests. Longer than 0.
	Per time.Duration
	// Burst is how many requests a client with a full bucket may send at
	// once (the bucket's size). 0: Requests.
	Burst int
	// MaxClients bounds how many clients the table remembers, every
	// shard together (rounded up to a multiple of Shards). When it is
	// full, the least recently seen client is forgotten: its next request
	// finds a full bucket. 0: DefaultMaxClients.
	MaxClients int
}

// Limiter is a token bucket per client key. Its buckets are kept as one
// time each (the generic cell rate algorithm, GCRA, which is a token
// bucket told by the time the bucket will be full again): a client whose
// time has passed has a full bucket and costs nothing to forget, so its
// slot is taken first by a new client. Memory is at most MaxClients ×
// EntryBytes. Safe for concurrent use.
type Limiter struct {
	seed      maphash.Seed
	epoch     time.Time
	interval  int64 // ns between two requests at the average rate
	tolerance int64 // ns a bucket may run ahead of now: Burst × interval
	shards    [Shards]shard
}

// entry is one client's bucket and its place in its shard's
// least-recently-seen list.
type entry struct {
	hash uint64
	// tat is when the bucket is full again, in ns since the Limiter's
	// epoch (the theoretical arrival time of GCRA).
	tat        int64
	prev, next int32 // -1: none
}

type shard struct {
	mu      sync.Mutex
	index   map[uint64]int32
	entries []entry
	// head is the most recently seen entry, tail the least; -1: empty.
	head, tail int32
	max        int
	_          [64]byte // keeps the next shard's lock off this cache line
}

// New returns a Limiter for c. c must be valid (Requests ≥ 1, Per > 0,
// Burst ≥ 0, MaxClients ≥ 0); the configuration checks it.
func New(c Config) *Limiter {
	burst := c.Burst
	if burst <= 0 {
		burst = c.Requests
	}
	maxClients := c.MaxClients
	if maxClients <= 0 {
		maxClients = DefaultMaxClients
	}
	interval := max(int64(c.Per)/int64(c.Requests), 1)
	l := &Limiter{
		seed:      maphash.MakeSeed(),
		epoch:     time.Now(),
		interval:  interval,
		tolerance: interval * int64(burst),
	}
	perShard := (maxClients + Shards - 1) / Shards
	for i := range l.shards {
		s := &l.shards[i]
		s.index = map[uint64]int32{}
		s.head, s.tail, s.max = -1, -1, perShard
	}
	return l
}

// Allow takes one token from key's bucket at now. It reports whether the
// request may pass and, when it may not, how long until it would.
func (l *Limiter) Allow(key string, now time.Time) (ok bool, retryAfter time.Duration) {
	h := maphash.String(l.seed, key)
	t := int64(now.Sub(l.epoch))
	s := &l.shards[h>>(64-6)] // the top bits: the map uses the low ones
	s.mu.Lock()
	i, found := s.index[h]
	if found {
		s.touch(i)
	} else {
		i = s.insert(h, t)
	}
	e := &s.entries[i]
	next := max(e.tat, t) + l.interval
	if over := next - t - l.tolerance; over > 0 {
		s.mu.Unlock()
		return false, time.Duration(over)
	}
	e.tat = next
	s.mu.Unlock()
	return true, 0
}

// Len returns how many clients the table remembers.
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.index)
		s.mu.Unlock()
	}
	return n
}

// insert gives h a slot with a full bucket at t and makes it the most
// recently seen: the least recently seen slot when its bucket is full
// again (nothing is lost) or the shard is at its bound, else a new one.
func (s *shard) insert(h uint64, t int64) int32 {
	var i int32
	if s.tail >= 0 && (s.entries[s.tail].tat <= t || len(s.entries) >= s.max) {
		i = s.tail
		delete(s.index, s.entries[i].hash)
		s.unlink(i)
	} else {
		if len(s.entries) == cap(s.entries) {
			// Grow by doubling, but never past the bound.
			grown := make([]entry, len(s.entries), min(max(2*cap(s.entries), 8), s.max))
			copy(grown, s.entries)
			s.entries = grown
		}
		s.entries = append(s.entries, entry{})
		i = int32(len(s.entries) - 1)
	}
	s.entries[i] = entry{hash: h, tat: t, prev: -1, next: -1}
	s.index[h] = i
	s.pushFront(i)
	return i
}

// touch makes entry i the most recently seen.
func (s *shard) touch(i int32) {
	if s.head == i {
		return
	}
	s.unlink(i)
	s.pushFront(i)
}

func (s *shard) unlink(i int32) {
	e := &s.entries[i]
	if e.prev >= 0 {
		s.entries[e.prev].next = e.next
	} else {
		s.head = e.next
	}
	if e.next >= 0 {
		s.entries[e.next].prev = e.prev
	} else {
		s.tail = e.prev
	}
	e.prev, e.next = -1, -1
}

func (s *shard) pushFront(i int32) {
	e := &s.entries[i]
	e.prev, e.next = -1, s.head
	if s.head >= 0 {
		s.entries[s.head].prev = i
	}
	s.head = i
	if s.tail < 0 {
		s.tail = i
	}
}
