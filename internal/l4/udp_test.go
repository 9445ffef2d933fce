package l4

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/internal/upstream"
)

// TestUDPFlowsStick relays DNS-like traffic: every reply arrives from the
// frontend's address, each client's datagrams stay with one server (its
// flow's), and the flows spread over both servers.
func TestUDPFlowsStick(t *testing.T) {
	a, b := newUDPTestServer(t, "a"), newUDPTestServer(t, "b")
	be := newUDPTestBackend(t, balance.RoundRobin, a.addr, b.addr)
	log, logBuf := udpTestLog()
	u := &UDP{Frontend: "dns", IdleTimeout: testUDPIdleTimeout, Backend: func() (*upstream.Backend, string) { return be.Backend, "resolvers" }, Log: log}
	front := addrPort(t, startUDP(t, u, "127.0.0.1:0"))

	const clients, datagrams = 20, 10
	servers := make([]string, clients)
	var wg sync.WaitGroup
	for i := range clients {
		c := newUDPTestClient(t, front)
		wg.Go(func() {
			// A burst: the first datagrams reach the flow before it has
			// its server and wait in it.
			for j := range datagrams {
				c.send(fmt.Sprintf("c%d-%d", i, j))
			}
			seen := map[string]bool{}
			for range datagrams {
				got, from, err := c.recv(udpBound())
				if err != nil {
					t.Errorf("client %d: %d of %d replies, then %v", i, len(seen), datagrams, err)
					return
				}
				if from != front {
					t.Errorf("client %d: reply from %s, want the frontend's address %s", i, from, front)
				}
				name, p, _ := strings.Cut(got, ":")
				if servers[i] == "" {
					servers[i] = name
				} else if name != servers[i] {
					t.Errorf("client %d: replies from servers %s and %s, want one (flows stick)", i, servers[i], name)
				}
				seen[p] = true
			}
			for j := range datagrams {
				if p := fmt.Sprintf("c%d-%d", i, j); !seen[p] {
					t.Errorf("client %d: no reply to %q", i, p)
				}
			}
		})
	}
	wg.Wait()
	used := map[string]int{}
	for _, s := range servers {
		used[s]++
	}
	if used["a"] == 0 || used["b"] == 0 {
		t.Errorf("flows per server: %v, want both servers used", used)
	}
	if st := u.Stats(); st.Flows != clients || st.DroppedPending != 0 {
		t.Errorf("stats %+v, want %d flows and no drops", st, clients)
	}
	_, okA := be.observations(a.addr)
	_, okB := be.observations(b.addr)
	if okA+okB != clients {
		t.Errorf("%d successes observed, want one per flow (its first reply), %d", okA+okB, clients)
	}
	if be.inflight() != clients {
		t.Errorf("%d in flight, want %d (max_conns counts flows)", be.inflight(), clients)
	}
	if strings.Contains(logBuf.String(), "WARN") {
		t.Errorf("warnings:\n%s", logBuf)
	}
}

