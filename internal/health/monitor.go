package health

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis/portcullis/internal/balance"
)

// Monitor runs the health checks of one server and records the verdict in
// its balance.State. Create it with NewMonitor, then Start; Observe is
// called by the proxy for every finished request. All methods are safe for
// concurrent use.
type Monitor struct {
	name string
	st   *balance.State
	log  *slog.Logger

	// Read by Observe without the lock.
	failures atomic.Int64 // Passive.Failures; 0: passive checks off
	count5xx atomic.Bool  // Passive.Count5xx
	streak   atomic.Int64 // consecutive failed requests
	checks   history      // the last active checks

	// wg counts the running check loop and an armed cooldown timer, so
	// that Stop can wait for both.
	wg sync.WaitGroup

	mu      sync.Mutex
	passive Passive // normalized
	probe   *prober // nil: no active check
	started bool
	stopped bool
	loop    *loop // the running check loop, or nil
	// epoch changes when the results of checks already in flight must not
	// count (passive took the server down meanwhile).
	epoch      uint64
	oks, fails int // consecutive active check results
	cooldown   *time.Timer
	coolFrom   time.Time // when the pending cooldown began; zero: none
	upAt       time.Time // when it ends
}

// loop is one run of the check loop goroutine.
type loop struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// NewMonitor returns a stopped monitor of the server whose state is st.
// name ("backend/address") identifies the server in logs. active is the
// active check, nil for none; passive the passive check (see Active and
// Passive for what their zero fields mean; NewMonitor panics if
// active.Interval is not positive). log nil means slog.Default(). The
// current health in st is kept.
func NewMonitor(name string, st *balance.State, active *Active, passive Passive, log *slog.Logger) *Monitor {
	if log == nil {
		log = slog.Default()
	}
	m := &Monitor{name: name, st: st, log: log}
	if cfg := active.normalized(); cfg != nil {
		m.probe = newProber(cfg, st.Address)
	}
	m.setPassive(passive.normalized())
	return m
}

// Name is the server's name in logs, "backend/address".
func (m *Monitor) Name() string { return m.name }

// Start launches the active check loop, if there is an active check: the
// first check runs soon after, then one every Interval. If the server is
// down and there is no active check, it comes back after the passive
// Cooldown. Start does nothing after the first call or after Stop.
func (m *Monitor) Start() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started || m.stopped {
		return
	}
	m.started = true
	if m.probe != nil {
		m.startLoop()
	} else {
		m.recoverWithoutActive()
	}
}

// Stop stops the check loop and a pending cooldown, and waits until no
// goroutine of the monitor runs. A check in flight is abandoned and does
// not count. The server's health stays as it is; after Stop, Observe only
// counts. Stop is idempotent; a stopped monitor cannot be started again.
func (m *Monitor) Stop() {
	m.mu.Lock()
	if !m.stopped {
		m.stopped = true
		m.stopLoop()
		m.stopCooldown()
	}
	p := m.probe
	m.mu.Unlock()
	m.wg.Wait()
	if p != nil {
		p.close()
	}
}

// Update takes new settings, on reload, without changing the server's
// health or its consecutive counts (the active counts restart when the
// active check is added or removed). The check loop restarts when the
// interval changed (a check in flight then does not count), starts when an
// active check was added and stops when it was removed; other changes take
// effect from the next check. Without an active check, a down server comes
// back when the new Cooldown has passed since it went down (or since the
// active check was removed), at once if passive checks are off too.
func (m *Monitor) Update(active *Active, passive Passive) {
	var next *prober
	if cfg := active.normalized(); cfg != nil {
		next = newProber(cfg, m.st.Address)
	}
	passive = passive.normalized()

	m.mu.Lock()
	old := m.probe
	m.probe = next
	m.setPassive(passive)
	var stale *loop
	if m.started && !m.stopped {
		switch {
		case next == nil:
			if old != nil {
				stale = m.stopLoop()
				m.oks, m.fails = 0, 0
			}
			m.recoverWithoutActive()
		case old == nil:
			// The active check decides from now on.
			m.stopCooldown()
			m.oks, m.fails = 0, 0
			m.startLoop()
		case old.cfg.Interval != next.cfg.Interval:
			stale = m.stopLoop()
			m.startLoop()
		}
	}
	m.mu.Unlock()

	if stale != nil {
		<-stale.done
	}
	if old != nil {
		old.close()
	}
}

// Observe records the result of one finished request: ok is false for a
// connect error, a timeout or a reset, and for a 5xx response when
// ResponseOK says so. It is cheap: on success one atomic load (and a
// store after failures); no lock and no allocation.
func (m *Monitor) Observe(ok bool) {
	if ok {
		if m.streak.Load() != 0 {
			m.streak.Store(0)
		}
		return
	}
	limit := m.failures.Load()
	if limit <= 0 {
		return
	}
	if m.streak.Add(1) >= limit && m.st.Healthy() {
		m.tripPassive()
	}
}

// ResponseOK reports whether a response with this status counts as a
// success for Observe: any status, unless Count5xx is set and it is 5xx.
func (m *Monitor) ResponseOK(status int) bool {
	return status < 500 || status > 599 || !m.count5xx.Load()
}

func (m *Monitor) setPassive(p Passive) {
	m.passive = p
	m.failures.Store(int64(p.Failures))
	m.count5xx.Store(p.Count5xx)
}

