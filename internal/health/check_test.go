package health

import (
	"crypto/tls"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/balance"
)

// An operator sees a server go down after exactly Fall failed checks and
// come back after exactly Rise good ones, with one log line each.
func TestHTTPCheckFallAndRise(t *testing.T) {
	t.Parallel()
	const rise, fall = 2, 3
	cs := newCheckServer(t, http.StatusOK)
	log, logs := newLog()
	monitorOf(t, cs.st, fastCheck(rise, fall), Passive{}, log)

	waitFor(t, scaled(2*time.Second), "good checks", func() bool { return cs.count(200) >= 2 })
	if !cs.st.Healthy() {
		t.Fatal("server down while its checks pass")
	}

	cs.setStatus(http.StatusServiceUnavailable)
	waitFor(t, scaled(2*time.Second), "failed checks", func() bool { return cs.count(503) >= fall+2 })
	if cs.st.Healthy() {
		t.Fatalf("server up after %d failed checks", cs.count(503))
	}
	// The check after the Fall-th failure is the first to see it down.
	if n, ended := run(cs.healthSeen(503), true); n != fall || !ended {
		t.Fatalf("server went down after %d failed checks (ended %v), want %d", n, ended, fall)
	}

	cs.setStatus(http.StatusOK)
	waitFor(t, scaled(2*time.Second), "good checks", func() bool {
		_, ended := run(cs.healthSeen(200), false)
		return ended
	})
	if n, _ := run(cs.healthSeen(200), false); n != rise {
		t.Fatalf("server came up after %d good checks, want %d", n, rise)
	}
	// A few more good checks: nothing more is logged.
	n := cs.count(200)
	waitFor(t, scaled(2*time.Second), "more good checks", func() bool { return cs.count(200) >= n+2 })
	logs.expectLogged(t, "server down", 1, "reason=\"health check: GET /healthz: status 503\"")
	logs.expectLogged(t, "server up", 1, "2 consecutive successful health checks")
	logs.expectLogged(t, "server down", 1, "server=b/"+cs.addr)

	for _, r := range cs.requests() {
		if r.host != cs.addr || r.path != "/healthz" || r.userAgent != userAgent {
			t.Fatalf("check request Host %q path %q User-Agent %q; want %q /healthz %q", r.host, r.path, r.userAgent, cs.addr, userAgent)
		}
		if !r.close {
			t.Fatal("check request without Connection: close: checks must not keep connections alive")
		}
	}
}

// The accepted statuses are StatusMin..StatusMax (the configuration's
// default is 200..399); redirects count as answers and are not followed.
func TestHTTPCheckStatusRange(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		status   int
		min, max int
		ok       bool
	}{
		{status: 200, min: 200, max: 399, ok: true},
		{status: 204, min: 200, max: 399, ok: true},
		{status: 302, min: 200, max: 399, ok: true},
		{status: 399, min: 200, max: 399, ok: true},
		{status: 404, min: 200, max: 399, ok: false},
		{status: 500, min: 200, max: 399, ok: false},
		{status: 302, min: 200, max: 299, ok: false},
		{status: 404, min: 200, max: 404, ok: true},
	} {
		t.Run(fmt.Sprintf("%d_in_%d-%d", tc.status, tc.min, tc.max), func(t *testing.T) {
			t.Parallel()
			cs := newCheckServer(t, tc.status)
			a := fastCheck(1, 1)
			a.StatusMin, a.StatusMax = tc.min, tc.max
			// Start from the state the status must change.
			cs.st.SetHealthy(!tc.ok)
			monitorOf(t, cs.st, a, Passive{}, quiet)
			waitFor(t, scaled(2*time.Second), "three checks", func() bool { return cs.count(tc.status) >= 3 })
			if got := cs.st.Healthy(); got != tc.ok {
				t.Fatalf("status %d with range %d..%d: healthy %v, want %v", tc.status, tc.min, tc.max, got, tc.ok)
			}
			for _, r := range cs.requests() {
				if r.path != "/healthz" {
					t.Fatalf("the check requested %s: it followed a redirect", r.path)
				}
			}
		})
	}
}

// Host sets the Host header of the check.
func TestHTTPCheckHost(t *testing.T) {
	t.Parallel()
	cs := newCheckServer(t, http.StatusOK)
	a := fastCheck(1, 1)
	a.Host = "svc.example:8080"
	monitorOf(t, cs.st, a, Passive{}, quiet)
	cs.waitArrival(t)
	if r := cs.requests()[0]; r.host != "svc.example:8080" {
		t.Fatalf("Host %q, want svc.example:8080", r.host)
	}
}

