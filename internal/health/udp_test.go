package health

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/balance"
)

// udpMode is how a udpServer treats the datagrams it reads.
type udpMode int64

const (
	udpEcho  udpMode = iota // answers every datagram with itself
	udpMute                 // reads every datagram, answers none
	udpMatch                // answers only a datagram equal to its match
)

// udpArrival is one check datagram as the server saw it.
type udpArrival struct {
	payload  string
	from     *net.UDPAddr
	answered bool
	healthy  bool // the health of the server's State when it arrived
}

// udpServer is a real UDP server on 127.0.0.1:0 that records every
// datagram with the health of st at that moment, then answers it or not as
// its mode says. Checks run one after another, so the health seen by a
// check reflects the results of all the checks before it.
type udpServer struct {
	addr    string
	st      *balance.State
	match   string // the datagram udpMatch answers
	mode    atomic.Int64
	arrived chan struct{} // one token per datagram, never blocks

	mu   sync.Mutex
	seen []udpArrival
}

func newUDPServer(t *testing.T, mode udpMode, match string) *udpServer {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	us := &udpServer{addr: c.LocalAddr().String(), match: match, arrived: make(chan struct{}, 1)}
	us.st = balance.NewState(us.addr)
	us.mode.Store(int64(mode))
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			p := string(buf[:n])
			m := udpMode(us.mode.Load())
			answer := m == udpEcho || m == udpMatch && p == us.match
			us.mu.Lock()
			us.seen = append(us.seen, udpArrival{p, from, answer, us.st.Healthy()})
			us.mu.Unlock()
			select {
			case us.arrived <- struct{}{}:
			default:
			}
			if answer {
				c.WriteToUDP(buf[:n], from)
			}
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return us
}

func (us *udpServer) setMode(m udpMode) { us.mode.Store(int64(m)) }

func (us *udpServer) arrivals() []udpArrival {
	us.mu.Lock()
	defer us.mu.Unlock()
	return append([]udpArrival(nil), us.seen...)
}

// count is the number of datagrams answered (or not, as answered says).
func (us *udpServer) count(answered bool) int {
	n := 0
	for _, a := range us.arrivals() {
		if a.answered == answered {
			n++
		}
	}
	return n
}

// healthSeen is the health seen by the datagrams answered (or not), in
// order.
func (us *udpServer) healthSeen(answered bool) []bool {
	var out []bool
	for _, a := range us.arrivals() {
		if a.answered == answered {
			out = append(out, a.healthy)
		}
	}
	return out
}

// waitArrival waits for the next datagram and returns it.
func (us *udpServer) waitArrival(t *testing.T) udpArrival {
	t.Helper()
	select {
	case <-us.arrived: // an old token: drain it
	default:
	}
	select {
	case <-us.arrived:
	case <-time.After(scaled(2 * time.Second)):
		t.Fatal("no health check datagram arrived")
	}
	a := us.arrivals()
	return a[len(a)-1]
}

// closedPort returns an address on 127.0.0.1 where nothing listens for
// network ("udp" or "tcp"): a port just bound and released.
func closedPort(t *testing.T, network string) string {
	t.Helper()
	var addr string
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = c.LocalAddr().String()
		c.Close()
	} else {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = l.Addr().String()
		l.Close()
	}
	return addr
}

// portOf is the port of a "host:port" address.
func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// udpCheck is a UDP check with a short interval.
func udpCheck(rise, fall int) *Active {
	return &Active{
		Kind:     "udp",
		Interval: scaled(30 * time.Millisecond),
		Timeout:  scaled(25 * time.Millisecond),
		Rise:     rise,
		Fall:     fall,
	}
}

// A server that answers stays up; one that reads the datagrams and never
// answers goes down after exactly Fall checks, each lasting the timeout,
// and comes back after exactly Rise answered ones.
func TestUDPCheckFallAndRise(t *testing.T) {
	t.Parallel()
	const rise, fall = 2, 3
	us := newUDPServer(t, udpEcho, "")
	log, logs := newLog()
	// A timeout long enough that an answer late on a busy machine does not
	// count as one more unanswered check.
	a := udpCheck(rise, fall)
	a.Interval, a.Timeout = scaled(100*time.Millisecond), scaled(80*time.Millisecond)
	monitorOf(t, us.st, a, Passive{}, log)

	waitFor(t, scaled(2*time.Second), "answered checks", func() bool { return us.count(true) >= 2 })
	if !us.st.Healthy() {
		t.Fatal("server down while it answers its checks")
	}

	us.setMode(udpMute)
	waitFor(t, scaled(3*time.Second), "unanswered checks", func() bool { return us.count(false) >= fall+2 })
	if us.st.Healthy() {
		t.Fatalf("server up after %d unanswered checks", us.count(false))
	}
	// The check after the Fall-th failure is the first to see it down.
	if n, ended := run(us.healthSeen(false), true); n != fall || !ended {
		t.Fatalf("server went down after %d unanswered checks (ended %v), want %d", n, ended, fall)
	}

	us.setMode(udpEcho)
	waitFor(t, scaled(2*time.Second), "answered checks", func() bool {
		_, ended := run(us.healthSeen(true), false)
		return ended
	})
	if n, _ := run(us.healthSeen(true), false); n != rise {
		t.Fatalf("server came up after %d answered checks, want %d", n, rise)
	}
	logs.expectLogged(t, "server down", 1, `reason="health check: udp: no reply within `+a.Timeout.String()+`"`)
	logs.expectLogged(t, "server down", 1, "server=b/"+us.addr)
	logs.expectLogged(t, "server up", 1, "2 consecutive successful health checks")

	// Send defaults to empty: every check is a zero-length datagram.
	for _, ar := range us.arrivals() {
		if ar.payload != "" {
			t.Fatalf("check datagram %q, want an empty one", ar.payload)
		}
	}
}

