package l4

import (
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fdCount is what the descriptors of this process refer to.
type fdCount struct{ sockets, pipes, other int }

func (c fdCount) total() int { return c.sockets + c.pipes + c.other }

func (c fdCount) minus(d fdCount) fdCount {
	return fdCount{c.sockets - d.sockets, c.pipes - d.pipes, c.other - d.other}
}

// openFDs counts the descriptors this process has open, by kind.
func openFDs(t testing.TB) fdCount {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var c fdCount
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		switch {
		case err != nil: // the directory's own descriptor, closed by now
		case strings.HasPrefix(target, "socket:"):
			c.sockets++
		case strings.HasPrefix(target, "pipe:"):
			c.pipes++
		default:
			c.other++
		}
	}
	return c
}

// settlePipes waits until no splice pipe is left unused: the relay's
// pool closes its unused ones after pipeIdle, and the garbage collector
// those the standard library pools (io.Copy between sockets elsewhere in
// the tests).
func settlePipes(t *testing.T) {
	t.Helper()
	waitFor(t, "unused splice pipes closed", func() bool {
		splicePipes.mu.Lock()
		defer splicePipes.mu.Unlock()
		return len(splicePipes.free) == 0
	})
	last, stable := -1, 0
	for deadline := time.Now().Add(bound()); stable < 5 && time.Now().Before(deadline); {
		runtime.GC()
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
		if n := openFDs(t).pipes; n == last {
			stable++
		} else {
			last, stable = n, 0
		}
	}
}

// plainEcho echoes with read and write calls: no splice, so that the
// test's own server holds one descriptor per connection.
func plainEcho(c net.Conn) {
	io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{c})
}

// idleRelays opens n connections through a new proxy to an echo server,
// moves one byte each way on each (so that both directions have copied),
// and leaves them idle. It returns the descriptors the proxy holds for
// them: what the process holds beyond the client and echo-server sockets
// of the test itself (2 × n sockets).
func idleRelays(t *testing.T, n int) fdCount {
	t.Helper()
	b := newFakeBackend(serve(t, plainEcho))
	addr := startTCP(t, &TCP{Frontend: "idle", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: singleTable(b), Log: slog.New(slog.DiscardHandler)})
	settlePipes(t)
	before := openFDs(t)
	buf := make([]byte, 1)
	for i := range n {
		c, err := net.DialTimeout("tcp4", addr, bound())
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(bound()))
		if _, err := c.Write(buf); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	// The copies go back to waiting once the byte has passed; pipes they
	// released are the pool's, not theirs.
	time.Sleep(50 * time.Millisecond)
	settlePipes(t)
	held := openFDs(t).minus(before)
	held.sockets -= 2 * n
	return held
}

// TestTCPIdleDescriptors checks that an idle relayed connection holds its
// two sockets and nothing else: no splice pipe while no byte flows (a
// pipe is two descriptors, and each direction would hold one).
func TestTCPIdleDescriptors(t *testing.T) {
	n := 1000
	if testing.Short() {
		n = 100
	}
	if s := os.Getenv("PORTCULLIS_TEST_IDLE_RELAYS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	one := idleRelays(t, 1)
	many := idleRelays(t, n)
	t.Logf("descriptors held by the proxy: %d for 1 idle relay %+v, %d for %d idle relays %+v", one.total(), one, many.total(), n, many)
	if one.total() > 2 {
		t.Errorf("1 idle relay holds %d descriptors in the proxy (%+v), want 2 (its two sockets)", one.total(), one)
	}
	if many.total() > 2*n {
		t.Errorf("%d idle relays hold %d descriptors in the proxy (%+v), want at most %d", n, many.total(), many, 2*n)
	}
}
