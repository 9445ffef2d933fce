package integration

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestReloadDrainDisable drains, disables and re-activates a server by
// rewriting the configuration and sending SIGHUP, under a light continuous
// load: a request in flight on the drained server finishes, no new request
// reaches it while it is drained or disabled, no request fails during the
// reloads, and each change of state is logged once. It then checks that a
// broken file is refused, with its FILE:LINE:COL in the log and in the
// service status, and the old configuration still serving.
// (Reloads that change listeners are tested in
// reload_listeners_test.go.)
func TestReloadDrainDisable(t *testing.T) {
	a := startUp(t, "a", "127.0.0.1:0")
	b := startUp(t, "b", "127.0.0.1:0")
	config := func(stateA, settings string) string {
		extra := ""
		if stateA != "" {
			extra = "state: " + stateA
		}
		return lbConfig(settings, lbServer{addr: a.addr, extra: extra}, lbServer{addr: b.addr})
	}
	s, p := startLB(t, config("", ""))
	c := clientFor(t, s, "HTTP/1.1", 8)
	expect := func(what string, n int, from ...string) map[string]int {
		t.Helper()
		served := map[string]int{}
		for i := range n {
			r := get(c, fmt.Sprintf("/%s/%d", what, i))
			if r.err != nil || r.status != 200 {
				t.Fatalf("%s: request %d: %v", what, i, r)
			}
			served[r.server()]++
		}
		for name := range served {
			if !slices.Contains(from, name) {
				t.Errorf("%s: %d of %d requests went to %s, want only %v", what, served[name], n, name, from)
			}
		}
		return served
	}

	// One slow request in flight on each server (round robin).
	slow := make(chan result, 2)
	for range 2 {
		go func() { slow <- get(c, "/slow?ms=1500") }()
	}
	deadline := time.Now().Add(scaled(2 * time.Second))
	for a.current() != 1 || b.current() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the two slow requests did not reach one server each: a has %d, b has %d", a.current(), b.current())
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop := make(chan struct{})
	background := loop(c, 4, "/background", stop)
	time.Sleep(100 * time.Millisecond)

	// Drain a.
	mark := len(p.stderr.String())
	if line := reload(t, s, p, config("drain", "")); !strings.Contains(line, "msg=reloaded") {
		t.Fatalf("reload to drain a: %s", line)
	}
	drained := time.Now()
	if a.current() != 1 {
		t.Errorf("the slow request on a is no longer in flight after the reload (a serves %d)", a.current())
	}
	expect("drained", 50, "b")

	// Disable a.
	if line := reload(t, s, p, config("disabled", "")); !strings.Contains(line, "msg=reloaded") {
		t.Fatalf("reload to disable a: %s", line)
	}
	expect("disabled", 20, "b")

	// The slow requests finished normally, one on each server.
	names := map[string]bool{}
	for range 2 {
		r := <-slow
		if r.err != nil || r.status != 200 || r.body != r.server()+" GET /slow HTTP/1.1\n" {
			t.Errorf("a slow request in flight across the reloads: %v", r)
		}
		names[r.server()] = true
	}
	if !names["a"] || !names["b"] {
		t.Errorf("the slow requests were served by %v, want a and b", names)
	}

	// Back to active.
	activating := time.Now()
	if line := reload(t, s, p, config("", "")); !strings.Contains(line, "msg=reloaded") {
		t.Fatalf("reload to activate a: %s", line)
	}
	if served := expect("active", 20, "a", "b"); served["a"] == 0 {
		t.Errorf("a is active again but got none of 20 requests: %v", served)
	}
	close(stop)
	all := background()
	before := 0
	for _, r := range all {
		if r.err != nil || r.status != 200 {
			t.Errorf("background request during the reloads: %v", r)
			continue
		}
		if r.server() == "a" && r.start.After(drained) && r.start.Before(activating) {
			t.Errorf("a background request started %v after the drain reached a: %v", r.start.Sub(drained), r)
		}
		if r.start.Before(drained) {
			before++
		}
	}
	if before == 0 || len(all) < 50 {
		t.Errorf("only %d background requests (%d before the drain): the load proves nothing", len(all), before)
	}
	waitLogCount(t, p, mark, 3, scaled(time.Second), "msg=reloaded")
	for _, state := range []string{"drain", "disabled", "active"} {
		waitLogCount(t, p, mark, 1, scaled(time.Second), `msg="server state"`, "server="+a.addr, "state="+state)
	}
	if l := logsWith(p, mark, `msg="server state"`, "server="+b.addr); len(l) > 0 {
		t.Errorf("b's state did not change, but it was logged:\n%s", strings.Join(l, "\n"))
	}
	t.Logf("%d background requests, none failed", len(all))

	// A broken file is refused with its position; the old one serves on.
	mark = len(p.stderr.String())
	broken := config("", "    retries: many\n")
	line := 1 + strings.Count(broken[:strings.Index(broken, "retries: many")], "\n")
	got := reload(t, s, p, broken)
	if want := fmt.Sprintf("%s:%d:14", s.config, line); !strings.Contains(got, "reload refused") || !strings.Contains(got, want) {
		t.Errorf("a broken file: want \"reload refused\" with %s, got: %s", want, got)
	}
	status := p.waitNotify("STATUS=reload failed", scaled(5*time.Second))
	if want := fmt.Sprintf("%s:%d:14", s.config, line); !strings.Contains(status, "READY=1") || !strings.Contains(status, want) {
		t.Errorf("a broken file: want READY=1 and a status naming %s, got %q", want, status)
	}
	expect("after a broken file", 10, "a", "b")

	if p.exited() {
		t.Fatalf("portcullis exited: %s", p.describe())
	}
	if l := logsWith(p, mark, "msg=reloaded"); len(l) > 0 {
		t.Errorf("a refused file was reported as reloaded:\n%s", strings.Join(l, "\n"))
	}
}