// TestUDPHashSource keeps every client of one IP address on one server
// when the backend hashes the source.
func TestUDPHashSource(t *testing.T) {
	a, b := newUDPTestServer(t, "a"), newUDPTestServer(t, "b")
	be := newBackend(backendOptions{Options: upstream.Options{Algorithm: balance.Hash, HashKey: upstream.HashKey{Kind: upstream.HashSource}}, downOnFailure: true}, a.addr, b.addr)
	u := &UDP{Frontend: "dns", IdleTimeout: testUDPIdleTimeout, Backend: func() (*upstream.Backend, string) { return be.Backend, "resolvers" }}
	front := addrPort(t, startUDP(t, u, "127.0.0.1:0"))
	used := map[string]bool{}
	for i := range 6 {
		used[newUDPTestClient(t, front).reply(fmt.Sprint("q", i))] = true
	}
	if len(used) != 1 {
		t.Errorf("servers used by one client IP: %v, want one", used)
	}
	// The server is the pick for HashString(client IP).
	want, err := be.Acquire(context.Background(), balance.HashString("127.0.0.1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	be.Release(want)
	name := map[string]string{a.addr: "a", b.addr: "b"}[want.State.Address]
	if !used[name] {
		t.Errorf("servers used: %v, want %s, the pick for HashString(client IP)", used, name)
	}
}

// TestUDPDatagramSizes relays datagrams from empty to nearly the largest
// UDP payload, whole.
func TestUDPDatagramSizes(t *testing.T) {
	a := newUDPTestServer(t, "a")
	be := newUDPTestBackend(t, balance.RoundRobin, a.addr)
	u := &UDP{Frontend: "dns", IdleTimeout: testUDPIdleTimeout, Backend: func() (*upstream.Backend, string) { return be.Backend, "resolvers" }}
	c := newUDPTestClient(t, addrPort(t, startUDP(t, u, "127.0.0.1:0")))
	// The reply adds "a:", and 65507 bytes is the most an IPv4 datagram
	// carries.
	for _, n := range []int{0, 1, 1472, 9000, 65505} {
		c.reply(strings.Repeat("x", n))
	}
}

// TestUDPIdleExpiry forgets a flow after IdleTimeout without a datagram
// either way, and not before.
func TestUDPIdleExpiry(t *testing.T) {
	a := newUDPTestServer(t, "a")
	be := newUDPTestBackend(t, balance.RoundRobin, a.addr)
	idle := testutil.Scaled(300 * time.Millisecond)
	u := &UDP{Frontend: "game", Backend: func() (*upstream.Backend, string) { return be.Backend, "game" }, IdleTimeout: idle}
	front := addrPort(t, startUDP(t, u, "127.0.0.1:0"))
	c := newUDPTestClient(t, front)

	c.reply("hello")
	if n, st := be.inflight(), u.Stats(); n != 1 || st.Flows != 1 {
		t.Fatalf("in flight %d, flows %d; want 1 and 1", n, st.Flows)
	}
	// Datagrams from the client keep the flow, with replies or without.
	for i := range 8 {
		time.Sleep(idle / 6)
		c.reply(fmt.Sprint("tick", i))
	}
	for i := range 8 {
		time.Sleep(idle / 6)
		c.send(fmt.Sprint("quiet", i))
	}
	c.reply("tock")
	// So do datagrams from the server alone.
	c.send("stream:12") // 12 replies over ≈ 480 ms
	for i := range 12 {
		got, _, err := c.recv(udpBound())
		if want := fmt.Sprintf("a:stream:%d", i); err != nil || got != want {
			t.Fatalf("stream: %q, %v; want %q", got, err, want)
		}
	}
	last := time.Now()
	// Each flow acquires its server once and is observed working once,
	// at its first reply.
	if n := be.successes(); n != 1 {
		t.Fatalf("%d flows made for one busy client, want 1", n)
	}
	udpWaitFor(t, "the idle flow to be forgotten and its server released", func() bool {
		return u.Stats().Flows == 0 && be.inflight() == 0
	})
	// last is a little after the relay saw the last datagram.
	if since := time.Since(last); since < idle-idle/10 {
		t.Errorf("flow forgotten %v after its last datagram, before IdleTimeout %v", since, idle)
	}
	c.reply("again")
	if n := be.successes(); n != 2 {
		t.Errorf("%d flows made, want 2: a datagram after expiry starts a new one", n)
	}
}

// TestUDPServerRefused ends a flow whose server's port is closed (ICMP
// port unreachable), which passive health checks hear about; the client's
// next datagrams go to the other server.
func TestUDPServerRefused(t *testing.T) {
	a, b := newUDPTestServer(t, "a"), newUDPTestServer(t, "b")
	be := newUDPTestBackend(t, balance.RoundRobin, a.addr, b.addr)
	u := &UDP{Frontend: "dns", IdleTimeout: testUDPIdleTimeout, Backend: func() (*upstream.Backend, string) { return be.Backend, "resolvers" }}
	front := addrPort(t, startUDP(t, u, "127.0.0.1:0"))

	// Round robin gives the two flows one server each.
	onA := newUDPTestClient(t, front)
	other := newUDPTestClient(t, front)
	if onA.reply("1") == "b" {
		onA, other = other, onA
		onA.reply("1")
	}
	other.reply("1")
	if f, ok := be.observations(a.addr); f != 0 || ok != 1 {
		t.Fatalf("server a: %d failures, %d successes observed; want 0 and 1 (the first reply)", f, ok)
	}

	a.close()
	if got := onA.ask("2"); got != "b" {
		t.Fatalf("after server a closed its port, reply from %s, want b", got)
	}
	if f, _ := be.observations(a.addr); f == 0 {
		t.Error("port unreachable at server a not observed as a failure")
	}
	for i := range 5 {
		if got := onA.reply(fmt.Sprint("after", i)); got != "b" {
			t.Errorf("reply from %s, want b", got)
		}
	}
	udpWaitFor(t, "server a's flow to be released", func() bool { return be.member(a.addr).State.InFlight() == 0 })
	if n := be.member(b.addr).State.InFlight(); n != 2 {
		t.Errorf("server b: %d flows, want 2", n)
	}
}

// TestUDPMaxFlows drops datagrams of new flows beyond MaxFlows, counts
// them and logs once, while existing flows go on.
func TestUDPMaxFlows(t *testing.T) {
	a := newUDPTestServer(t, "a")
	be := newUDPTestBackend(t, balance.RoundRobin, a.addr)
	log, logBuf := udpTestLog()
	u := &UDP{Frontend: "syslog", IdleTimeout: testUDPIdleTimeout, Backend: func() (*upstream.Backend, string) { return be.Backend, "collectors" }, MaxFlows: 2, Log: log}
	front := addrPort(t, startUDP(t, u, "127.0.0.1:0"))

	c1, c2, c3 := newUDPTestClient(t, front), newUDPTestClient(t, front), newUDPTestClient(t, front)
	c1.reply("1")
	c2.reply("1")
	for i := range 5 {
		c3.send(fmt.Sprint("excess", i))
	}
	c1.reply("2") // the relay has read c3's datagrams by now: one socket, in order
	if got, _, err := c3.recv(100 * time.Millisecond); err == nil {
		t.Errorf("a flow beyond MaxFlows got a reply: %q", got)
	}
	c2.reply("2")
	if st := u.Stats(); st.Flows != 2 || st.DroppedMaxFlows != 5 {
		t.Errorf("stats %+v, want 2 flows and 5 datagrams dropped at MaxFlows", st)
	}
	if n := udpLogCount(logBuf, "WARN", "flow table full", "frontend=syslog", "max_flows=2"); n != 1 {
		t.Errorf("%d warnings about the full flow table, want 1 (rate-limited):\n%s", n, logBuf)
	}
	if n, m := be.successes(), be.inflight(); n != 2 || m != 2 {
		t.Errorf("%d servers acquired (working), %d in flight; want 2", n, m)
	}
}

// TestUDPNoServer drops a new flow's datagram when no server is usable,
// with a warning naming the frontend, backend, client and reason.
func TestUDPNoServer(t *testing.T) {
	a := newUDPTestServer(t, "a")
	be := newUDPTestBackend(t, balance.RoundRobin, a.addr)
	be.member(a.addr).State.SetHealthy(false)
	log, logBuf := udpTestLog()
	u := &UDP{Frontend: "dns", IdleTimeout: testUDPIdleTimeout, Backend: func() (*upstream.Backend, string) { return be.Backend, "resolvers" }, Log: log}
	front := addrPort(t, startUDP(t, u, "127.0.0.1:0"))
	c := newUDPTestClient(t, front)
	c.send("1")
	udpWaitFor(t, "a warning naming frontend, backend, client and reason", func() bool {
		return udpLogCount(logBuf, "WARN", "frontend=dns", "backend=resolvers", "client=127.0.0.1:", upstream.ErrNoServer.Error()) == 1
	})
	if n := u.Stats().DroppedNoServer; n != 1 {
		t.Errorf("%d datagrams counted as dropped for want of a server, want 1", n)
	}
	if st := u.Stats(); st.Flows != 0 {
		t.Errorf("%d flows after the drop, want 0", st.Flows)
	}
	be.member(a.addr).State.SetHealthy(true)
	c.ask("2")
}

// TestUDPWildcardReplySource answers from the address the client sent
// to when the frontend socket is bound to every address.
func TestUDPWildcardReplySource(t *testing.T) {
	for _, bind := range []string{"0.0.0.0:0", "[::]:0"} {
		t.Run(bind, func(t *testing.T) {
			a := newUDPTestServer(t, "a")
			be := newUDPTestBackend(t, balance.RoundRobin, a.addr)
			u := &UDP{Frontend: "dns", IdleTimeout: testUDPIdleTimeout, Backend: func() (*upstream.Backend, string) { return be.Backend, "resolvers" }}
			pc := startUDP(t, u, bind)
			port := pc.LocalAddr().(*net.UDPAddr).AddrPort().Port()
			for _, dst := range []string{"127.0.0.1", "127.0.0.2"} {
				to := netip.AddrPortFrom(netip.MustParseAddr(dst), port)
				newUDPTestClient(t, to).reply("q-" + dst) // checks the reply's source
			}
		})
	}
}

// TestUDPShutdown closes every flow and leaves no goroutine and no socket
// behind, also with a flow still waiting for a server.
func TestUDPShutdown(t *testing.T) {
	a, b := newUDPTestServer(t, "a"), newUDPTestServer(t, "b")
	be := newUDPTestBackend(t, balance.RoundRobin, a.addr, b.addr)
	// waiting has one server, at its max_conns of 1 (held by the test):
	// a flow waits in its queue until its context ends.
	waiting := newBackend(backendOptions{Options: upstream.Options{QueueTimeout: time.Hour}, maxConns: 1}, a.addr)
	held, err := waiting.Acquire(context.Background(), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer waiting.Release(held)
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	front := addrPort(t, pc)
	var clients []*udpTestClient
	for range 10 {
		clients = append(clients, newUDPTestClient(t, front))
	}
	blocked, late := newUDPTestClient(t, front), newUDPTestClient(t, front)
	goroutines, fds := runtime.NumGoroutine(), udpOpenFiles(t)

	var n atomic.Int32
	u := &UDP{Frontend: "dns", IdleTimeout: time.Minute, Backend: func() (*upstream.Backend, string) {
		if n.Add(1) == 1 {
			return waiting.Backend, "queued" // the first flow waits for a server
		}
		return be.Backend, "resolvers"
	}}
	served := make(chan error, 1)
	go func() { served <- u.Serve(pc) }()
	blocked.send("waits")
	// The flow asked for its backend, then waits in its queue.
	udpWaitFor(t, "the first flow to wait for a server", func() bool { return n.Load() == 1 })
	// A waiting flow holds a few datagrams, not all.
	for i := range 2 * udpPendingDatagrams {
		blocked.send(fmt.Sprint("waits", i))
	}
	for i, c := range clients {
		c.reply(fmt.Sprint(i))
	}
	if st := u.Stats(); st.Flows != len(clients)+1 || st.DroppedPending != udpPendingDatagrams+1 {
		t.Fatalf("stats %+v, want %d flows and %d datagrams dropped from the waiting flow", st, len(clients)+1, udpPendingDatagrams+1)
	}

	ctx, cancel := context.WithTimeout(context.Background(), udpBound())
	defer cancel()
	if err := u.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if st := u.Stats(); st.Flows != 0 {
		t.Errorf("%d flows after Shutdown, want 0", st.Flows)
	}
	if n, w := be.inflight(), waiting.inflight(); n != 0 || w != 1 {
		t.Errorf("after Shutdown: %d in flight, %d at the waiting backend; want 0 and the test's 1", n, w)
	}
	// Shutdown stops new flows; the socket is still read until closed.
	late.send("late")
	pc.Close()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	udpWaitFor(t, "the relay's goroutines to end", func() bool { return runtime.NumGoroutine() <= goroutines })
	if s := udpGoroutines(); s != "" {
		t.Errorf("relay goroutines left after Shutdown:\n%s", s)
	}
	// The flow sockets are closed, and so is pc (by this test).
	udpWaitFor(t, "the flow sockets to close", func() bool { return udpOpenFiles(t) == fds-1 })
}
