package upstream

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// queue lets requests wait for a server below its max_conns. Waiters sleep
// on a channel that is closed (and replaced) whenever a request at this
// backend ends; a short poll covers releases made through another
// configuration generation after a reload.
type queue struct {
	waiters atomic.Int64
	mu      sync.Mutex
	ch      chan struct{}
}

const queuePoll = 50 * time.Millisecond

func newQueue() *queue { return &queue{ch: make(chan struct{})} }

// signal wakes every waiter; it costs one atomic load when nobody waits.
func (q *queue) signal() {
	if q.waiters.Load() == 0 {
		return
	}
	q.mu.Lock()
	close(q.ch)
	q.ch = make(chan struct{})
	q.mu.Unlock()
}

// wait blocks until a signal, the poll interval, the deadline or ctx's
// end. It returns ctx.Err() when ctx ended and ErrQueueTimeout past the
// deadline.
func (q *queue) wait(ctx context.Context, deadline time.Time) error {
	q.waiters.Add(1)
	defer q.waiters.Add(-1)
	q.mu.Lock()
	ch := q.ch
	q.mu.Unlock()
	d := time.Until(deadline)
	if d <= 0 {
		return ErrQueueTimeout
	}
	if d > queuePoll {
		d = queuePoll
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	if !time.Now().Before(deadline) {
		return ErrQueueTimeout
	}
	return nil
}
