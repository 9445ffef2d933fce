package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/upstream"
)

// Who a failed request is attributed to decides its status, whether it
// counts against the server for passive health, and whether it may be
// retried on another server:
//
//   - the server's: it refused or reset the connection, timed out, or
//     answered something that is not HTTP (502 or 504; counted; retried
//     when safe, see retriable);
//   - the client's: its request body is malformed, too large, too slow,
//     or it went away while sending it (clientBodyError: 400, 413, 408 or
//     no answer; never counted, never retried);
//   - the proxy's own: the process or the system is out of descriptors,
//     memory or source ports, or the proxy was too overloaded to notice a
//     connect finishing in time (ownFault: 503 with Retry-After; never
//     counted, summarized in the log). Only a failure to connect may be
//     retried on another server, as the request never left: a connect
//     timeout, or EADDRNOTAVAIL (source ports run out per destination);
//     out of descriptors or memory, another server would fail alike.
//
// A connect timeout is the server's, as HAProxy's L4TOUT is: the SYN went
// out and nothing answered within connect_timeout. It is the proxy's own
// only when the proxy gave up late: the dial ended more than
// lateDialSlack after its deadline, which shows that the process did not
// run its timers on time (a saturated CPU, a stalled scheduler), so it
// cannot tell a slow server from its own slowness. Counting such timeouts
// would take every healthy server down exactly when the proxy is
// overloaded (under attack) and turn overload into a full outage. The
// layer-4 relay (internal/l4, dial.go) follows the same rule with the same
// second of grace, and refines it with the socket's state at the timeout
// (TCP_INFO: a socket already established, or none yet, is the proxy's
// own); http.Transport dials here, where the timing alone decides.
//
// HAProxy does the same with its "resource" errors (SF_ERR_RESOURCE:
// no file descriptor, no source port, no memory): a 503, and the server
// keeps its health.
const lateDialSlack = time.Second

// dialError marks a failure to reach a server (connect, PROXY header or
// TLS handshake): the request was never sent, so it may be retried
// whatever its method.
type dialError struct {
	err error
	// late is set when the dial timed out more than lateDialSlack after
	// its deadline: the proxy's own overload (see lateDialSlack).
	late bool
}

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// newDialError wraps err, the failure of a dial that began at start and
// was given timeout (0: none known).
func newDialError(err error, start time.Time, timeout time.Duration) *dialError {
	e := &dialError{err: err}
	if timeout > 0 && isTimeout(err) && time.Since(start) > timeout+lateDialSlack {
		e.late = true
	}
	return e
}

func isTimeout(err error) bool {
	var nerr net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &nerr) && nerr.Timeout()
}

// ownFault reports whether err is the proxy's own failure, not the
// server's: out of resources (limit.OutOfResources) or a dial that timed
// out late (see lateDialSlack).
func ownFault(err error) bool {
	var de *dialError
	return limit.OutOfResources(err) || errors.As(err, &de) && de.late
}

// bodyFault is what went wrong with a request body on the client's side.
type bodyFault uint8

const (
	// bodyMalformed: the body does not parse (a bad chunk size, a body
	// shorter or longer than its Content-Length on HTTP/2 and HTTP/3).
	bodyMalformed bodyFault = iota + 1
	// bodyTooLarge: the body is longer than max_body_bytes.
	bodyTooLarge
	// bodyTimeout: the client sent nothing of its body for body_timeout.
	bodyTimeout
	// bodyAborted: the client closed or reset its connection or stream
	// in the middle of the body. Nobody is left to answer.
	bodyAborted
)

// status is the client's status for a fault (RFC 9110 §15.5.1, §15.5.9,
// §15.5.14). An aborted body gets none: 0.
func (f bodyFault) status() int {
	switch f {
	case bodyMalformed:
		return http.StatusBadRequest
	case bodyTooLarge:
		return http.StatusRequestEntityTooLarge
	case bodyTimeout:
		return http.StatusRequestTimeout
	}
	return 0
}

