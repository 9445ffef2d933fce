package integration

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/websocket"
)

// Bounds of TestReloadUnderLoad.
const (
	underLoadReloads  = 50
	underLoadMaxReqs  = 60000                  // requests of the load, all clients together
	underLoadPause    = 150 * time.Millisecond // between the end of a reload and the next SIGHUP
	underLoadInterval = 100 * time.Millisecond // between two messages of a long-lived connection
)

// loadConf is one configuration of TestReloadUnderLoad: frontend web
// (webFrontend: 127.0.0.1:80, and 127.0.0.1:443 with TLS and HTTP/3)
// routing everything to backend pool, of upstreams a and b, and maybe c.
type loadConf struct {
	addr     map[string]string // upstream name → address
	route    bool              // a first route sends /v2/ to backend b2 (upstream v2)
	balance  string            // the pool's balancing, YAML lines indented by 4; "" for round_robin
	weighted string            // the server of weight 3, or ""
	third    bool              // c is in the pool too
	drained  string            // the server in state drain, or ""
}

func (c loadConf) yaml() string {
	var b strings.Builder
	b.WriteString(webFrontend)
	if c.route {
		b.WriteString("      - path_prefix: /v2/\n        backend: b2\n")
	}
	b.WriteString("      - backend: pool\nbackends:\n  pool:\n")
	b.WriteString(c.balance)
	b.WriteString("    servers:\n")
	for _, name := range c.pool() {
		fmt.Fprintf(&b, "      - {address: %s", c.addr[name])
		if name == c.weighted {
			b.WriteString(", weight: 3")
		}
		if name == c.drained {
			b.WriteString(", state: drain")
		}
		b.WriteString("}\n")
	}
	if c.route {
		fmt.Fprintf(&b, "  b2:\n    servers:\n      - address: %s\n", c.addr["v2"])
	}
	return b.String()
}

// pool returns the names of the pool's servers.
func (c loadConf) pool() []string {
	if c.third {
		return []string{"a", "b", "c"}
	}
	return []string{"a", "b"}
}

// servers returns the upstreams that may answer a new request for path.
func (c loadConf) servers(path string) []string {
	if c.route && strings.HasPrefix(path, "/v2/") {
		return []string{"v2"}
	}
	return slices.DeleteFunc(c.pool(), func(name string) bool { return name == c.drained })
}

// reloadMark is one reload of TestReloadUnderLoad: what it changed, the
// configuration it applied, when SIGHUP was sent and when READY=1 came.
type reloadMark struct {
	what       string
	conf       loadConf
	sent, done time.Time
}

// loadClient is one worker of the load: it sends GETs to base+PATH over
// proto, on keep-alive connections of c, or, when fresh is set, each on a
// client of its own that it closes after the response.
type loadClient struct {
	name  string
	proto int // the major version of HTTP the responses must have
	base  string
	c     *http.Client
	fresh func() (*http.Client, func())
}

// run sends requests until stop is closed or budget is spent, one in three
// to a path under /v2/, with a pause of 2ms after each response.
func (lc loadClient) run(stop <-chan struct{}, budget *atomic.Int64) []result {
	var out []result
	for i := 0; ; i++ {
		select {
		case <-stop:
			return out
		default:
		}
		if budget.Add(-1) < 0 {
			return out
		}
		path := fmt.Sprintf("/load/%s/%d", lc.name, i)
		if i%3 == 2 {
			path = "/v2" + path
		}
		c, done := lc.c, func() {}
		if lc.fresh != nil {
			c, done = lc.fresh()
		}
		r := get(c, lc.base+path)
		done()
		r.path = path
		out = append(out, r)
		time.Sleep(2 * time.Millisecond)
	}
}

