package integration

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The layer-4 relay under attack: descriptors per idle connection, the
// proxy out of descriptors, connection caps.

// fdSet is what the descriptors of a process are.
type fdSet struct {
	numbers        []int
	sockets, pipes int
}

// unusedPipesClosed is how long after its last transfer portcullis has
// closed the splice pipes it keeps for the next ones.
const unusedPipesClosed = 2500 * time.Millisecond

// procFDs lists the descriptors process pid has open.
func procFDs(t *testing.T, pid int) fdSet {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var s fdSet
	for _, e := range ents {
		fd, _ := strconv.Atoi(e.Name())
		s.numbers = append(s.numbers, fd)
		target, _ := os.Readlink(dir + "/" + e.Name())
		switch {
		case strings.HasPrefix(target, "socket:"):
			s.sockets++
		case strings.HasPrefix(target, "pipe:"):
			s.pipes++
		}
	}
	return s
}

// limitLeaving returns the open-files limit under which a process with
// the descriptors s can open exactly free more: the kernel gives the
// lowest free number, which must be below the limit.
func (s fdSet) limitLeaving(free int) int {
	open := map[int]bool{}
	for _, fd := range s.numbers {
		open[fd] = true
	}
	holes := 0
	for l := 0; ; l++ {
		if !open[l] {
			holes++
		}
		if holes == free {
			return l + 1
		}
	}
}

// tcpFrontendConfig is a tcp frontend "front" on addr with the frontend
// settings extra (YAML lines indented by four spaces), relaying to the
// servers of backend "back" with backend settings (likewise). global is
// the global section.
func tcpFrontendConfig(global, addr, extra, settings string, servers ...string) string {
	var b strings.Builder
	b.WriteString(global)
	fmt.Fprintf(&b, `frontends:
  front:
    mode: tcp
    bind:
      - address: %s
    routes:
      - backend: back
%sbackends:
  back:
%s    servers:
`, addr, extra, settings)
	for _, s := range servers {
		fmt.Fprintf(&b, "      - address: %s\n", s)
	}
	return b.String()
}

// greeted opens a connection to addr and reads the -tcp-echo server's
// greeting ("NAME\n"), then checks that a byte is echoed. It returns the
// open connection.
func greeted(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, scaled(5*time.Second))
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(scaled(10 * time.Second)))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf[:3]); err != nil {
		c.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if _, err := c.Write([]byte("x")); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := io.ReadFull(c, buf[3:]); err != nil || buf[3] != 'x' {
		c.Close()
		return nil, fmt.Errorf("echo: %q, %v", buf, err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// TestL4TCPIdleDescriptors relays 1,000 connections through a tcp
// frontend and leaves them idle: portcullis must hold two descriptors for
// each (the client's socket and the server's), not the six it held when
// each direction kept a splice pipe while waiting. The test's process,
// portcullis and the echo server each hold about 2,000 to 3,000, under the
// open-files limit of 20,000 of each.
func TestL4TCPIdleDescriptors(t *testing.T) {
	const conns = 1000
	e := startUp(t, "e1", "127.0.0.1:0", "-tcp-echo")
	const front = "127.0.0.1:7010"
	// All clients come from 127.0.0.1: no per-client cap.
	_, p := startL4(t, tcpFrontendConfig(l4Global, front, "    limits:\n      max_conns_per_client: 0\n", "", e.addr), nil)
	c, err := greeted(front)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	// Pipes unused for 1 to 2 seconds are closed.
	time.Sleep(unusedPipesClosed)
	before := procFDs(t, p.pid())

	var mu sync.Mutex
	var open []net.Conn
	var failed []error
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range open {
			c.Close()
		}
	})
	sem := make(chan struct{}, 50)
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := greeted(front)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = append(failed, err)
				return
			}
			open = append(open, c)
		})
	}
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d of %d connections failed, first: %v", len(failed), conns, failed[0])
	}
	time.Sleep(unusedPipesClosed)
	after := procFDs(t, p.pid())
	held := len(after.numbers) - len(before.numbers)
	t.Logf("portcullis holds %d descriptors for %d idle relayed connections (%.2f each): %d sockets, %d pipes; before them %d descriptors (%d pipes), after %d (%d pipes)",
		held, conns, float64(held)/conns, after.sockets-before.sockets, after.pipes-before.pipes, len(before.numbers), before.pipes, len(after.numbers), after.pipes)
	if held > 2*conns {
		t.Errorf("%d idle relayed connections hold %d descriptors, want at most %d (two sockets each)", conns, held, 2*conns)
	}
	// They are still relayed.
	for _, c := range open[:10] {
		c.SetDeadline(time.Now().Add(scaled(5 * time.Second)))
		if _, err := c.Write([]byte("y")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatalf("an idle connection no longer relays: %v", err)
		}
	}
}

