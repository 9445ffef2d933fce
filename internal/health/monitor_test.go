package health

import (
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/balance"
)

// Without an active check, Failures consecutive failed requests take a
// server down, a success in between resets the count, and the server comes
// back after Cooldown.
func TestPassiveCooldown(t *testing.T) {
	t.Parallel()
	st := balance.NewState("127.0.0.1:1")
	log, logs := newLog()
	cooldown := scaled(100 * time.Millisecond)
	m := monitorOf(t, st, nil, Passive{Failures: 3, Cooldown: cooldown}, log)

	m.Observe(false)
	m.Observe(false)
	m.Observe(true)
	m.Observe(false)
	m.Observe(false)
	if !st.Healthy() {
		t.Fatal("server down although a success came between the failures")
	}
	m.Observe(false)
	downAt := time.Now()
	if st.Healthy() {
		t.Fatal("server up after 3 consecutive failed requests")
	}
	for range 10 { // requests that were in flight
		m.Observe(false)
	}
	logs.expectLogged(t, "server down", 1, `reason="3 consecutive failed requests"`)

	waitFor(t, cooldown+scaled(time.Second), "server up after the cooldown", st.Healthy)
	if d := time.Since(downAt); d < cooldown {
		t.Fatalf("server up after %v, before the cooldown of %v", d, cooldown)
	}
	logs.expectLogged(t, "server up", 1, "cooldown of "+cooldown.String()+" elapsed")

	// Back up, the count starts again.
	m.Observe(false)
	m.Observe(false)
	if !st.Healthy() {
		t.Fatal("server down after 2 failures: the count was not reset when it came up")
	}
	m.Observe(false)
	if st.Healthy() {
		t.Fatal("server up after 3 more failed requests")
	}
	logs.expectLogged(t, "server down", 2, "3 consecutive failed requests")
}

// With an active check, a server taken down by failed requests comes back
// only after Rise good checks that started after it went down; the
// cooldown does not apply.
func TestPassiveWithActiveCheck(t *testing.T) {
	t.Parallel()
	const rise = 3
	cs := newCheckServer(t, http.StatusOK)
	log, logs := newLog()
	m := monitorOf(t, cs.st, fastCheck(rise, 2), Passive{Failures: 2, Cooldown: time.Nanosecond}, log)

	// Fail right after a check arrived, while it is in flight: its result
	// must not count towards Rise.
	cs.waitArrival(t)
	m.Observe(false)
	m.Observe(false)
	if cs.st.Healthy() {
		t.Fatal("server up after 2 consecutive failed requests")
	}
	waitFor(t, scaled(2*time.Second), "server up", func() bool {
		_, ended := run(cs.healthSeen(200), false)
		return ended
	})
	if n, _ := run(cs.healthSeen(200), false); n != rise {
		t.Fatalf("server came up after %d good checks, want %d", n, rise)
	}
	logs.expectLogged(t, "server down", 1, "2 consecutive failed requests")
	logs.expectLogged(t, "server up", 1, "3 consecutive successful health checks")
}

// Passive checks with Failures 0 are off.
func TestPassiveOff(t *testing.T) {
	t.Parallel()
	st := balance.NewState("127.0.0.1:1")
	m := monitorOf(t, st, nil, Passive{}, quiet)
	for range 100 {
		m.Observe(false)
	}
	if !st.Healthy() {
		t.Fatal("server down with passive checks off")
	}
}

func TestResponseOK(t *testing.T) {
	t.Parallel()
	st := balance.NewState("127.0.0.1:1")
	plain := NewMonitor("b/x", st, nil, Passive{Failures: 3, Cooldown: defaultCooldown}, quiet)
	strict := NewMonitor("b/x", st, nil, Passive{Failures: 3, Count5xx: true, Cooldown: defaultCooldown}, quiet)
	for _, tc := range []struct {
		status        int
		plain, strict bool
	}{{200, true, true}, {404, true, true}, {500, true, false}, {503, true, false}} {
		if got := plain.ResponseOK(tc.status); got != tc.plain {
			t.Errorf("Count5xx false: ResponseOK(%d) = %v", tc.status, got)
		}
		if got := strict.ResponseOK(tc.status); got != tc.strict {
			t.Errorf("Count5xx true: ResponseOK(%d) = %v", tc.status, got)
		}
	}
}

// Observe is on the request path: it must not allocate.
func TestObserveDoesNotAllocate(t *testing.T) {
	m := NewMonitor("b/x", balance.NewState("127.0.0.1:1"), nil, Passive{Failures: 1 << 30, Cooldown: defaultCooldown}, quiet)
	if n := testing.AllocsPerRun(1000, func() { m.Observe(true) }); n != 0 {
		t.Errorf("Observe(true) allocates %v times", n)
	}
	if n := testing.AllocsPerRun(1000, func() { m.Observe(false) }); n != 0 {
		t.Errorf("Observe(false) below Failures allocates %v times", n)
	}
}