// loadClients are the workers of TestReloadUnderLoad: per protocol, two on
// keep-alive connections (the HTTP/2 and HTTP/3 ones share one
// connection, one HTTP/1.1 one uses the plain bind) and one on a new
// connection for every request.
func loadClients(t *testing.T, s *site) []loadClient {
	// A configuration of its own for each transport: an HTTP/2 one adds
	// "h2" to the NextProtos of the one it is given.
	tlsConf := func() *tls.Config { return &tls.Config{RootCAs: s.pool, ServerName: "localhost"} }
	h1 := func(tlsOn bool) *http.Transport {
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetHTTP1(true)
		if tlsOn {
			tr.TLSClientConfig = tlsConf()
		}
		return tr
	}
	h2 := func() *http.Transport {
		tr := &http.Transport{TLSClientConfig: tlsConf(), Protocols: new(http.Protocols)}
		tr.Protocols.SetHTTP2(true)
		return tr
	}
	h3 := func() *http3.Transport {
		return &http3.Transport{
			TLSClientConfig: tlsConf(),
			Dial: func(ctx context.Context, _ string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
				return quic.DialAddrEarly(ctx, "127.0.0.1:443", tlsCfg, cfg)
			},
		}
	}
	timeout := scaled(10 * time.Second)
	keep := func(rt http.RoundTripper) *http.Client {
		switch tr := rt.(type) {
		case *http.Transport:
			t.Cleanup(tr.CloseIdleConnections)
		case *http3.Transport:
			t.Cleanup(func() { tr.Close() })
		}
		return &http.Client{Transport: rt, Timeout: timeout}
	}
	fresh := func(mk func() http.RoundTripper) func() (*http.Client, func()) {
		return func() (*http.Client, func()) {
			rt := mk()
			return &http.Client{Transport: rt, Timeout: timeout}, func() {
				switch tr := rt.(type) {
				case *http.Transport:
					tr.CloseIdleConnections()
				case *http3.Transport:
					tr.Close()
				}
			}
		}
	}
	const tlsBase, plainBase = "https://127.0.0.1", "http://127.0.0.1"
	shared2, shared3 := keep(h2()), keep(h3())
	return []loadClient{
		{name: "h1-tls", proto: 1, base: tlsBase, c: keep(h1(true))},
		{name: "h1-plain", proto: 1, base: plainBase, c: keep(h1(false))},
		{name: "h1-new", proto: 1, base: tlsBase, fresh: fresh(func() http.RoundTripper { return h1(true) })},
		{name: "h2-0", proto: 2, base: tlsBase, c: shared2},
		{name: "h2-1", proto: 2, base: tlsBase, c: shared2},
		{name: "h2-new", proto: 2, base: tlsBase, fresh: fresh(func() http.RoundTripper { return h2() })},
		{name: "h3-0", proto: 3, base: tlsBase, c: shared3},
		{name: "h3-1", proto: 3, base: tlsBase, c: shared3},
		{name: "h3-new", proto: 3, base: tlsBase, fresh: fresh(func() http.RoundTripper { return h3() })},
	}
}

// longLived sends a message on one connection every underLoadInterval
// until stop is closed or a message fails; it never reconnects.
type longLived struct {
	name string
	ok   int
	last time.Time // when the last message was answered
	err  error     // the failure that ended it
	at   time.Time // when it failed
}

func (l *longLived) run(stop <-chan struct{}, send func(i int) error) {
	tick := time.NewTicker(underLoadInterval)
	defer tick.Stop()
	for i := 1; ; i++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		if err := send(i); err != nil {
			l.err, l.at = err, time.Now()
			return
		}
		l.ok++
		l.last = time.Now()
	}
}