// tripPassive takes the server down after enough failed requests.
func (m *Monitor) tripPassive() {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, limit := m.streak.Load(), m.failures.Load()
	if m.stopped || limit <= 0 || n < limit {
		return // a success or a state change came first
	}
	if !m.down(fmt.Sprintf("%d consecutive failed requests", n)) {
		return
	}
	// Come back only after Rise checks that started after this.
	m.epoch++
	m.oks = 0
	if m.probe == nil {
		m.armCooldown(time.Now())
	}
}

// recoverWithoutActive brings back a down server that has no active
// check: when Cooldown has passed since it went down (or since now, if
// no cooldown is pending), or at once when passive checks are off. m.mu
// is held and the monitor is not stopped.
func (m *Monitor) recoverWithoutActive() {
	if m.st.Healthy() {
		return
	}
	if m.passive.Failures == 0 {
		m.up("no active or passive health check")
		return
	}
	from := m.coolFrom
	if from.IsZero() {
		from = time.Now()
	}
	if !m.upAt.Equal(from.Add(m.passive.Cooldown)) {
		m.armCooldown(from)
	}
}

// up and down set the health and log a change; they report whether the
// health changed. m.mu is held, so the log lines come in the order of the
// changes.
func (m *Monitor) up(reason string) bool {
	if !m.st.SetHealthy(true) {
		return false
	}
	m.streak.Store(0)
	m.stopCooldown()
	m.log.Info("server up", "server", m.name, "reason", reason)
	return true
}

func (m *Monitor) down(reason string) bool {
	if !m.st.SetHealthy(false) {
		return false
	}
	m.log.Warn("server down", "server", m.name, "reason", reason)
	return true
}

// armCooldown brings the server up when Cooldown has passed since from,
// unless an active check is added first. m.mu is held and the monitor is
// not stopped.
func (m *Monitor) armCooldown(from time.Time) {
	m.coolFrom, m.upAt = from, from.Add(m.passive.Cooldown)
	d := time.Until(m.upAt)
	if m.cooldown == nil {
		m.wg.Add(1)
		m.cooldown = time.AfterFunc(d, m.cooledDown)
		return
	}
	if !m.cooldown.Stop() {
		m.wg.Add(1) // it had fired or been stopped: its count is gone
	}
	m.cooldown.Reset(d)
}

// stopCooldown cancels a pending cooldown. m.mu is held.
func (m *Monitor) stopCooldown() {
	m.coolFrom, m.upAt = time.Time{}, time.Time{}
	if m.cooldown != nil && m.cooldown.Stop() {
		m.wg.Done()
	}
}

func (m *Monitor) cooledDown() {
	defer m.wg.Done()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped || m.probe != nil || m.upAt.IsZero() || time.Now().Before(m.upAt) {
		return // cancelled, or re-armed for later
	}
	m.coolFrom, m.upAt = time.Time{}, time.Time{}
	m.up(fmt.Sprintf("cooldown of %v elapsed", m.passive.Cooldown))
}

// startLoop starts the check loop. m.mu is held, m.probe is not nil and
// the monitor is not stopped.
func (m *Monitor) startLoop() {
	ctx, cancel := context.WithCancel(context.Background())
	l := &loop{cancel: cancel, done: make(chan struct{})}
	m.loop = l
	m.wg.Add(1)
	go m.run(ctx, l.done, m.probe.cfg.Interval)
}

// stopLoop cancels the check loop and returns it, so that the caller can
// wait for it once m.mu is released. m.mu is held.
func (m *Monitor) stopLoop() *loop {
	l := m.loop
	if l != nil {
		m.loop = nil
		l.cancel()
	}
	return l
}

// run checks the server every interval until ctx is cancelled. Checks
// start every interval (±5%) whatever they take, the first one within a
// tenth of an interval, so that the servers of a backend are not all
// checked at the same instant.
func (m *Monitor) run(ctx context.Context, done chan<- struct{}, interval time.Duration) {
	defer m.wg.Done()
	defer close(done)
	t := time.NewTimer(rand.N(interval/10 + 1))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		m.checkOnce(ctx)
		jitter := rand.N(interval/10+1) - interval/20
		t.Reset(max(0, interval+jitter-time.Since(start)))
	}
}

func (m *Monitor) checkOnce(ctx context.Context) {
	m.mu.Lock()
	p, epoch := m.probe, m.epoch
	m.mu.Unlock()
	if p == nil {
		return
	}
	err := p.check(ctx)

	m.mu.Lock()
	defer m.mu.Unlock()
	if ctx.Err() != nil || epoch != m.epoch || m.probe == nil {
		return // stopped, restarted or overtaken: the result does not count
	}
	c := Check{Time: time.Now(), OK: err == nil}
	if err != nil {
		c.Err = err.Error()
	}
	m.checks.add(c)
	cfg := m.probe.cfg // the newest thresholds
	if err == nil {
		m.fails = 0
		m.oks++
		if m.oks >= cfg.Rise && !m.st.Healthy() {
			m.up(fmt.Sprintf("%d consecutive successful health checks", m.oks))
		}
		return
	}
	m.oks = 0
	m.fails++
	if m.fails >= cfg.Fall && m.st.Healthy() {
		m.down("health check: " + err.Error())
	}
}