// nofileSoft returns the soft open-files limit of process pid.
func nofileSoft(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, "Max open files") {
			return strings.Fields(strings.TrimPrefix(line, "Max open files"))[0]
		}
	}
	t.Fatalf("no open-files limit in /proc/%d/limits", pid)
	return ""
}

// setNofile sets the soft open-files limit of process pid with prlimit.
func setNofile(t *testing.T, pid int, soft string) {
	t.Helper()
	prlimit := needTool(t, "prlimit", "util-linux")
	if out, err := exec.Command(prlimit, "--pid", strconv.Itoa(pid), "--nofile="+soft+":").CombinedOutput(); err != nil {
		t.Fatalf("prlimit --nofile=%s: %v\n%s", soft, err, out)
	}
}

// TestL4TCPOutOfDescriptors lowers portcullis's open-files limit (prlimit)
// until it can accept a connection but not connect to the server: each
// connection must be closed, the failures logged as the proxy's own once a
// second, and the server must stay up (passive checks, 3 failures), so
// that once descriptors are back the next connection is relayed at once,
// not refused for the cooldown of a server wrongly taken down.
func TestL4TCPOutOfDescriptors(t *testing.T) {
	e := startUp(t, "e1", "127.0.0.1:0", "-tcp-echo")
	const front = "127.0.0.1:7011"
	// As root (no user): prlimit on another user's process needs
	// CAP_SYS_RESOURCE.
	global := "global:\n  grace: 2s\n"
	_, p := startL4(t, tcpFrontendConfig(global, front, "",
		"    passive_health: {failures: 3, cooldown: 30s}\n", e.addr), nil)
	pid := p.pid()

	// Two relayed connections that must survive the shortage.
	var kept []net.Conn
	for range 2 {
		c, err := greeted(front)
		if err != nil {
			t.Fatal(err)
		}
		kept = append(kept, c)
		t.Cleanup(func() { c.Close() })
	}
	mark := len(p.stderr.String())

	// One free descriptor: enough to accept, not to connect.
	soft := nofileSoft(t, pid)
	time.Sleep(100 * time.Millisecond)
	fds := procFDs(t, pid)
	limit := fds.limitLeaving(1)
	setNofile(t, pid, strconv.Itoa(limit))
	restored := false
	restore := func() {
		if !restored {
			restored = true
			setNofile(t, pid, soft)
		}
	}
	t.Cleanup(restore)
	t.Logf("open-files limit %d with descriptors %v open", limit, fds.numbers)

	const attempts = 30
	start := time.Now()
	var closed, relayed, waiting int
	for range attempts {
		c, err := net.DialTimeout("tcp", front, scaled(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(scaled(3 * time.Second)))
		k, err := c.Read(make([]byte, 3))
		var ne net.Error
		switch {
		case k > 0:
			relayed++
		case errors.As(err, &ne) && ne.Timeout():
			waiting++ // still in the listen queue: accept failed meanwhile
		default:
			closed++ // EOF or reset
		}
		c.Close()
	}
	took := time.Since(start)
	restore()
	t.Logf("%d connections in %v: %d closed, %d relayed, %d left in the listen queue", attempts, took.Round(time.Millisecond), closed, relayed, waiting)
	if closed == 0 {
		t.Fatalf("no connection was closed for want of descriptors (%d relayed, %d waiting)", relayed, waiting)
	}

	// The server is still up: the next connection is relayed at once.
	if c, err := greeted(front); err != nil {
		t.Errorf("after the shortage: %v", err)
	} else {
		c.Close()
	}
	for _, c := range kept {
		c.SetDeadline(time.Now().Add(scaled(5 * time.Second)))
		if _, err := c.Write([]byte("z")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Errorf("a connection relayed before the shortage broke: %v", err)
		}
	}

	// The log: the proxy's own failure, summarized; the server never down.
	const own = `msg="cannot connect to a server: the proxy is out of descriptors`
	time.Sleep(scaled(1200 * time.Millisecond)) // the last summary
	lines := logsWith(p, mark, own)
	if len(lines) == 0 {
		t.Errorf("no %s line", own)
	}
	var counted int
	for _, l := range lines {
		if !strings.Contains(l, "too many open files") {
			t.Errorf("summary without its cause: %s", l)
		}
		_, v, _ := strings.Cut(l, " count=")
		v, _, _ = strings.Cut(v, " ")
		k, _ := strconv.Atoi(v)
		counted += k
	}
	t.Logf("summaries:\n%s", strings.Join(append(lines, logsWith(p, mark, `msg="accept failed`)...), "\n"))
	if counted < closed {
		t.Errorf("the summaries count %d failures, %d connections were closed", counted, closed)
	}
	seconds := int(took/time.Second) + 2
	for _, msg := range []string{own, `msg="accept failed`} {
		if got := logsWith(p, mark, msg); len(got) > seconds {
			t.Errorf("%d %s lines in %v, want at most one per second:\n%s", len(got), msg, took, strings.Join(got, "\n"))
		}
	}
	if down := logsWith(p, mark, `msg="server down"`); len(down) > 0 {
		t.Errorf("the server was taken down for the proxy's own failures:\n%s", strings.Join(down, "\n"))
	}
	if warn := logsWith(p, mark, "level=WARN", `msg="closing connection`); len(warn) > 0 {
		t.Errorf("one warning per connection:\n%s", strings.Join(warn[:min(len(warn), 5)], "\n"))
	}
}

// TestL4TCPMaxConnsPerClient caps a tcp frontend at two connections per
// client IP: the third from one address is closed at once and summarized,
// another address is served, and once one closes the first address is
// served again.
func TestL4TCPMaxConnsPerClient(t *testing.T) {
	e := startUp(t, "e1", "127.0.0.1:0", "-tcp-echo")
	const front = "127.0.0.1:7012"
	_, p := startL4(t, tcpFrontendConfig(l4Global, front, "    limits:\n      max_conns_per_client: 2\n", "", e.addr), nil)
	mark := len(p.stderr.String())

	var conns []net.Conn
	for i := range 2 {
		c, err := greeted(front)
		if err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, c)
	}
	c, err := net.DialTimeout("tcp", front, scaled(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := closedWithoutAnswer(c, scaled(5*time.Second)); err != nil {
		t.Errorf("third connection from 127.0.0.1: %v; want it closed at max_conns_per_client 2", err)
	}
	c.Close()
	// Another client address is not affected.
	if c, err := dialFrom("127.0.0.2", front); err != nil {
		t.Fatal(err)
	} else {
		c.SetDeadline(time.Now().Add(scaled(5 * time.Second)))
		if _, err := io.ReadFull(c, make([]byte, 3)); err != nil {
			t.Errorf("connection from 127.0.0.2: %v", err)
		}
		c.Close()
	}
	conns[0].Close()
	var again net.Conn
	deadline := time.Now().Add(scaled(5 * time.Second))
	for {
		// The count is released when the relay has ended.
		again, err = greeted(front)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("after one closed: %v", err)
	}
	again.Close()
	waitLogWith(t, p, mark, scaled(3*time.Second), `msg="limit reached, connection closed"`, "limit=max_conns_per_client", "frontend=front", "address="+front)
}