// TestReloadUnderLoad makes 50 reloads, each waited for (RELOADING=1,
// then READY=1 saying the new configuration serves), that change routes
// and servers: a route /v2/ to a second backend comes and goes, a
// server's weight changes, a third server comes and goes, a server drains
// and comes back, the balancing algorithm changes. All the while,
// upstream processes serve a continuous load over HTTP/1.1 (on the TLS
// and on the plain bind), HTTP/2 and HTTP/3, on keep-alive connections
// and on a new connection per request, and two long-lived connections
// exchange a message every 100ms: a WebSocket on the plain bind (to the
// upstream's /ws echo, on the very server the reloads drain) and an
// HTTP/3 connection. It checks that
//
//   - no request fails: every one gets 200 over its protocol, with the
//     answer of an upstream to its own path, and portcullis logs no
//     "request failed";
//   - every request is answered by a server that one of the
//     configurations in force between its start and its end allows: b2's
//     for /v2/ while that route exists, never a drained or removed one;
//   - right after each reload that adds the route /v2/, /v2/x is answered
//     by b2's server over every protocol, and right after each that
//     removes it, by the pool's;
//   - the WebSocket and the HTTP/3 connection opened before the first
//     reload answer every message, on the same connection, to the end;
//   - the process still runs as nobody without any capability.
func TestReloadUnderLoad(t *testing.T) {
	ups := map[string]string{}
	for _, name := range []string{"a", "b", "c", "v2"} {
		ups[name] = startUp(t, name, "127.0.0.1:0").addr
	}
	conf := loadConf{addr: ups}
	s, p := startLB(t, conf.yaml())
	begin := time.Now()

	// The long-lived connections, opened first.
	ws := dialWS(t, s, "ws://localhost/ws")
	var wsName, wsConn string
	exchange := func(i int) (string, error) {
		ws.SetDeadline(time.Now().Add(scaled(5 * time.Second)))
		msg := fmt.Sprintf("m%d", i)
		if err := websocket.Message.Send(ws, msg); err != nil {
			return "", fmt.Errorf("send %q: %w", msg, err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil {
			return "", fmt.Errorf("receive the echo of %q: %w", msg, err)
		}
		return got, nil
	}
	got, err := exchange(0)
	if f := strings.Fields(got); err != nil || len(f) != 3 || f[2] != "m0" || !slices.Contains(conf.pool(), f[0]) {
		t.Fatalf("the first WebSocket message: %q %v", got, err)
	} else {
		wsName, wsConn = f[0], f[1]
	}
	other := "a"
	if wsName == "a" {
		other = "b"
	}
	held := dialHeldH3(t, s, "127.0.0.1:443")
	if code, body, err := held.get("/held/0"); err != nil || code != 200 {
		t.Fatalf("the first request on the long-lived HTTP/3 connection: %d %q %v", code, body, err)
	}

	// The reloads, in cycles of ten, each changing one thing (and the
	// last, two): the WebSocket's server is the one that drains.
	type step struct {
		what   string
		change func(c *loadConf)
	}
	var steps []step
	for cycle := range underLoadReloads / 10 {
		spread := []string{"    balance: least_conn\n", "    balance: random\n"}[cycle%2]
		hashKey := []string{"uri", "source"}[cycle%2]
		steps = append(steps,
			step{"add the route /v2/ to b2", func(c *loadConf) { c.route = true }},
			step{"weight 3 on " + other, func(c *loadConf) { c.weighted = other }},
			step{"add server c", func(c *loadConf) { c.third = true }},
			step{"drain " + wsName, func(c *loadConf) { c.drained = wsName }},
			step{"balance " + strings.Fields(spread)[1], func(c *loadConf) { c.balance = spread }},
			step{"remove the route /v2/", func(c *loadConf) { c.route = false }},
			step{wsName + " active again", func(c *loadConf) { c.drained = "" }},
			step{"balance hash on " + hashKey, func(c *loadConf) { c.balance = "    balance: hash\n    hash_key: " + hashKey + "\n" }},
			step{"remove server c, default weights", func(c *loadConf) { c.third, c.weighted = false, "" }},
			step{"balance round_robin", func(c *loadConf) { c.balance = "" }},
		)
	}

	// The load and the long-lived connections' loops.
	stop := make(chan struct{})
	stopOnce := sync.OnceFunc(func() { close(stop) })
	var wg sync.WaitGroup
	t.Cleanup(func() { stopOnce(); wg.Wait() }) // before portcullis is killed
	var budget atomic.Int64
	budget.Store(underLoadMaxReqs)
	clients := loadClients(t, s)
	results := make([][]result, len(clients)+1)
	for i, lc := range clients {
		wg.Go(func() { results[i] = lc.run(stop, &budget) })
	}
	wsLoop := &longLived{name: fmt.Sprintf("the WebSocket (to %s, its connection %s)", wsName, wsConn)}
	h3Loop := &longLived{name: "the long-lived HTTP/3 connection"}
	wg.Go(func() {
		wsLoop.run(stop, func(i int) error {
			got, err := exchange(i)
			if want := fmt.Sprintf("%s %s m%d", wsName, wsConn, i); err == nil && got != want {
				err = fmt.Errorf("message %d: got %q, want %q", i, got, want)
			}
			return err
		})
	})
	heldIdx := len(clients)
	wg.Go(func() {
		h3Loop.run(stop, func(i int) error {
			r := result{path: fmt.Sprintf("/held/%d", i), proto: 3, start: time.Now()}
			r.status, r.body, r.err = held.get(r.path)
			r.took = time.Since(r.start)
			results[heldIdx] = append(results[heldIdx], r)
			if r.err != nil || r.status != 200 {
				return fmt.Errorf("request %d: %v", i, r)
			}
			return nil
		})
	})

	// checkRoute checks where /v2/ goes over each protocol, right after a
	// reload.
	checkClients := []loadClient{clients[0], clients[3], clients[6]}
	routeChecks := 0
	checkRoute := func(n int, c loadConf) {
		t.Helper()
		want := c.servers("/v2/x")
		for _, lc := range checkClients {
			path := fmt.Sprintf("/v2/x/%d", n)
			r := get(lc.c, lc.base+path)
			if r.err != nil || r.status != 200 || r.proto != lc.proto || !slices.Contains(want, r.server()) || r.body != r.server()+" GET "+path+" HTTP/1.1\n" {
				t.Errorf("right after reload %d (route /v2/: %v), over HTTP/%d: %v; want an answer from %v", n, c.route, lc.proto, r, want)
			}
			routeChecks++
		}
	}

	marks := []reloadMark{{what: "initial", conf: conf, done: begin}}
	time.Sleep(underLoadPause)
	for n, st := range steps {
		n++
		st.change(&conf)
		writeFile(t, s.config, conf.yaml(), 0o644)
		m := reloadMark{what: st.what, conf: conf, sent: time.Now()}
		p.signal(syscall.SIGHUP)
		// Every notification is read: the socket queues only a few
		// (net.unix.max_dgram_qlen), and portcullis's next one would wait.
		p.waitNotify("RELOADING=1", scaled(10*time.Second))
		if ready := p.waitNotify("READY=1", scaled(10*time.Second)); !strings.Contains(ready, "STATUS=serving the reloaded configuration") {
			t.Fatalf("reload %d (%s) was not applied: %q\n%s", n, st.what, ready, conf.yaml())
		}
		m.done = time.Now()
		marks = append(marks, m)
		if prev := marks[len(marks)-2].conf; prev.route != conf.route {
			checkRoute(n, conf)
		}
		time.Sleep(underLoadPause)
	}
	end := time.Now()
	time.Sleep(3 * underLoadInterval) // a few more messages after the last reload
	stopOnce()
	wg.Wait()

	// Failures and misrouted requests.
	var took []time.Duration
	for _, m := range marks[1:] {
		took = append(took, m.done.Sub(m.sent))
	}
	// allowed returns the servers that may answer r: those of the
	// configurations in force from its start to its end.
	allowed := func(r result) ([]string, string) {
		from, to := 0, 0
		for k, m := range marks {
			if !m.done.After(r.start) {
				from = k
			}
			if k > 0 && !m.sent.After(r.start.Add(r.took)) {
				to = k
			}
		}
		var names []string
		for k := from; k <= to; k++ {
			names = append(names, marks[k].conf.servers(r.path)...)
		}
		return names, fmt.Sprintf("configurations %d to %d (%s … %s)", from, to, marks[from].what, marks[to].what)
	}
	failed, misrouted, total := 0, 0, 0
	perClient := map[string]int{}
	overlapped := map[int]map[int]bool{} // protocol → reloads that requests of it were in flight across
	for i, rs := range results {
		name, proto := "held-h3", 3
		if i < len(clients) {
			name, proto = clients[i].name, clients[i].proto
		}
		if overlapped[proto] == nil {
			overlapped[proto] = map[int]bool{}
		}
		for _, r := range rs {
			total++
			perClient[name]++
			for k, m := range marks[1:] {
				if r.start.Before(m.done) && r.start.Add(r.took).After(m.sent) {
					overlapped[proto][k] = true
				}
			}
			if r.err != nil || r.status != 200 || r.proto != proto || r.body != r.server()+" GET "+r.path+" HTTP/1.1\n" {
				if failed++; failed <= 5 {
					t.Errorf("%s: request failed at %v: %v", name, r.start.Sub(begin).Round(time.Millisecond), r)
				}
				continue
			}
			if names, which := allowed(r); !slices.Contains(names, r.server()) {
				if misrouted++; misrouted <= 5 {
					t.Errorf("%s: GET %s answered by %s, started %v in and taking %v; %s allow %v",
						name, r.path, r.server(), r.start.Sub(begin).Round(time.Millisecond), r.took.Round(time.Millisecond), which, names)
				}
			}
		}
	}
	if failed > 0 || misrouted > 0 {
		t.Errorf("%d of %d requests failed, %d were answered by a server their configuration does not allow", failed, total, misrouted)
	}
	t.Logf("%d reloads in %v (each %v to %v from SIGHUP to READY=1, median %v); %d requests (%v), %d route checks",
		len(took), end.Sub(begin).Round(time.Millisecond), slices.Min(took).Round(time.Microsecond), slices.Max(took).Round(time.Microsecond),
		median(took).Round(time.Microsecond), total, perClient, routeChecks)
	for _, proto := range []int{1, 2, 3} {
		// The load must have been there: requests of every protocol in
		// flight across most reloads.
		if n := len(overlapped[proto]); n < underLoadReloads/2 {
			t.Errorf("requests over HTTP/%d were in flight across only %d of %d reloads: the load proves little", proto, n, underLoadReloads)
		} else {
			t.Logf("HTTP/%d requests were in flight across %d of %d reloads", proto, n, underLoadReloads)
		}
	}
	for _, name := range []string{"h1-tls", "h1-plain", "h1-new", "h2-0", "h2-new", "h3-0", "h3-new"} {
		if perClient[name] < underLoadReloads {
			t.Errorf("client %s sent only %d requests", name, perClient[name])
		}
	}

	// The long-lived connections served to the end.
	for _, l := range []*longLived{wsLoop, h3Loop} {
		switch {
		case l.err != nil:
			t.Errorf("%s failed after %d messages, %v after the start of the load: %v", l.name, l.ok, l.at.Sub(begin).Round(time.Millisecond), l.err)
		case !l.last.After(marks[len(marks)-1].done):
			t.Errorf("%s answered no message after the last reload (%d in all)", l.name, l.ok)
		case l.ok < int(end.Sub(begin)/underLoadInterval)/2:
			t.Errorf("%s answered only %d messages in %v", l.name, l.ok, end.Sub(begin).Round(time.Millisecond))
		default:
			t.Logf("%s answered %d messages across the %d reloads", l.name, l.ok, underLoadReloads)
		}
	}
	if err := context.Cause(held.conn.Context()); err != nil {
		t.Errorf("the long-lived HTTP/3 connection is closed: %v", err)
	}

	if l := logsWith(p, 0, `msg="request failed"`); len(l) > 0 {
		t.Errorf("portcullis logged %d failed requests, the first:\n%s", len(l), l[0])
	}
	waitLogCount(t, p, 0, underLoadReloads, scaled(time.Second), "msg=reloaded")
	checkUnprivileged(t, p.pid(), true)
	ws.Close()
	held.conn.CloseWithError(0, "")
	for _, lc := range clients {
		if lc.c == nil {
			continue
		}
		switch tr := lc.c.Transport.(type) {
		case *http.Transport:
			tr.CloseIdleConnections()
		case *http3.Transport:
			tr.Close()
		}
	}
	p.stop()
}

// median returns the middle of ds (which it sorts).
func median(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[len(ds)/2]
}
