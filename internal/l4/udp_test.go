package l4

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/testutil"
)

// udpBound turns a hang into a failure; no test waits for it to pass.
func udpBound() time.Duration { return testutil.Scaled(10 * time.Second) }

// udpTestServer answers each datagram with "<name>:<payload>", a payload
// "stream:N" with N datagrams "<name>:stream:i", 40 ms apart, and a
// payload "quiet…" with nothing (as a syslog server).
type udpTestServer struct {
	name string
	pc   *net.UDPConn
	addr string
}

func newUDPTestServer(t testing.TB, name string) *udpTestServer {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &udpTestServer{name: name, pc: pc, addr: pc.LocalAddr().String()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		out := make([]byte, 0, 64<<10)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			p := buf[:n]
			if bytes.HasPrefix(p, []byte("quiet")) {
				continue
			}
			if k, ok := bytes.CutPrefix(p, []byte("stream:")); ok {
				count, _ := strconv.Atoi(string(k))
				go func() {
					for i := range count {
						if _, err := pc.WriteToUDPAddrPort(fmt.Appendf(nil, "%s:stream:%d", name, i), from); err != nil {
							return
						}
						time.Sleep(40 * time.Millisecond)
					}
				}()
				continue
			}
			out = append(append(append(out[:0], name...), ':'), p...)
			if _, err := pc.WriteToUDPAddrPort(out, from); err != nil && errors.Is(err, net.ErrClosed) {
				return
			}
		}
	}()
	t.Cleanup(func() { s.close(); <-done })
	return s
}

// close closes the server's socket: its port answers ICMP port unreachable.
func (s *udpTestServer) close() { s.pc.Close() }

// udpTestBackend is a Backend over real server addresses: a balance.Pool,
// with passive health that marks a server down at its first failure. It
// records what the relay asks of it.
type udpTestBackend struct {
	pool       *balance.Pool
	hashSource bool
	retries    int
	// wait, when set, makes AcquireConn block until ctx ends, as a
	// backend queue does while every server is at max_conns.
	wait bool

	acquired, released atomic.Int64

	mu       sync.Mutex
	hashes   []uint64
	observed map[string][2]int // server address → failures, successes
}

func newUDPTestBackend(t testing.TB, algorithm string, addrs ...string) *udpTestBackend {
	t.Helper()
	var ms []*balance.Member
	for _, a := range addrs {
		ms = append(ms, &balance.Member{State: balance.NewState(a), Weight: 1, ID: a})
	}
	p, err := balance.NewPool(algorithm, ms, balance.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &udpTestBackend{pool: p, observed: make(map[string][2]int)}
}

var errUDPTestNoServer = errors.New("test backend: no server is usable")

func (b *udpTestBackend) AcquireConn(ctx context.Context, hash uint64, tried []*balance.Member) (*balance.Member, error) {
	b.mu.Lock()
	b.hashes = append(b.hashes, hash)
	b.mu.Unlock()
	if b.wait {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	for {
		m, _ := b.pool.Pick(hash, tried)
		if m == nil {
			return nil, errUDPTestNoServer
		}
		if m.State.TryAcquire(m.MaxConns) {
			b.acquired.Add(1)
			return m, nil
		}
	}
}

func (b *udpTestBackend) Release(m *balance.Member) {
	m.State.Release()
	b.released.Add(1)
}

func (b *udpTestBackend) Observe(m *balance.Member, ok bool) {
	b.mu.Lock()
	o := b.observed[m.State.Address]
	if ok {
		o[1]++
	} else {
		o[0]++
		m.State.SetHealthy(false)
	}
	b.observed[m.State.Address] = o
	b.mu.Unlock()
}

func (b *udpTestBackend) ConnectTimeout() time.Duration   { return time.Second }
func (b *udpTestBackend) Retries() int                    { return b.retries }
func (b *udpTestBackend) SendProxy(m *balance.Member) int { return 0 }
func (b *udpTestBackend) HashSource() bool                { return b.hashSource }

// observations returns the failures and successes observed at a server.
func (b *udpTestBackend) observations(addr string) (failures, successes int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	o := b.observed[addr]
	return o[0], o[1]
}

func (b *udpTestBackend) inflight() (n int64) {
	for _, m := range b.pool.Members() {
		n += m.State.InFlight()
	}
	return n
}

func (b *udpTestBackend) member(addr string) *balance.Member {
	for _, m := range b.pool.Members() {
		if m.State.Address == addr {
			return m
		}
	}
	return nil
}

// udpWaitFor polls cond until it holds, failing the test after udpBound.
func udpWaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(udpBound())
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func udpTestLog() (*slog.Logger, *testutil.Buffer) {
	buf := new(testutil.Buffer)
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// udpLogCount counts the log lines that contain every part.
func udpLogCount(log *testutil.Buffer, parts ...string) int {
	n := 0
lines:
	for _, l := range strings.Split(log.String(), "\n") {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue lines
			}
		}
		if l != "" {
			n++
		}
	}
	return n
}

// startUDP serves u on a socket bound to address and returns the socket.
// Cleanup closes the socket, shuts u down and checks that Serve returned
// nil.
func startUDP(t testing.TB, u *UDP, address string) *net.UDPConn {
	t.Helper()
	la, err := net.ResolveUDPAddr("udp", address)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp", la)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- u.Serve(pc) }()
	t.Cleanup(func() {
		pc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), udpBound())
		defer cancel()
		if err := u.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-ctx.Done():
			t.Error("Serve did not return after its socket closed")
		}
	})
	return pc
}