func (f bodyFault) String() string {
	switch f {
	case bodyMalformed:
		return "malformed request body"
	case bodyTooLarge:
		return "request body too large"
	case bodyTimeout:
		return "request body timeout"
	case bodyAborted:
		return "client aborted the request body"
	}
	return "request body error"
}

// clientBodyError is a read error of a request body on the client's side
// (see clientBody): it says nothing about the server, so it neither
// counts for passive health nor is retried, and the client gets the
// status of its kind.
type clientBodyError struct {
	kind bodyFault
	err  error
}

func (e *clientBodyError) Error() string { return e.kind.String() + ": " + e.err.Error() }
func (e *clientBodyError) Unwrap() error { return e.err }

// statusFor maps a round-trip failure to the client's status: the status
// of a fault of the client's request body (400, 408, 413); 503 when no
// server could take the request or the proxy itself is out of resources;
// 504 when a server or the connection to it timed out; 502 for everything
// else (refused, reset, bad response, TLS).
func statusFor(err error) int {
	var cb *clientBodyError
	switch {
	case errors.As(err, &cb):
		if s := cb.kind.status(); s != 0 {
			return s
		}
		return http.StatusBadRequest // never sent: nobody is left to answer
	case errors.Is(err, upstream.ErrNoServer), errors.Is(err, upstream.ErrQueueTimeout), ownFault(err):
		return http.StatusServiceUnavailable
	case isTimeout(err):
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// reason is a short operator-facing cause for logs.
func reason(err error) string {
	var (
		cb   *clientBodyError
		de   *dialError
		ce   *clientConnError
		cerr *tls.CertificateVerificationError
		uerr x509.UnknownAuthorityError
	)
	switch {
	case errors.As(err, &cb):
		return cb.kind.String()
	case limit.OutOfResources(err):
		return "proxy out of resources"
	case ownFault(err):
		return "proxy overloaded"
	case errors.As(err, &ce):
		return "no private connection for the client (send_proxy)"
	case errors.Is(err, upstream.ErrNoServer):
		return "no server up"
	case errors.Is(err, upstream.ErrQueueTimeout):
		return "queue timeout"
	case errors.As(err, &cerr), errors.As(err, &uerr):
		return "server certificate not trusted"
	case errors.As(err, &de):
		if statusFor(err) == http.StatusGatewayTimeout {
			return "connect timeout"
		}
		return "connect failed"
	case statusFor(err) == http.StatusGatewayTimeout:
		return "server timeout"
	}
	return "server error"
}

// Error writes a short plain-text error response, or the frontend's
// page for status when it has one (Paged).
func Error(w http.ResponseWriter, status int) {
	if pw := pageFor(w); pw != nil {
		if page, ok := pw.pages[status]; ok {
			writeOwn(w, status, "text/html; charset=utf-8", page, pw.head)
			return
		}
	}
	writeOwn(w, status, "text/plain; charset=utf-8", []byte(http.StatusText(status)+"\n"), false)
}

// writeOwn answers status with body of type ctype: the headers set on w
// so far (Retry-After, Connection: close) stay; with head, the headers
// alone.
func writeOwn(w http.ResponseWriter, status int, ctype string, body []byte, head bool) {
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if !head {
		w.Write(body)
	}
}

// serverFault reports whether a failed attempt is evidence against the
// server: not the client's fault (its connection or its request body) nor
// the proxy's own. Only those count for passive health.
func serverFault(err error) bool {
	var (
		ce *clientConnError
		cb *clientBodyError
	)
	return !errors.As(err, &ce) && !errors.As(err, &cb) && !ownFault(err)
}

// retryElsewhere reports whether a failure may pass on another server as
// far as whose fault it is goes (retriable has the rest of the rule): not
// the client's fault, and not the proxy short of descriptors or memory,
// which another server would meet alike.
func retryElsewhere(err error) bool {
	var (
		ce *clientConnError
		cb *clientBodyError
	)
	switch {
	case errors.As(err, &ce), errors.As(err, &cb):
		return false
	case limit.OutOfResources(err):
		return errors.Is(err, syscall.EADDRNOTAVAIL)
	}
	return true
}