// A closed port answers with an ICMP port unreachable: the check fails at
// once, well before its timeout, says the port is closed, and one such
// check takes the server down with Fall 1.
func TestUDPCheckClosedPort(t *testing.T) {
	t.Parallel()
	addr := closedPort(t, "udp")

	a := (&Active{Kind: "udp", Interval: 20 * time.Second, Timeout: 10 * time.Second, Rise: defaultRise, Fall: defaultFall}).normalized()
	start := time.Now()
	err := newProber(a, addr).check(context.Background())
	if d := time.Since(start); d > a.Timeout/2 {
		t.Fatalf("the check of a closed port took %v (timeout %v), want it to fail at once", d, a.Timeout)
	}
	if err == nil || err.Error() != "udp: port closed (ICMP port unreachable)" {
		t.Fatalf("the check of a closed port: %v", err)
	}

	st := balance.NewState(addr)
	log, logs := newLog()
	monitorOf(t, st, udpCheck(1, 1), Passive{}, log)
	waitFor(t, scaled(2*time.Second), "server down", func() bool { return !st.Healthy() })
	logs.expectLogged(t, "server down", 1, `reason="health check: udp: port closed (ICMP port unreachable)"`)
}

// Port moves every kind of check to another port of the server's host.
func TestCheckPort(t *testing.T) {
	t.Parallel()

	// udp: the server's own port is closed, Port answers.
	t.Run("udp", func(t *testing.T) {
		t.Parallel()
		us := newUDPServer(t, udpEcho, "")
		st := balance.NewState(closedPort(t, "udp"))
		st.SetHealthy(false)
		a := udpCheck(1, 1)
		a.Port = portOf(t, us.addr)
		monitorOf(t, st, a, Passive{}, quiet)
		waitFor(t, scaled(2*time.Second), "server up from its check port", st.Healthy)
		if us.count(true) == 0 {
			t.Fatal("server up without a datagram to its check port")
		}
	})

	// udp: the server's own port answers, Port is closed.
	t.Run("udp_closed", func(t *testing.T) {
		t.Parallel()
		us := newUDPServer(t, udpEcho, "")
		closed := closedPort(t, "udp")
		log, logs := newLog()
		a := udpCheck(1, 1)
		a.Port = portOf(t, closed)
		monitorOf(t, us.st, a, Passive{}, log)
		waitFor(t, scaled(2*time.Second), "server down from its closed check port", func() bool { return !us.st.Healthy() })
		logs.expectLogged(t, "server down", 1,
			`reason="health check: port `+strconv.Itoa(a.Port)+`: udp: port closed (ICMP port unreachable)"`)
		if n := len(us.arrivals()); n != 0 {
			t.Fatalf("%d datagrams to the server's own port", n)
		}
	})

	t.Run("tcp", func(t *testing.T) {
		t.Parallel()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		tcpServer(t, l)
		st := balance.NewState(closedPort(t, "tcp"))
		st.SetHealthy(false)
		a := &Active{Kind: "tcp", Interval: scaled(30 * time.Millisecond), Timeout: scaled(25 * time.Millisecond), Rise: 1, Fall: 1}
		a.Port = portOf(t, l.Addr().String())
		monitorOf(t, st, a, Passive{}, quiet)
		waitFor(t, scaled(2*time.Second), "server up from its check port", st.Healthy)
	})

	t.Run("http", func(t *testing.T) {
		t.Parallel()
		cs := newCheckServer(t, http.StatusOK)
		st := balance.NewState(closedPort(t, "tcp"))
		st.SetHealthy(false)
		a := fastCheck(1, 1)
		a.Port = portOf(t, cs.addr)
		monitorOf(t, st, a, Passive{}, quiet)
		waitFor(t, scaled(2*time.Second), "server up from its check port", st.Healthy)
		// The Host header names the address checked.
		if r := cs.requests()[0]; r.host != cs.addr {
			t.Fatalf("Host %q, want %q", r.host, cs.addr)
		}
	})
}