// udpTestClient is a client socket, unconnected so that each reply's
// source address can be checked.
type udpTestClient struct {
	t  testing.TB
	pc *net.UDPConn
	to netip.AddrPort
}

func newUDPTestClient(t testing.TB, to netip.AddrPort) *udpTestClient {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return &udpTestClient{t: t, pc: pc, to: to}
}

func (c *udpTestClient) send(payload string) {
	c.t.Helper()
	if _, err := c.pc.WriteToUDPAddrPort([]byte(payload), c.to); err != nil {
		c.t.Fatal(err)
	}
}

// recv returns the next reply and where it came from, or an error after
// wait.
func (c *udpTestClient) recv(wait time.Duration) (string, netip.AddrPort, error) {
	buf := make([]byte, 64<<10)
	c.pc.SetReadDeadline(time.Now().Add(wait))
	n, from, err := c.pc.ReadFromUDPAddrPort(buf)
	return string(buf[:n]), netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), err
}

// udpShort quotes s, cut to a readable length for failure messages.
func udpShort(s string) string {
	if len(s) > 40 {
		return fmt.Sprintf("%q… (%d bytes)", s[:40], len(s))
	}
	return strconv.Quote(s)
}

// reply sends payload and returns the name of the server that answered,
// checking that the answer came from the frontend's address.
func (c *udpTestClient) reply(payload string) string {
	c.t.Helper()
	c.send(payload)
	got, from, err := c.recv(udpBound())
	if err != nil {
		c.t.Fatalf("reply to %s: %v", udpShort(payload), err)
	}
	if from != c.to {
		c.t.Fatalf("reply to %s came from %s, want the frontend's address %s", udpShort(payload), from, c.to)
	}
	name, p, _ := strings.Cut(got, ":")
	if p != payload {
		c.t.Fatalf("reply to %s: %s", udpShort(payload), udpShort(got))
	}
	return name
}

// ask retries payload (the first datagrams of a new flow may be lost, as
// UDP allows) until a reply arrives, and returns the server's name.
func (c *udpTestClient) ask(payload string) string {
	c.t.Helper()
	deadline := time.Now().Add(udpBound())
	for time.Now().Before(deadline) {
		c.send(payload)
		got, from, err := c.recv(100 * time.Millisecond)
		if err != nil {
			continue
		}
		name, p, _ := strings.Cut(got, ":")
		if from != c.to || p != payload {
			c.t.Fatalf("reply to %q: %q from %s", payload, got, from)
		}
		return name
	}
	c.t.Fatalf("no reply to %q", payload)
	return ""
}

