package integration

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// checkHealth is the active check of the failover tests: fast enough to
// notice a dead server within a second.
const checkHealth = "    health_check: {path: /healthz, interval: 200ms, timeout: 150ms}\n"

// TestKillFailover sends 2,000 GETs at 50-way concurrency through
// portcullis to three upstream processes, once over HTTP/1.1, HTTP/2 and
// HTTP/3 each, and kills one upstream with SIGKILL after the 500th
// response of each run. Every request must succeed with its own body (the
// requests caught by the kill are retried on another server), the dead
// server must be marked down once, soon, and get no more attempts, and once
// restarted it must come back and take requests again. The bodies are
// small and leave the upstream in the same write as the headers, so a
// kill cannot cut a response in the middle (TestCutResponse covers that).
func TestKillFailover(t *testing.T) {
	const (
		requests = 2000
		conc     = 50
		killAt   = 500
	)
	ups := []*upProc{
		startUp(t, "u1", "127.0.0.1:0"),
		startUp(t, "u2", "127.0.0.1:0"),
		startUp(t, "u3", "127.0.0.1:0"),
	}
	s, p := startLB(t, lbConfig(checkHealth, lbServer{addr: ups[0].addr}, lbServer{addr: ups[1].addr}, lbServer{addr: ups[2].addr}))

	var restarted *upProc // the victim of the previous run, back up
	for run, proto := range []string{"HTTP/1.1", "HTTP/2", "HTTP/3"} {
		victim := ups[run]
		c := clientFor(t, s, proto, conc)
		tag := strings.ToLower(strings.ReplaceAll(proto, "/", ""))
		mark := len(p.stderr.String())
		var killedAt time.Time
		start := time.Now()
		results := load(c, requests, conc, func(i int) string { return fmt.Sprintf("/%s/%d", tag, i) }, killAt, func() {
			killedAt = time.Now()
			victim.kill()
		})
		took := time.Since(start)

		served := map[string]int{}
		failed := 0
		for i, r := range results {
			want := fmt.Sprintf("/%s/%d HTTP/1.1\n", tag, i)
			name := r.server()
			if r.err != nil || r.status != 200 || r.proto != int(proto[5]-'0') || !strings.HasSuffix(r.body, " GET "+want) ||
				(name != "u1" && name != "u2" && name != "u3") {
				if failed++; failed <= 5 {
					t.Errorf("%s: request %d: %v", proto, i, r)
				}
				continue
			}
			served[name]++
		}
		if failed > 0 {
			t.Errorf("%s: %d of %d requests failed, want none", proto, failed, requests)
		}
		t.Logf("%s: %d requests in %v, served by %v; %s killed after response %d", proto, requests, took.Round(time.Millisecond), served, victim.name, killAt)
		if restarted != nil && served[restarted.name] == 0 {
			t.Errorf("%s: %s was restarted and marked up before this run but served none of its requests", proto, restarted.name)
		}

		// Restart it on the same port: rise good checks bring it back.
		upMark := len(p.stderr.String())
		victim.restart()
		waitLogWith(t, p, upMark, scaled(5*time.Second), `msg="server up"`, "server="+victim.addr)

		// The log is complete up to "server up": the kill was noticed once,
		// soon, and the dead server was left alone.
		downs := logsWith(p, mark, `msg="server down"`, "server="+victim.addr)
		if len(downs) != 1 {
			t.Fatalf("%s: want one \"server down\" line for %s (%s), got %d:\n%s", proto, victim.name, victim.addr, len(downs), strings.Join(downs, "\n"))
		}
		downAt := logTime(t, downs[0])
		if d := downAt.Sub(killedAt); d > scaled(1500*time.Millisecond) {
			t.Errorf("%s: %s was marked down %v after the kill, want within 1.5s: %s", proto, victim.name, d, downs[0])
		}
		retries := logsWith(p, mark, `msg="retrying on another server"`, "failed="+victim.addr)
		for _, l := range retries {
			if at := logTime(t, l); at.After(downAt.Add(scaled(500 * time.Millisecond))) {
				t.Errorf("%s: a request still went to %s %v after it was marked down: %s", proto, victim.name, at.Sub(downAt), l)
			}
		}
		if fails := logsWith(p, mark, `msg="request failed"`); len(fails) > 0 {
			t.Errorf("%s: portcullis logged failed requests:\n%s", proto, strings.Join(fails, "\n"))
		}
		t.Logf("%s: %s marked down %v after the kill (%s); %d requests retried away from it", proto, victim.name,
			downAt.Sub(killedAt).Round(time.Millisecond), reasonOf(downs[0]), len(retries))
		restarted = victim
	}
}