// The check sends Send as its datagram: a server that answers only the
// expected datagram is up with the right Send and down with another.
func TestUDPCheckSend(t *testing.T) {
	t.Parallel()
	const want = "\x00PING health\n"
	us := newUDPServer(t, udpMatch, want)

	right := balance.NewState(us.addr)
	right.SetHealthy(false)
	a := udpCheck(2, 2)
	a.Send = want
	monitorOf(t, right, a, Passive{}, quiet)

	wrong := balance.NewState(us.addr)
	log, logs := newLog()
	b := udpCheck(2, 2)
	b.Send = "PING health\n"
	monitorOf(t, wrong, b, Passive{}, log)

	waitFor(t, scaled(2*time.Second), "the check sending the expected datagram to pass", right.Healthy)
	waitFor(t, scaled(2*time.Second), "the check sending another datagram to fail", func() bool { return !wrong.Healthy() })
	logs.expectLogged(t, "server down", 1, "udp: no reply within "+b.Timeout.String())
	for _, ar := range us.arrivals() {
		if ar.payload != a.Send && ar.payload != b.Send {
			t.Fatalf("check datagram %q, want %q or %q", ar.payload, a.Send, b.Send)
		}
	}
}

// Stop abandons a UDP check waiting for its reply at once, the abandoned
// check does not count, and its socket is closed.
func TestUDPStopAbandonsCheck(t *testing.T) {
	t.Parallel()
	us := newUDPServer(t, udpMute, "")
	a := &Active{Kind: "udp", Interval: time.Second, Timeout: 900 * time.Millisecond, Fall: 1}
	m := NewMonitor("b/"+us.addr, us.st, a, Passive{}, quiet)
	m.Start()
	defer m.Stop()
	ar := us.waitArrival(t)
	start := time.Now()
	m.Stop()
	if d := time.Since(start); d > scaled(300*time.Millisecond) {
		t.Fatalf("Stop took %v with a check in flight, want it abandoned at once", d)
	}
	if !us.st.Healthy() {
		t.Fatal("server down: the abandoned check counted as a failure")
	}

	// A datagram to the check's socket now bounces: nothing receives there.
	c, err := net.DialUDP("udp", nil, ar.from)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(scaled(time.Second)))
	if _, err := c.Write([]byte("late reply")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 16)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("a datagram to the abandoned check's socket %v: %v; want it refused (socket closed)", ar.from, err)
	}
}

// openSockets counts the process's open socket descriptors.
func openSockets(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot list open descriptors: %v", err)
	}
	n := 0
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// UDP checks close their sockets, whether the server answers, stays
// silent or has its port closed, and Stop leaves no goroutine. Not
// parallel: it counts the sockets of the whole process.
func TestUDPCheckClosesSockets(t *testing.T) {
	echo := newUDPServer(t, udpEcho, "")
	mute := newUDPServer(t, udpMute, "")
	closed := closedPort(t, "udp")
	before := openSockets(t)

	var ms []*Monitor
	for _, addr := range []string{echo.addr, mute.addr, closed} {
		st := balance.NewState(addr)
		m := NewMonitor("b/"+addr, st, udpCheck(1, 1), Passive{}, quiet)
		m.Start()
		ms = append(ms, m)
	}
	const checks = 6
	waitFor(t, scaled(2*time.Second), "checks", func() bool {
		return echo.count(true) >= checks && mute.count(false) >= checks
	})
	if len(monitorGoroutines()) == 0 {
		t.Fatal("no monitor goroutine found while one runs: the check below would prove nothing")
	}
	for _, m := range ms {
		m.Stop()
	}
	if after := openSockets(t); after > before {
		t.Fatalf("%d sockets open after %d checks of each server and Stop, %d before", after, checks, before)
	}
	waitFor(t, scaled(time.Second), "monitor goroutines to end", func() bool { return len(monitorGoroutines()) == 0 })
}

// describe names UDP failures by what the server did.
func TestDescribeUDP(t *testing.T) {
	t.Parallel()
	const timeout = 250 * time.Millisecond
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&net.OpError{Op: "read", Net: "udp", Err: os.ErrDeadlineExceeded}, "no reply within 250ms"},
		{&net.OpError{Op: "read", Net: "udp", Err: os.NewSyscallError("read", syscall.ECONNREFUSED)}, "port closed (ICMP port unreachable)"},
		{&net.OpError{Op: "write", Net: "udp", Err: os.NewSyscallError("write", syscall.ECONNREFUSED)}, "port closed (ICMP port unreachable)"},
		{&net.OpError{Op: "read", Net: "udp", Err: os.NewSyscallError("read", syscall.EHOSTUNREACH)}, "no route to host"},
		{context.DeadlineExceeded, "timeout after 250ms"},
		// TCP keeps its words.
		{&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, "connect: connection refused"},
		{&net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, "timeout after 250ms"},
	} {
		if got := describe(tc.err, timeout); got != tc.want {
			t.Errorf("describe(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