func BenchmarkObserve(b *testing.B) {
	m := NewMonitor("b/x", balance.NewState("127.0.0.1:1"), nil, Passive{Failures: 3, Cooldown: defaultCooldown}, quiet)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Observe(true)
		}
	})
}

// monitorGoroutines lists the goroutines running monitor code or an HTTP
// client connection.
func monitorGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "health.(*Monitor)") || strings.Contains(g, "net/http.(*persistConn)") {
			out = append(out, g)
		}
	}
	return out
}

// Stop leaves no goroutine behind, whatever was running, and is
// idempotent. Not parallel: it looks at every goroutine.
func TestStopLeavesNoGoroutine(t *testing.T) {
	cs := newCheckServer(t, http.StatusOK)
	active := NewMonitor("b/active", cs.st, fastCheck(2, 2), Passive{Failures: 1, Cooldown: defaultCooldown}, quiet)
	active.Start()
	cs.waitArrival(t)
	cs.waitArrival(t)
	active.Observe(false) // down, waiting for good checks

	cooling := NewMonitor("b/cooling", balance.NewState("127.0.0.1:1"), nil, Passive{Failures: 1, Cooldown: time.Hour}, quiet)
	cooling.Start()
	cooling.Observe(false) // down, a cooldown timer armed

	idle := NewMonitor("b/idle", balance.NewState("127.0.0.1:1"), fastCheck(2, 2), Passive{}, quiet)

	if len(monitorGoroutines()) == 0 {
		t.Fatal("no monitor goroutine found while one runs: the check below would prove nothing")
	}
	var wg sync.WaitGroup
	for _, m := range []*Monitor{active, cooling, idle} {
		wg.Go(m.Stop)
		wg.Go(m.Stop)
	}
	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(scaled(2 * time.Second)):
		t.Fatal("Stop did not return")
	}
	waitFor(t, scaled(time.Second), "monitor goroutines to end", func() bool { return len(monitorGoroutines()) == 0 })

	active.Stop()
	idle.Start() // after Stop: nothing starts
	n := len(cs.arrivals())
	time.Sleep(3 * fastCheck(2, 2).Interval)
	if got := len(cs.arrivals()); got != n {
		t.Fatalf("%d checks after Stop", got-n)
	}
	if g := monitorGoroutines(); len(g) != 0 {
		t.Fatalf("goroutines after Stop:\n%s", strings.Join(g, "\n\n"))
	}
	if active.st.Healthy() || cooling.st.Healthy() {
		t.Fatal("Stop changed the health of a server")
	}
}

// Update keeps the server's health, and a new interval takes effect at
// once: the loop restarts.
func TestUpdateKeepsHealth(t *testing.T) {
	t.Parallel()
	cs := newCheckServer(t, http.StatusOK)
	log, logs := newLog()
	slow := fastCheck(2, defaultFall)
	slow.Interval, slow.Timeout = time.Hour, defaultTimeout
	m := monitorOf(t, cs.st, slow, Passive{Failures: 2, Cooldown: defaultCooldown}, log)
	m.Observe(false)
	m.Observe(false)
	if cs.st.Healthy() {
		t.Fatal("server up after 2 failed requests")
	}

	m.Update(fastCheck(2, 3), Passive{Failures: 5, Cooldown: defaultCooldown})
	if cs.st.Healthy() {
		t.Fatal("Update brought a down server up")
	}
	// With the hour-long interval the next check would be minutes away.
	waitFor(t, scaled(2*time.Second), "server up after good checks at the new interval", cs.st.Healthy)
	if n, _ := run(cs.healthSeen(200), false); n != 2 {
		t.Fatalf("server came up after %d good checks, want 2", n)
	}

	// The new passive setting holds.
	for range 4 {
		m.Observe(false)
	}
	if !cs.st.Healthy() {
		t.Fatal("server down after 4 failed requests with Failures 5")
	}
	m.Observe(true)

	// Same interval, new status range: the loop goes on with the new one.
	strict := fastCheck(2, 3)
	strict.StatusMax = 199
	m.Update(strict, Passive{Failures: 5, Cooldown: defaultCooldown})
	waitFor(t, scaled(2*time.Second), "server down under the new status range", func() bool { return !cs.st.Healthy() })
	logs.expectLogged(t, "server down", 2, "server=b/"+cs.addr)
	logs.expectLogged(t, "server up", 1, "2 consecutive successful health checks")
}

