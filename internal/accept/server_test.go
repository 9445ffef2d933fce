package accept

import (
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/testutil"
)

// failingListener fails every Accept with err until its deadline, then
// reports itself closed.
type failingListener struct {
	net.Listener
	err   error
	until time.Time
	calls atomic.Int64
}

func (l *failingListener) Accept() (net.Conn, error) {
	if time.Now().After(l.until) {
		return nil, net.ErrClosed
	}
	l.calls.Add(1)
	return nil, l.err
}

func (l *failingListener) Addr() net.Addr { return &net.TCPAddr{} }

// TestServeAcceptErrorsSummarized runs the accept loop against a listener
// out of descriptors for a few seconds: it must back off (5ms doubling to
// 1s) and log at most one line per second, counting every error.
func TestServeAcceptErrorsSummarized(t *testing.T) {
	const flood = 3500 * time.Millisecond
	logs := &testutil.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	gate := &limit.Gate{Conns: limit.NewConns(nil), Events: limit.NewEvents(log, 0), Frontend: "limited", Address: "test"}
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	ln := &failingListener{err: emfile, until: time.Now().Add(flood)}
	s := &Server{Handler: HandlerFunc(func(c *Conn) { c.Close() }), Gate: gate}
	if err := s.Serve(ln); err != nil {
		t.Fatalf("Serve: %v, want nil once the listener closed", err)
	}
	calls := int(ln.calls.Load())
	// The last summary comes up to a second after the last error.
	time.Sleep(limit.SummaryInterval + testutil.Scaled(200*time.Millisecond))

	lines := logs.Lines("accept failed")
	var counted int
	for _, l := range lines {
		if !strings.Contains(l, `msg="accept failed: out of file descriptors or memory"`) || !strings.Contains(l, "too many open files") {
			t.Errorf("summary line does not name the cause: %s", l)
		}
		_, v, _ := strings.Cut(l, " count=")
		v, _, _ = strings.Cut(v, " ")
		n, _ := strconv.Atoi(v)
		counted += n
	}
	t.Logf("%d accept errors in %v, %d log lines", calls, flood, len(lines))
	if max := int(flood/time.Second) + 2; len(lines) > max {
		t.Errorf("%d log lines for %v of errors, want at most one per second (%d):\n%s", len(lines), flood, max, strings.Join(lines, ""))
	}
	if counted != calls {
		t.Errorf("the summaries count %d errors, want %d", counted, calls)
	}
	// 5+10+…+640ms, then 1s: about 10 accepts in 3.5s, not thousands.
	if calls > 15 {
		t.Errorf("%d accepts in %v: no back-off", calls, flood)
	}
}
