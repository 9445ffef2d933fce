package health

import (
	"sync"
	"time"
)

// Check is the result of one active health check.
type Check struct {
	// Time is when the check ended.
	Time time.Time
	// OK says it passed.
	OK bool
	// Err is why it failed; "" when it passed.
	Err string
}

// historyLen is how many checks a server's history keeps.
const historyLen = 20

// history is the last historyLen checks of a server, a ring.
type history struct {
	mu   sync.Mutex
	ring [historyLen]Check
	next int // where the next check goes
	n    int // checks held, up to historyLen
	// ok and failed count every check since the monitor was made.
	ok, failed uint64
}

func (h *history) add(c Check) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ring[h.next] = c
	h.next = (h.next + 1) % historyLen
	h.n = min(h.n+1, historyLen)
	if c.OK {
		h.ok++
	} else {
		h.failed++
	}
}

// list returns the checks held, oldest first.
func (h *history) list() []Check {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Check, 0, h.n)
	for i := range h.n {
		out = append(out, h.ring[(h.next-h.n+i+historyLen)%historyLen])
	}
	return out
}

// CheckCounts returns how many active health checks of the server
// passed and failed since its monitor was made (it survives reloads).
func (m *Monitor) CheckCounts() (ok, failed uint64) {
	m.checks.mu.Lock()
	defer m.checks.mu.Unlock()
	return m.checks.ok, m.checks.failed
}

// Checks returns the server's last active health checks (up to 20),
// oldest first; none without an active check.
func (m *Monitor) Checks() []Check { return m.checks.list() }
