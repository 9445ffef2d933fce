package upstream

import (
	"sync/atomic"
	"time"
)

// retryBudget caps retries at a percentage of requests over a sliding
// window of ten one-second buckets, with a floor so that a quiet backend
// can still retry. It keeps retries from multiplying load when a whole
// fleet fails (the "retry storm").
type retryBudget struct {
	percent  int64
	minPerS  int64
	buckets  [10]budgetBucket
	nowUnixS func() int64
}

type budgetBucket struct {
	second   atomic.Int64
	requests atomic.Int64
	retries  atomic.Int64
}

func newRetryBudget(percent int) *retryBudget {
	return &retryBudget{percent: int64(percent), minPerS: 3, nowUnixS: func() int64 { return time.Now().Unix() }}
}

// bucket returns the current second's bucket, resetting it if it holds an
// older second.
func (b *retryBudget) bucket() *budgetBucket {
	now := b.nowUnixS()
	bk := &b.buckets[now%int64(len(b.buckets))]
	if old := bk.second.Load(); old != now && bk.second.CompareAndSwap(old, now) {
		bk.requests.Store(0)
		bk.retries.Store(0)
	}
	return bk
}

// request counts a request.
func (b *retryBudget) request() { b.bucket().requests.Add(1) }

// allow reports whether one more retry fits the budget, and counts it.
func (b *retryBudget) allow() bool {
	now := b.nowUnixS()
	cur := b.bucket()
	var requests, retries int64
	for i := range b.buckets {
		bk := &b.buckets[i]
		if now-bk.second.Load() < int64(len(b.buckets)) {
			requests += bk.requests.Load()
			retries += bk.retries.Load()
		}
	}
	limit := requests * b.percent / 100
	if floor := b.minPerS * int64(len(b.buckets)); limit < floor {
		limit = floor
	}
	if retries >= limit {
		return false
	}
	cur.retries.Add(1)
	return true
}
