package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/portcullis/portcullis/internal/metrics"
)

// Measured returns h counting each request in m: by protocol and status
// class, with its duration (docs/metrics.md); h itself when m is nil. Its
// writers are pooled: a request costs no allocation.
func Measured(h http.Handler, m *metrics.Frontend) http.Handler {
	if m == nil {
		return h
	}
	return &measuredHandler{next: h, m: m}
}

type measuredHandler struct {
	next http.Handler
	m    *metrics.Frontend
}

var statusWriters = sync.Pool{New: func() any { return new(statusWriter) }}

func (h *measuredHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := statusWriters.Get().(*statusWriter)
	sw.ResponseWriter, sw.status = w, 0
	defer func() {
		status := sw.status
		*sw = statusWriter{}
		statusWriters.Put(sw)
		h.m.Request(metrics.ProtocolOf(r.ProtoMajor), status, time.Since(start))
	}()
	h.next.ServeHTTP(sw, r)
}

// statusWriter notes the status of a response (the first final one
// written, 200 at the first body byte without one, 101 when the
// connection is hijacked for an upgrade) and counts its body bytes, for
// the metrics and the access log.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// Unwrap gives http.ResponseController (Flush, deadlines) the server's
// ResponseWriter.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush flushes the server's ResponseWriter.
func (w *statusWriter) Flush() { http.NewResponseController(w.ResponseWriter).Flush() }

// Hijack takes the connection for an upgrade (ReverseProxy writes the
// server's 101 to it itself).
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return c, brw, err
}

// failureCause is the cause under which a failed attempt at a server is
// counted (errors.go's attribution).
func failureCause(err error) metrics.Cause {
	var de *dialError
	switch {
	case errors.As(err, &de):
		if isTimeout(err) {
			return metrics.Timeout
		}
		return metrics.Connect
	case isTimeout(err):
		return metrics.Timeout
	case isReset(err):
		return metrics.Reset
	}
	return metrics.Other
}

// isReset reports a connection the server closed or reset before its
// response headers.
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// countAttempt counts the outcome of one attempt at server sm, sent at
// sent (a failure only when it is the server's: serverFault).
func countAttempt(sm *metrics.Server, req *http.Request, resp *http.Response, err error, sent time.Time) {
	switch {
	case sm == nil:
	case err == nil:
		sm.Response(time.Since(sent))
		if resp.StatusCode >= 500 {
			sm.Failure(metrics.Status5xx)
		}
	case req.Context().Err() == nil && serverFault(err):
		sm.Failure(failureCause(err))
	}
}