// With TLS the check is HTTPS; a plain check against a TLS server fails.
func TestHTTPSCheck(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Listener.Close()
	srv.Listener = l
	// Quiet about the plain check's requests.
	srv.Config.ErrorLog = stdlog.New(io.Discard, "", 0)
	// The server prefers h2: the check must still speak HTTP/1.1 and pass.
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	addr := l.Addr().String()

	tlsState := balance.NewState(addr)
	tlsState.SetHealthy(false)
	a := fastCheck(1, 1)
	a.TLS = &tls.Config{RootCAs: roots, NextProtos: []string{"h2", "http/1.1"}}
	monitorOf(t, tlsState, a, Passive{}, quiet)

	plainState := balance.NewState(addr)
	log, logs := newLog()
	monitorOf(t, plainState, fastCheck(1, 1), Passive{}, log)

	waitFor(t, scaled(2*time.Second), "the HTTPS check to pass", tlsState.Healthy)
	waitFor(t, scaled(2*time.Second), "the plain check to fail", func() bool { return !plainState.Healthy() })
	logs.expectLogged(t, "server down", 1, "status 400")
}

// tcpServer accepts and closes connections on l, counting them.
func tcpServer(t *testing.T, l net.Listener) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	})
	return &wg
}

// A TCP check takes a server down when its port closes and brings it back
// when it opens again.
func TestTCPCheck(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	accepted := tcpServer(t, l)

	st := balance.NewState(addr)
	log, logs := newLog()
	a := &Active{Kind: "tcp", Interval: scaled(30 * time.Millisecond), Timeout: scaled(25 * time.Millisecond), Rise: 2, Fall: 2}
	monitorOf(t, st, a, Passive{}, log)

	time.Sleep(3 * a.Interval)
	if !st.Healthy() {
		t.Fatal("server down while its port is open")
	}
	l.Close()
	accepted.Wait()
	waitFor(t, scaled(2*time.Second), "server down", func() bool { return !st.Healthy() })
	logs.expectLogged(t, "server down", 1, `reason="health check: connect: connection refused"`)

	var l2 net.Listener
	waitFor(t, scaled(2*time.Second), "listening on "+addr+" again", func() bool {
		l2, err = net.Listen("tcp", addr)
		return err == nil
	})
	defer l2.Close()
	tcpServer(t, l2)
	waitFor(t, scaled(2*time.Second), "server up", st.Healthy)
	logs.expectLogged(t, "server up", 1, "2 consecutive successful health checks")
}

// hangServer accepts connections and never answers. It reports each
// connection when accepted, and how long the client kept it open.
func hangServer(t *testing.T) (addr string, accepted <-chan struct{}, held <-chan time.Duration) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	acc := make(chan struct{}, 100)
	ch := make(chan time.Duration, 100)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			start := time.Now()
			acc <- struct{}{}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						break
					}
				}
				ch <- time.Since(start)
			}()
		}
	}()
	return l.Addr().String(), acc, ch
}

// A server that accepts and never answers fails the check within Timeout.
func TestHTTPCheckTimeout(t *testing.T) {
	t.Parallel()
	addr, _, held := hangServer(t)
	st := balance.NewState(addr)
	log, logs := newLog()
	const timeout = 50 * time.Millisecond
	a := fastCheck(defaultRise, 1)
	a.Interval, a.Timeout = max(scaled(100*time.Millisecond), 2*timeout), timeout
	monitorOf(t, st, a, Passive{}, log)

	select {
	case d := <-held:
		if d < timeout*8/10 || d > timeout+scaled(100*time.Millisecond) {
			t.Fatalf("the check held the connection %v, want about %v", d, timeout)
		}
	case <-time.After(scaled(2 * time.Second)):
		t.Fatal("the check never gave up")
	}
	waitFor(t, scaled(time.Second), "server down", func() bool { return !st.Healthy() })
	logs.expectLogged(t, "server down", 1, `reason="health check: GET /healthz: timeout after 50ms"`)
}

// Stop abandons a check in flight at once, and the abandoned check does
// not count.
func TestStopAbandonsCheck(t *testing.T) {
	t.Parallel()
	addr, accepted, held := hangServer(t)
	st := balance.NewState(addr)
	a := fastCheck(defaultRise, 1)
	a.Path, a.Interval, a.Timeout = "/", time.Second, 900*time.Millisecond
	m := NewMonitor("b/"+addr, st, a, Passive{}, quiet)
	m.Start()
	select {
	case <-accepted:
	case <-time.After(scaled(2 * time.Second)):
		m.Stop()
		t.Fatal("no check arrived")
	}
	start := time.Now()
	m.Stop()
	if d := time.Since(start); d > scaled(300*time.Millisecond) {
		t.Fatalf("Stop took %v with a check in flight, want it abandoned at once", d)
	}
	select {
	case <-held:
	case <-time.After(scaled(time.Second)):
		t.Fatal("the abandoned check kept its connection open")
	}
	if !st.Healthy() {
		t.Fatal("server down: the abandoned check counted as a failure")
	}
}
