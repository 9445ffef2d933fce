package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
)

// clientBody is a request body as the client sends it: every read error
// it returns is a *clientBodyError that says what the client did wrong
// (see bodyFault), so that the round trip can tell it from a failure of
// the server (http.Transport returns the body's own read error from
// RoundTrip, or a cancellation it caused: see clientFault). With the
// frontend's limits (Limited) it also counts the body against
// max_body_bytes and times each read against body_timeout.
type clientBody struct {
	rc  io.ReadCloser
	ctx context.Context // the request's: done once the client is gone
	lim *limitedRequest // nil: no limits
	n   int64           // bytes read so far
	// fault is the first read error; later reads return it again. It is
	// read by the round trip while the transport may still be reading.
	fault atomic.Pointer[clientBodyError]
}

// wrapBody makes r's body a clientBody, unless it has none or is one.
func wrapBody(r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody {
		return
	}
	if _, ok := r.Body.(*clientBody); ok {
		return
	}
	r.Body = &clientBody{rc: r.Body, ctx: r.Context()}
}

func (b *clientBody) Read(p []byte) (int, error) {
	if f := b.fault.Load(); f != nil {
		return 0, f
	}
	l := b.lim
	if l == nil {
		n, err := b.rc.Read(p)
		b.n += int64(n)
		if err != nil && err != io.EOF {
			return n, b.fail(classifyBodyError(err, b.ctx), err)
		}
		return n, err
	}
	max := l.h.limits.MaxBodyBytes
	if max > 0 {
		// Read at most one byte past the limit: enough to know.
		if room := max - b.n + 1; int64(len(p)) > room {
			p = p[:room]
		}
	}
	timed := l.startRead()
	n, err := b.rc.Read(p)
	if timed && l.endRead() {
		return 0, b.fail(bodyTimeout, errBodyTimeout)
	}
	b.n += int64(n)
	if max > 0 && b.n > max {
		return n - int(b.n-max), b.fail(bodyTooLarge, errBodyTooLarge)
	}
	if err != nil && err != io.EOF {
		return n, b.fail(classifyBodyError(err, b.ctx), err)
	}
	return n, err
}

func (b *clientBody) Close() error { return b.rc.Close() }

var (
	errBodyTimeout  = errors.New("the client sent nothing for body_timeout")
	errBodyTooLarge = errors.New("the body is longer than max_body_bytes")
)

// fail records the body's first fault and returns it.
func (b *clientBody) fail(kind bodyFault, err error) error {
	f := &clientBodyError{kind: kind, err: err}
	if !b.fault.CompareAndSwap(nil, f) {
		return b.fault.Load()
	}
	if b.lim != nil && (err == errBodyTimeout || err == errBodyTooLarge) {
		b.lim.bodyFault(kind)
	}
	return f
}

// classifyBodyError says whose fault a read error of a request body is.
// Timeouts are the body's (a server's read deadline); a broken or closed
// connection or stream, a body cut short, or a request whose context
// ended is an abort; anything else is a body that does not parse.
func classifyBodyError(err error, ctx context.Context) bodyFault {
	var (
		mb   *http.MaxBytesError
		nerr net.Error
	)
	switch {
	case errors.As(err, &mb):
		return bodyTooLarge
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &nerr) && nerr.Timeout():
		return bodyTimeout
	case ctx != nil && ctx.Err() != nil,
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed), errors.As(err, &nerr):
		return bodyAborted
	}
	return bodyMalformed
}

// clientFault returns the fault of the client's request body behind a
// failed round trip, or nil: the error itself when the transport returned
// the body's error, else the fault the body recorded. The transport may
// report a body's failure as something else: a read timeout of an
// HTTP/1.1 client cancels the request's context, and the transport then
// returns the cancellation.
func clientFault(err error, body io.Reader) *clientBodyError {
	var cb *clientBodyError
	if errors.As(err, &cb) {
		return cb
	}
	for {
		switch b := body.(type) {
		case *clientBody:
			return b.fault.Load()
		case *replayBody:
			if b == nil {
				return nil
			}
			body = b.rc
		case *probedBody:
			body = b.rc
		default:
			return nil
		}
	}
}
