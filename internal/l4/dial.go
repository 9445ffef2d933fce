package l4

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/metrics"
)

// Connecting to a server, and whose fault a failed connect is.
//
// Passive health checks hold a failed connect against the server, so a
// failure that is the proxy's own must not count, or a proxy short of
// descriptors would take its healthy servers down one after the other and
// turn its own trouble into an outage:
//
//   - Out of resources (limit.OutOfResources): no descriptor (EMFILE,
//     ENFILE), memory or buffers (ENOMEM, ENOBUFS), or local port
//     (EADDRNOTAVAIL). HAProxy calls these SF_ERR_RESOURCE and does not
//     hold them against the server either. Only EADDRNOTAVAIL is retried
//     on another server (the local ports run out per destination); the
//     others would fail alike on any server, so the client connection is
//     closed at once.
//   - A connect timeout counts against the server only when the kernel
//     sent the SYN and got nothing back: when timeouts.connect passes, the
//     socket is still in SYN-SENT (TCP_INFO). A socket that is already
//     established means the server answered in time and the proxy did not
//     get to it (its goroutines were starved: the proxy is overloaded); no
//     socket yet means the connect had not even started (a slow DNS
//     lookup, or again an overloaded proxy). Neither is the server's fault.
//     HAProxy counts every connect timeout; this rule differs only where
//     the kernel shows the server did answer, or was never asked. Where
//     TCP_INFO is not available (another OS), every timeout counts.
//
// Such failures are logged as the proxy's own, summarized once a second
// (limit.Events), and the client connection is closed; a connect timeout
// is retried on another server like any timeout.

// dialGrace is how long after timeouts.connect the dialer's own deadline
// falls: the check of the socket at timeouts.connect runs first unless
// the proxy is late by this much, which is overload.
const dialGrace = time.Second

// errNoSocket is the state a connect timeout found when the connect had
// not created its socket yet.
var errNoSocket = errors.New("no socket yet")

// connectTimeoutError is a connect that timeouts.connect ended.
type connectTimeoutError struct {
	addr    string
	timeout time.Duration
	// synSent: the kernel sent the SYN and got no answer; else the
	// timeout is the proxy's own, for the reason in state.
	synSent bool
	state   string
}

func (e *connectTimeoutError) Error() string {
	if e.synSent {
		return fmt.Sprintf("connect to %s: no answer to the SYN within timeouts.connect (%s)", e.addr, e.timeout)
	}
	return fmt.Sprintf("connect to %s: timed out on the proxy's side after timeouts.connect (%s): %s", e.addr, e.timeout, e.state)
}

func (e *connectTimeoutError) Timeout() bool   { return true }
func (e *connectTimeoutError) Temporary() bool { return true }

// ownFailure reports whether a failed connect is the proxy's own doing
// (see above), which passive health checks must not see.
func ownFailure(err error) bool {
	if limit.OutOfResources(err) {
		return true
	}
	var te *connectTimeoutError
	return errors.As(err, &te) && !te.synSent
}

// retryable reports whether a failed connect may be tried on another
// server.
func retryable(err error) bool {
	return !limit.OutOfResources(err) || errors.Is(err, syscall.EADDRNOTAVAIL)
}

// dialTCP connects to addr within timeout (none when ≤ 0) or until ctx
// ends. A timeout is returned as a *connectTimeoutError that says whether
// the server is to blame.
func dialTCP(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	w := &dialWatch{}
	d := net.Dialer{
		ControlContext: w.control,
		// Go divides the time between the addresses of a name by this
		// deadline; ours below ends the whole connect first.
		Deadline: time.Now().Add(timeout + dialGrace),
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	timer := time.AfterFunc(timeout, func() {
		w.expire()
		cancel()
	})
	c, err := d.DialContext(ctx, "tcp", addr)
	timer.Stop()
	if err == nil {
		return c, nil
	}
	if w.expired() && (errors.Is(err, context.Canceled) || isTimeout(err)) {
		synSent, state := w.verdict()
		return nil, &connectTimeoutError{addr: addr, timeout: timeout, synSent: synSent, state: state}
	}
	if isTimeout(err) && ctx.Err() == nil {
		// The dialer's deadline, dialGrace after ours: our check did not
		// run in time.
		return nil, &connectTimeoutError{addr: addr, timeout: timeout, state: "the proxy is overloaded (its timer ran late)"}
	}
	return nil, err
}

// dialWatch looks at the socket of a connect when timeouts.connect
// passes, before the connect is abandoned and the socket closed.
type dialWatch struct {
	mu      sync.Mutex
	rc      syscall.RawConn // the socket being connected; nil before
	done    bool            // expire ran
	synSent bool
	state   string
}

// control records the socket (Dialer.ControlContext, called once per
// address tried, before connect).
func (w *dialWatch) control(_ context.Context, _, _ string, rc syscall.RawConn) error {
	w.mu.Lock()
	w.rc = rc
	w.mu.Unlock()
	return nil
}

// expire reads the state of the socket being connected.
func (w *dialWatch) expire() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
	if w.rc == nil {
		w.state = errNoSocket.Error()
		return
	}
	w.synSent, w.state = synUnanswered(w.rc)
}

func (w *dialWatch) expired() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.done
}

func (w *dialWatch) verdict() (synSent bool, state string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.synSent, w.state
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// connectCause is the cause under which a failed connect to a server is
// counted.
func connectCause(err error) metrics.Cause {
	if isTimeout(err) {
		return metrics.Timeout
	}
	return metrics.Connect
}