// Adding an active check to a server cooling down hands it to the check;
// removing the check from a down server falls back to the cooldown.
func TestUpdateAddsAndRemovesActiveCheck(t *testing.T) {
	t.Parallel()
	cs := newCheckServer(t, http.StatusServiceUnavailable)
	log, logs := newLog()
	m := monitorOf(t, cs.st, nil, Passive{Failures: 1, Cooldown: time.Hour}, log)
	m.Observe(false)
	if cs.st.Healthy() {
		t.Fatal("server up after a failed request")
	}

	m.Update(fastCheck(1, 1), Passive{Failures: 1, Cooldown: time.Hour})
	waitFor(t, scaled(2*time.Second), "failed checks", func() bool { return cs.count(503) >= 2 })
	if cs.st.Healthy() {
		t.Fatal("server up while its check fails")
	}
	cs.setStatus(http.StatusOK)
	waitFor(t, scaled(2*time.Second), "server up from its check", cs.st.Healthy)

	cs.setStatus(http.StatusServiceUnavailable)
	waitFor(t, scaled(2*time.Second), "server down from its check", func() bool { return !cs.st.Healthy() })

	cooldown := scaled(50 * time.Millisecond)
	m.Update(nil, Passive{Failures: 1, Cooldown: cooldown})
	n := cs.count(503)
	waitFor(t, cooldown+scaled(time.Second), "server up after the cooldown", cs.st.Healthy)
	if cs.count(503) > n+1 { // one check may have been in flight
		t.Fatalf("%d checks after the active check was removed", cs.count(503)-n)
	}
	logs.expectLogged(t, "server up", 2, "server=b/"+cs.addr)
	if l := logs.lines("server up"); !strings.Contains(l[1], "cooldown of "+cooldown.String()) {
		t.Fatalf("second up line %q does not name the cooldown", l[1])
	}

	// Both checks off: a down server comes back at once.
	m.Observe(false)
	if cs.st.Healthy() {
		t.Fatal("server up after a failed request")
	}
	m.Update(nil, Passive{})
	if !cs.st.Healthy() {
		t.Fatal("server still down with no health check left")
	}
}

// A monitor created for a server that is already down (a reload that made
// a new one) keeps it down until the checks say otherwise.
func TestNewMonitorKeepsHealth(t *testing.T) {
	t.Parallel()
	cs := newCheckServer(t, http.StatusOK)
	cs.st.SetHealthy(false)
	monitorOf(t, cs.st, fastCheck(2, 2), Passive{}, quiet)
	waitFor(t, scaled(2*time.Second), "server up", cs.st.Healthy)
	if n, _ := run(cs.healthSeen(200), false); n != 2 {
		t.Fatalf("server came up after %d good checks, want 2", n)
	}
}

// Active and Passive hold no defaults (the configuration's are tested in
// internal/config); normalized only makes what it is given consistent.
func TestNormalized(t *testing.T) {
	t.Parallel()
	if (*Active)(nil).normalized() != nil {
		t.Fatal("no active check became one")
	}
	const interval = 2 * time.Second
	if a := (&Active{Interval: interval}).normalized(); a.Kind != "tcp" {
		t.Fatalf("no kind and no path: kind %q", a.Kind)
	}
	if a := (&Active{Path: "healthz", Interval: interval}).normalized(); a.Kind != "http" || a.Path != "/healthz" {
		t.Fatalf("Path only: kind %q path %q", a.Kind, a.Path)
	}
	if a := (&Active{Kind: "http", Interval: interval}).normalized(); a.Path != "/" {
		t.Fatalf("http without a path: %q", a.Path)
	}
	if a := (&Active{Interval: 400 * time.Millisecond}).normalized(); a.Timeout != 200*time.Millisecond {
		t.Fatalf("no timeout: timeout %v, want half the interval", a.Timeout)
	}
	if a := (&Active{Interval: time.Second, Timeout: 3 * time.Second}).normalized(); a.Timeout >= a.Interval {
		t.Fatalf("timeout %v not below interval %v", a.Timeout, a.Interval)
	}
	if a := (&Active{Kind: " UDP ", Port: -1, Interval: interval}).normalized(); a.Kind != "udp" || a.Port != 0 {
		t.Fatalf("kind UDP, port -1: kind %q port %d", a.Kind, a.Port)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("no panic for an active check without an interval")
			}
		}()
		(&Active{Kind: "tcp"}).normalized()
	}()
	if got := checkAddr("[::1]:53", 8053); got != "[::1]:8053" {
		t.Fatalf("checkAddr: %q", got)
	}
	if got := checkAddr("db.example:5432", 0); got != "db.example:5432" {
		t.Fatalf("checkAddr without a port: %q", got)
	}
	if p := (Passive{Failures: -1}).normalized(); p.Failures != 0 || p.Cooldown != 0 {
		t.Fatalf("Passive with Failures -1: %+v, want off", p)
	}
	if got := hostOnly("svc.example:8443"); got != "svc.example" {
		t.Fatalf("hostOnly: %q", got)
	}
}

// An unknown kind fails every check and says why.
func TestUnknownKind(t *testing.T) {
	t.Parallel()
	st := balance.NewState("127.0.0.1:1")
	log, logs := newLog()
	monitorOf(t, st, &Active{Kind: "icmp", Interval: scaled(30 * time.Millisecond), Timeout: scaled(15 * time.Millisecond), Rise: defaultRise, Fall: 1}, Passive{}, log)
	waitFor(t, scaled(2*time.Second), "server down", func() bool { return !st.Healthy() })
	logs.expectLogged(t, "server down", 1, `unknown check kind \"icmp\"`)
}
