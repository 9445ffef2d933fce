package upstream

import "testing"

func TestRetryBudget(t *testing.T) {
	now := int64(1000)
	b := newRetryBudget(20)
	b.nowUnixS = func() int64 { return now }
	for i := 0; i < 1000; i++ {
		b.request()
	}
	allowed := 0
	for i := 0; i < 1000; i++ {
		if b.allow() {
			allowed++
		}
	}
	if allowed != 200 {
		t.Errorf("allowed %d retries for 1000 requests at 20%%, want 200", allowed)
	}
	now += 10 // the window has passed: only the floor of 3 per second
	allowed = 0
	for i := 0; i < 100; i++ {
		if b.allow() {
			allowed++
		}
	}
	if allowed != 30 {
		t.Errorf("allowed %d retries on a quiet backend, want the floor of 30 per 10s", allowed)
	}
}

// retry_budget: 0 leaves only the floor, whatever the request rate.
func TestRetryBudgetZero(t *testing.T) {
	b := newRetryBudget(0)
	b.nowUnixS = func() int64 { return 1000 }
	for i := 0; i < 1000; i++ {
		b.request()
	}
	allowed := 0
	for i := 0; i < 1000; i++ {
		if b.allow() {
			allowed++
		}
	}
	if allowed != 30 {
		t.Errorf("allowed %d retries for 1000 requests at 0%%, want the floor of 30 per 10s", allowed)
	}
}
