package l4

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/internal/upstream"
)

// silentServer returns the address of a listener whose accept queue is
// full and never drained: the kernel drops the SYNs of further connects,
// which then time out in SYN-SENT.
func silentServer(t *testing.T) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*unix.SockaddrInet4).Port))
	// Fill the accept queue (a backlog of 0 holds one connection).
	for range 2 {
		if c, err := net.DialTimeout("tcp4", addr, 200*time.Millisecond); err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	return addr
}

func TestDialTimeoutSYNUnanswered(t *testing.T) {
	addr := silentServer(t)
	start := time.Now()
	c, err := dialTCP(context.Background(), addr, 300*time.Millisecond)
	if err == nil {
		c.Close()
		t.Fatal("connected to a server whose accept queue is full")
	}
	var te *connectTimeoutError
	if !errors.As(err, &te) || !te.synSent {
		t.Fatalf("error %v (%T), want a timeout with the SYN unanswered", err, err)
	}
	if ownFailure(err) {
		t.Errorf("an unanswered SYN is taken for the proxy's own failure: %v", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > testutil.Scaled(2*time.Second) {
		t.Errorf("gave up after %v, want about 300ms", d)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("%v is not a net.Error timeout", err)
	}
}

// TestSynUnansweredEstablished checks the other verdict: a socket whose
// handshake completed means the server answered, so a timeout then is
// the proxy's (it did not get to the answer in time).
func TestSynUnansweredEstablished(t *testing.T) {
	a, _ := pair(t)
	rc, err := a.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if sent, state := synUnanswered(rc); sent || !strings.Contains(state, "answered") {
		t.Errorf("established socket: SYN unanswered %v (%s), want false", sent, state)
	}
	w := &dialWatch{}
	w.expire()
	if sent, state := w.verdict(); sent || state != errNoSocket.Error() {
		t.Errorf("no socket yet: SYN unanswered %v (%s), want false", sent, state)
	}
	own := &connectTimeoutError{addr: "x", timeout: time.Second, state: "answered"}
	if !ownFailure(own) || !ownFailure(os.NewSyscallError("socket", syscall.EMFILE)) {
		t.Error("the proxy's own failures are not recognized")
	}
	if ownFailure(os.NewSyscallError("connect", syscall.ECONNREFUSED)) {
		t.Error("a refused connect is taken for the proxy's own failure")
	}
}

func TestTCPConnectTimeoutCounts(t *testing.T) {
	silent := silentServer(t)
	b := newBackend(backendOptions{Options: upstream.Options{ConnectTimeout: 300 * time.Millisecond}}, silent)
	log, _ := testLog()
	addr := startTCP(t, &TCP{Frontend: "timeout", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: singleTable(b), Log: log})
	refused(t, dial(t, addr), "connection to a silent server")
	b.waitInflight(t)
	if failures, _ := b.observations(silent); failures != 1 {
		t.Errorf("%d failures observed for a server that never answered the SYN, want 1", failures)
	}
}

// exhaustDescriptors lowers the open-files limit of the process to a
// little above what it uses, fills it up, and leaves free descriptors.
// The func it returns undoes all of it (at the latest when the test
// ends).
func exhaustDescriptors(t *testing.T, free int) (restore func()) {
	t.Helper()
	// Nothing the garbage collector would close may be left (pooled
	// splice pipes): it would free descriptors in the middle.
	settlePipes(t)
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	low := old
	low.Cur = uint64(openFDs(t).total() + 64)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	var fill []*os.File
	restore = sync.OnceFunc(func() {
		for _, f := range fill {
			f.Close()
		}
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old)
	})
	t.Cleanup(restore)
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			if !errors.Is(err, syscall.EMFILE) {
				t.Fatal(err)
			}
			break
		}
		fill = append(fill, f)
	}
	for _, f := range fill[len(fill)-free:] {
		f.Close()
	}
	fill = fill[:len(fill)-free]
	return restore
}

// TestTCPOutOfDescriptorsNotHeldAgainstServer runs the proxy with
// descriptors for the client sockets only: every connect to the server
// fails with EMFILE, which must not count against the server, must close
// the client connection, and must be logged once a second as the proxy's
// own trouble.
func TestTCPOutOfDescriptorsNotHeldAgainstServer(t *testing.T) {
	var served atomic.Int64
	server := serve(t, func(c net.Conn) { served.Add(1); echo(c) })
	other := deadAddr(t)
	b := newBackend(backendOptions{Options: upstream.Options{Retries: 1}}, server, other) // out of descriptors, no retry on the other
	log, logs := testLog()
	addr := startTCP(t, &TCP{Frontend: "starved", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: singleTable(b), Log: log})

	const conns = 20
	func() {
		// Two descriptors: the test's client socket and the proxy's
		// accepted one. The proxy's connect to the server finds none.
		defer exhaustDescriptors(t, 2)()
		for i := range conns {
			c, err := net.Dial("tcp4", addr)
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			c.SetDeadline(time.Now().Add(bound()))
			n, err := c.Read(make([]byte, 1))
			c.Close()
			if n != 0 || (err != io.EOF && !isReset(err)) {
				t.Fatalf("connection %d: read %d bytes, %v; want it closed", i, n, err)
			}
			b.waitInflight(t)
		}
	}()
	if failures, _ := b.observations(server); failures != 0 || served.Load() != 0 {
		t.Errorf("%d failures observed for the server, %d connections served; want none", failures, served.Load())
	}
	if failures, _ := b.observations(other); failures != 0 {
		t.Errorf("%d failures observed for the other server, want none", failures)
	}
	if got := logLines(logs, "retrying on another server"); len(got) > 0 {
		t.Errorf("out of descriptors, the proxy tried another server:\n%s", strings.Join(got, ""))
	}
	waitFor(t, "the failures summarized", func() bool {
		return len(logLines(logs, `msg="cannot connect to a server: the proxy is out of descriptors`)) > 0
	})
	time.Sleep(limit.SummaryInterval)
	var counted int
	for _, l := range logLines(logs, `msg="cannot connect to a server: the proxy is out of descriptors`) {
		if !strings.Contains(l, "too many open files") || !strings.Contains(l, "backend=test") {
			t.Errorf("summary without the cause or the backend: %s", l)
		}
		_, v, _ := strings.Cut(l, " count=")
		v, _, _ = strings.Cut(v, " ")
		n, _ := strconv.Atoi(v)
		counted += n
	}
	if counted != conns {
		t.Errorf("the summaries count %d failures, want %d", counted, conns)
	}
	if got := logLines(logs, "level=WARN", "cannot connect to a server", "server="); len(got) > 0 {
		t.Errorf("per-connection warnings for the proxy's own failure:\n%s", strings.Join(got, ""))
	}
	// With descriptors back, the server serves.
	defer func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	}()
	echoed(t, dial(t, addr), "after the shortage")
}