func addrPort(t testing.TB, pc *net.UDPConn) netip.AddrPort {
	t.Helper()
	ap := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// TestUDPFlowsStick relays DNS-like traffic: every reply arrives from the
// frontend's address, each client's datagrams stay with one server (its
// flow's), and the flows spread over both servers.
func TestUDPFlowsStick(t *testing.T) {
	a, b := newUDPTestServer(t, "a"), newUDPTestServer(t, "b")
	be := newUDPTestBackend(t, balance.RoundRobin, a.addr, b.addr)
	log, logBuf := udpTestLog()
	u := &UDP{Frontend: "dns", Backend: func() (Backend, string) { return be, "resolvers" }, Log: log}
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
	if n := be.acquired.Load(); n != clients {
		t.Errorf("%d servers acquired, want one per flow (%d)", n, clients)
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
	be := newUDPTestBackend(t, balance.Hash, a.addr, b.addr)
	be.hashSource = true
	u := &UDP{Frontend: "dns", Backend: func() (Backend, string) { return be, "resolvers" }}
	front := addrPort(t, startUDP(t, u, "127.0.0.1:0"))
	used := map[string]bool{}
	for i := range 6 {
		used[newUDPTestClient(t, front).reply(fmt.Sprint("q", i))] = true
	}
	if len(used) != 1 {
		t.Errorf("servers used by one client IP: %v, want one", used)
	}
	want := balance.HashString("127.0.0.1")
	be.mu.Lock()
	defer be.mu.Unlock()
	for _, h := range be.hashes {
		if h != want {
			t.Errorf("hash %#x, want HashString(client IP) = %#x", h, want)
		}
	}
}

// TestUDPDatagramSizes relays datagrams from empty to nearly the largest
// UDP payload, whole.
func TestUDPDatagramSizes(t *testing.T) {
	a := newUDPTestServer(t, "a")
	be := newUDPTestBackend(t, balance.RoundRobin, a.addr)
	u := &UDP{Frontend: "dns", Backend: func() (Backend, string) { return be, "resolvers" }}
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
	u := &UDP{Frontend: "game", Backend: func() (Backend, string) { return be, "game" }, IdleTimeout: idle}
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
	if n := be.acquired.Load(); n != 1 {
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
	if n := be.acquired.Load(); n != 2 {
		t.Errorf("%d flows made, want 2: a datagram after expiry starts a new one", n)
	}
}

// TestUDPServerRefused ends a flow whose server's port is closed (ICMP
// port unreachable), which passive health checks hear about; the client's
// next datagrams go to the other server.
func TestUDPServerRefused(t *testing.T) {
	a, b := newUDPTestServer(t, "a"), newUDPTestServer(t, "b")
	be := newUDPTestBackend(t, balance.RoundRobin, a.addr, b.addr)
	u := &UDP{Frontend: "dns", Backend: func() (Backend, string) { return be, "resolvers" }}
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
	u := &UDP{Frontend: "syslog", Backend: func() (Backend, string) { return be, "collectors" }, MaxFlows: 2, Log: log}
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
	if n := be.acquired.Load(); n != 2 {
		t.Errorf("%d servers acquired, want 2", n)
	}
}

// TestUDPNoServer drops a new flow's datagram when no server is usable,
// with a warning naming the frontend, backend, client and reason.
func TestUDPNoServer(t *testing.T) {
	a := newUDPTestServer(t, "a")
	be := newUDPTestBackend(t, balance.RoundRobin, a.addr)
	be.member(a.addr).State.SetHealthy(false)
	log, logBuf := udpTestLog()
	u := &UDP{Frontend: "dns", Backend: func() (Backend, string) { return be, "resolvers" }, Log: log}
	front := addrPort(t, startUDP(t, u, "127.0.0.1:0"))
	c := newUDPTestClient(t, front)
	c.send("1")
	udpWaitFor(t, "a warning naming frontend, backend, client and reason", func() bool {
		return udpLogCount(logBuf, "WARN", "frontend=dns", "backend=resolvers", "client=127.0.0.1:", errUDPTestNoServer.Error()) == 1
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
			u := &UDP{Frontend: "dns", Backend: func() (Backend, string) { return be, "resolvers" }}
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
	waiting := newUDPTestBackend(t, balance.RoundRobin, a.addr)
	waiting.wait = true
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
	u := &UDP{Frontend: "dns", IdleTimeout: time.Minute, Backend: func() (Backend, string) {
		if n.Add(1) == 1 {
			return waiting, "queued" // the first flow waits for a server
		}
		return be, "resolvers"
	}}
	served := make(chan error, 1)
	go func() { served <- u.Serve(pc) }()
	blocked.send("waits")
	udpWaitFor(t, "the first flow to wait for a server", func() bool {
		waiting.mu.Lock()
		defer waiting.mu.Unlock()
		return len(waiting.hashes) == 1
	})
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
	if n := be.inflight(); n != 0 || be.acquired.Load() != be.released.Load() {
		t.Errorf("after Shutdown: %d in flight, %d acquired, %d released", n, be.acquired.Load(), be.released.Load())
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

// udpOpenFiles counts the process's open file descriptors.
func udpOpenFiles(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(ents)
}

// udpGoroutines returns the stacks of goroutines running the relay's code.
func udpGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(strings.ToLower(g), "internal/l4.(*udp") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