// reasonOf returns the reason= attribute of a log line.
func reasonOf(line string) string {
	_, r, ok := strings.Cut(line, "reason=")
	if !ok {
		return ""
	}
	if strings.HasPrefix(r, `"`) {
		r, _, _ = strings.Cut(r[1:], `"`)
		return r
	}
	r, _, _ = strings.Cut(r, " ")
	return r
}

// TestBackupThenNoServer kills the primary servers of a backend: requests
// go on succeeding from the backup server. When the backup dies too,
// clients get 503 with Retry-After, and the log says why. A primary that
// comes back takes the traffic again.
func TestBackupThenNoServer(t *testing.T) {
	a := startUp(t, "a", "127.0.0.1:0")
	b := startUp(t, "b", "127.0.0.1:0")
	backup := startUp(t, "backup", "127.0.0.1:0")
	s, p := startLB(t, lbConfig(checkHealth, lbServer{addr: a.addr}, lbServer{addr: b.addr}, lbServer{addr: backup.addr, extra: "backup: true"}))
	c := clientFor(t, s, "HTTP/1.1", 4)

	expect := func(what string, n int, from ...string) {
		t.Helper()
		for i := range n {
			r := get(c, fmt.Sprintf("/%s/%d", what, i))
			if r.err != nil || r.status != 200 || !slices.Contains(from, r.server()) {
				t.Fatalf("%s: want 200 from %v, got %v", what, from, r)
			}
		}
	}
	expect("primaries", 20, "a", "b")

	mark := len(p.stderr.String())
	a.kill()
	b.kill()
	// The requests that find the primaries dead are retried, and the
	// retries go to the backup.
	expect("failover", 30, "a", "b", "backup")
	for _, u := range []*upProc{a, b} {
		waitLogWith(t, p, mark, scaled(3*time.Second), `msg="server down"`, "server="+u.addr)
	}
	expect("backup", 20, "backup")

	mark = len(p.stderr.String())
	backup.kill()
	var last result
	deadline := time.Now().Add(scaled(3 * time.Second))
	for last = get(c, "/none"); last.status != http.StatusServiceUnavailable; last = get(c, "/none") {
		if last.err != nil || last.status != http.StatusBadGateway || time.Now().After(deadline) {
			t.Fatalf("with every server dead, want 502 (connect failed) until the backup is marked down, then 503; got %v", last)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ra := last.header.Get("Retry-After"); ra != "1" {
		t.Errorf("503 with Retry-After %q, want 1", ra)
	}
	// The log says why.
	waitLogWith(t, p, mark, scaled(2*time.Second), `msg="request failed"`, "status=503", `reason="no server up"`, "path=/none")
	for _, l := range logsWith(p, mark, `msg="request failed"`, "status=502") {
		if !strings.Contains(l, `reason="connect failed"`) || !strings.Contains(l, "server="+backup.addr) {
			t.Errorf("a 502 with the backup dead should say connect failed at the backup: %s", l)
		}
	}

	mark = len(p.stderr.String())
	a.restart()
	waitLogWith(t, p, mark, scaled(3*time.Second), `msg="server up"`, "server="+a.addr)
	expect("primary back", 10, "a")
}

// TestCutResponse has a server drop the connection after the response
// headers and 10 of 1,000 bytes of body, as a server killed in the middle
// of a response does. Nothing can retry that (the client has the headers
// already), so the client must see the response fail, over every
// protocol: a short body must never pass for a complete one. The load
// tests above avoid this window: their bodies leave the upstream in the
// same write as the headers.
func TestCutResponse(t *testing.T) {
	u := startUp(t, "u", "127.0.0.1:0")
	s, _ := startLB(t, lbConfig("", lbServer{addr: u.addr}))
	for _, proto := range []string{"HTTP/1.1", "HTTP/2", "HTTP/3"} {
		c := clientFor(t, s, proto, 1)
		if r := get(c, "/cut"); r.err == nil {
			t.Errorf("%s: a response cut after 10 of 1000 bytes arrived as complete: %v", proto, r)
		}
		if r := get(c, "/after-cut"); r.err != nil || r.status != 200 || r.body != "u GET /after-cut HTTP/1.1\n" {
			t.Errorf("%s: after a cut response: %v", proto, r)
		}
	}
}
