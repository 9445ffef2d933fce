package integration

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHangingServer puts a server that accepts connections and never
// answers beside a good one, with timeouts.server 500ms. The requests
// routed to it get 504 after about 500ms, are not retried, and are logged
// with the reason and the server; passive health then takes it out after
// 3 of them, so that every later request goes to the good server. When a
// healthy server replaces it on the same port, rise good active checks
// bring it back.
func TestHangingServer(t *testing.T) {
	const serverTimeout = 500 * time.Millisecond
	good := startUp(t, "good", "127.0.0.1:0")
	hang := startUp(t, "hang", "127.0.0.1:0", "-hang")
	// The active check would take the hanging server out too, but only
	// after fall (3) checks of 400ms each: passive health is faster here.
	s, p := startLB(t, lbConfig(`    timeouts: {server: 500ms}
    health_check: {path: /healthz, interval: 500ms, timeout: 400ms, rise: 2}
`, lbServer{addr: good.addr}, lbServer{addr: hang.addr}))
	c := clientFor(t, s, "HTTP/1.1", 8)

	// Round robin sends 3 of 6 concurrent requests to each server.
	mark := len(p.stderr.String())
	results := load(c, 6, 6, func(i int) string { return fmt.Sprintf("/first/%d", i) }, 0, nil)
	timeouts := 0
	for _, r := range results {
		switch {
		case r.err == nil && r.status == 200 && r.server() == "good":
		case r.err == nil && r.status == http.StatusGatewayTimeout:
			timeouts++
			if r.took < serverTimeout-50*time.Millisecond || r.took > serverTimeout+scaled(700*time.Millisecond) {
				t.Errorf("504 after %v, want after about %v: %v", r.took, serverTimeout, r)
			}
		default:
			t.Errorf("want 200 from good or 504: %v", r)
		}
	}
	if timeouts != 3 {
		t.Errorf("%d requests got 504, want 3 (those round robin sent to the hanging server)", timeouts)
	}
	down := waitLogWith(t, p, mark, scaled(2*time.Second), `msg="server down"`, "server="+hang.addr)
	if !strings.Contains(down, `reason="3 consecutive failed requests"`) {
		t.Errorf("the hanging server should be taken out by passive health after 3 timeouts: %s", down)
	}
	// Each 504 is explained in the log, with the server, and none was
	// retried (a slow server is not given the request twice).
	for _, l := range waitLogCount(t, p, mark, timeouts, scaled(2*time.Second), `msg="request failed"`) {
		for _, want := range []string{"status=504", `reason="server timeout"`, "server=" + hang.addr, "attempts=1"} {
			if !strings.Contains(l, want) {
				t.Errorf("a 504 log line lacks %s: %s", want, l)
			}
		}
	}
	if r := logsWith(p, mark, "retrying on another server"); len(r) > 0 {
		t.Errorf("a timed-out request was retried:\n%s", strings.Join(r, "\n"))
	}

	// Out: every request goes to the good server, fast.
	for i, r := range load(c, 30, 3, func(i int) string { return fmt.Sprintf("/after/%d", i) }, 0, nil) {
		if r.err != nil || r.status != 200 || r.server() != "good" || r.took > scaled(300*time.Millisecond) {
			t.Fatalf("request %d after the hanging server was marked down: %v", i, r)
		}
	}

	// A healthy server on the same port comes back after rise checks.
	mark = len(p.stderr.String())
	hang.replace("healed")
	up := waitLogWith(t, p, mark, scaled(4*time.Second), `msg="server up"`, "server="+hang.addr)
	if !strings.Contains(up, `reason="2 consecutive successful health checks"`) {
		t.Errorf("want the server back after rise (2) checks: %s", up)
	}
	served := map[string]int{}
	for i, r := range load(c, 20, 2, func(i int) string { return fmt.Sprintf("/back/%d", i) }, 0, nil) {
		if r.err != nil || r.status != 200 {
			t.Fatalf("request %d after the server came back: %v", i, r)
		}
		served[r.server()]++
	}
	if served["healed"] == 0 || served["good"] == 0 {
		t.Errorf("after the server came back, want requests on both servers, got %v", served)
	}
}

// TestMaxConnsQueue sends 10 concurrent slow requests to one server with
// max_conns 2: the server never sees more than 2 at once (and does see
// 2), and every request is served from the queue when queue_timeout is
// long enough. With a short queue_timeout, the requests that wait too
// long get 503 with Retry-After, and the log says "queue timeout".
func TestMaxConnsQueue(t *testing.T) {
	const conc = 10
	u := startUp(t, "only", "127.0.0.1:0")
	config := func(queueTimeout string) string {
		return lbConfig("    queue_timeout: "+queueTimeout+"\n", lbServer{addr: u.addr, extra: "max_conns: 2"})
	}
	s, p := startLB(t, config("5s"))
	c := clientFor(t, s, "HTTP/1.1", conc)
	slow := func(int) string { return "/slow?ms=300" }

	start := time.Now()
	for i, r := range load(c, conc, conc, slow, 0, nil) {
		if r.err != nil || r.status != 200 || r.server() != "only" {
			t.Errorf("request %d: want 200 after waiting in the queue: %v", i, r)
		}
	}
	took := time.Since(start)
	if peak := u.peak(); peak != 2 {
		t.Errorf("the server saw %d requests at once, want max_conns = 2", peak)
	}
	// Five rounds of two.
	if min := 5 * 300 * time.Millisecond; took < min-50*time.Millisecond {
		t.Errorf("%d requests of 300ms took %v with max_conns 2, want at least %v", conc, took, min)
	}

	if line := reload(t, s, p, config("200ms")); !strings.Contains(line, "msg=reloaded") {
		t.Fatalf("reload: %s", line)
	}
	u.getDirect("/concurrency/reset")
	mark := len(p.stderr.String())
	counts := map[int]int{}
	for i, r := range load(c, conc, conc, slow, 0, nil) {
		counts[r.status]++
		switch {
		case r.err == nil && r.status == 200:
		case r.err == nil && r.status == http.StatusServiceUnavailable:
			if ra := r.header.Get("Retry-After"); ra != "1" {
				t.Errorf("request %d: 503 with Retry-After %q, want 1", i, ra)
			}
			if r.took > scaled(time.Second) {
				t.Errorf("request %d: 503 after %v, want soon after the queue timeout of 200ms", i, r.took)
			}
		default:
			t.Errorf("request %d: want 200 or 503: %v", i, r)
		}
	}
	if counts[503] == 0 || counts[200] < 2 {
		t.Errorf("statuses %v: want 2 or more served and some 503 (queue timeout)", counts)
	}
	if peak := u.peak(); peak > 2 {
		t.Errorf("the server saw %d requests at once, want at most max_conns = 2", peak)
	}
	// Each 503 is explained in the log.
	waitLogCount(t, p, mark, counts[503], scaled(2*time.Second), `msg="request failed"`, "status=503", `reason="queue timeout"`)
	t.Logf("queue_timeout 5s: %d requests in %v; queue_timeout 200ms: statuses %v", conc, took.Round(time.Millisecond), counts)
}
