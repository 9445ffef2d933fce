package proxy

import (
	"context"
	"errors"
	stdlog "log"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/upstream"
)

// BackendOptions configure how the HTTP requests of a backend reach its
// servers.
type BackendOptions struct {
	// Upstream is the connection pool's settings.
	Upstream Upstream
	// Events, when set, summarizes the backend's frequent events (requests
	// refused for the client's fault, failures that are the proxy's own)
	// into one log line per second, with the backend's name. Nil: a
	// summarizer of its own, writing to the backend's log.
	Events *limit.Events
}

// Backend proxies HTTP requests to the servers of an upstream.Backend:
// the ReverseProxy, the round trip that acquires, releases and observes
// servers, the pooled connections to them and the sticky cookie. It is
// compiled once and never changed.
type Backend struct {
	up        *upstream.Backend
	hashKey   func(*http.Request) uint64
	upstream  Upstream
	transport *http.Transport
	proxy     *httputil.ReverseProxy
	log       *slog.Logger
	events    *limit.Events
	// noClientConn is set once a request to a send_proxy server came
	// without a ClientConn (and was warned about).
	noClientConn atomic.Bool
	// eventAttrs name the backend in events when they are shared.
	eventAttrs []any
}

// NewBackend returns the HTTP side of up.
func NewBackend(up *upstream.Backend, opt BackendOptions, log *slog.Logger) *Backend {
	opt.Upstream.MaxConnsPerServer = maxConns(up.Servers())
	b := &Backend{
		up:        up,
		hashKey:   hashFunc(up.HashKey()),
		upstream:  opt.Upstream,
		transport: newTransport(opt.Upstream, up.ConnectTimeout(), nil),
		log:       log,
		events:    opt.Events,
	}
	if b.events == nil {
		b.events = limit.NewEvents(log, 0)
	} else {
		b.eventAttrs = []any{"backend", up.Name()}
	}
	b.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			if opt.Upstream.TLS != nil {
				pr.Out.URL.Scheme = "https"
			}
			pr.Out.URL.Host = up.Name() // replaced by the server's address in RoundTrip
			pr.Out.Host = pr.In.Host
			sanitize(pr.Out.Header, pr.In, scheme(pr.In))
		},
		Transport: (*roundTripper)(b),
		ModifyResponse: func(resp *http.Response) error {
			addVia(resp.Header, resp.ProtoMajor, resp.ProtoMinor)
			return nil
		},
		ErrorHandler: b.fail,
		BufferPool:   copyBuffers,
		ErrorLog:     stdlog.New(proxyErrors{b}, "", 0),
	}
	return b
}

// CloseIdleConnections closes the backend's idle pooled connections to
// its servers (those private to a client connection end with it). A
// reload calls it on the backends it replaced.
func (b *Backend) CloseIdleConnections() { b.transport.CloseIdleConnections() }

// maxConns is the largest max_conns of servers, 0 when one has none.
func maxConns(servers []*upstream.Server) int {
	n := 0
	for _, s := range servers {
		if s.Member().MaxConns == 0 {
			return 0
		}
		n = max(n, s.Member().MaxConns)
	}
	return n
}

// proxyErrors summarizes what httputil.ReverseProxy logs (a server that
// cut its response body, a client that went away while it was sent):
// one line per second with a count and the last message, not one line
// per response.
type proxyErrors struct{ b *Backend }

func (e proxyErrors) Write(p []byte) (int, error) {
	e.b.note("response cut", errors.New(strings.TrimSpace(string(p))))
	return len(p), nil
}

func scheme(r *http.Request) string {
	if r.TLS != nil || r.ProtoMajor == 3 {
		return "https"
	}
	return "http"
}

// ServeHTTP proxies r to a server of the backend.
func (b *Backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	wrapBody(r)
	probeBody(r)
	if r.ProtoMajor == 3 && r.Context().Value(http.ServerContextKey) == nil {
		// ReverseProxy aborts a response cut short by panicking with
		// http.ErrAbortHandler only under a server it recognizes by this
		// key; under http3.Server it would end the stream as if the
		// response were complete.
		r = r.WithContext(context.WithValue(r.Context(), http.ServerContextKey, http3Server))
	}
	defer func() {
		if v := recover(); v != nil {
			aborted(w, r, v)
		}
	}()
	if cb := clientFault(nil, r.Body); cb != nil {
		// The probe found the body broken (a malformed first chunk):
		// no server hears of the request.
		b.clientFailed(w, r, cb)
		return
	}
	b.proxy.ServeHTTP(w, r)
}

// http3Server stands for the HTTP/3 server in the context of its requests
// (http.ServerContextKey) when it put nothing there.
var http3Server = new(http.Server)

// errNoAnswer aborts the response of a request whose client is gone
// (panicked with by fail, recovered by aborted).
var errNoAnswer = errors.New("the client is gone: no answer")

// aborted finishes a request whose handling panicked with v, which it
// panics with again. http.ErrAbortHandler from ReverseProxy means the
// response was cut short (the server reset or closed the connection in
// the middle of the body, or the client stopped taking it): what the
// client was sent so far is flushed first, so that it gets the status,
// the headers and the bytes that came before the cut (net/http would
// drop what its buffers hold) and can tell a truncated body from a
// missing one. The cut then closes the HTTP/1.1 connection or resets the
// HTTP/2 stream. An HTTP/3 stream is not reset when the response has a
// Content-Length: a QUIC reset discards the data the client has not read
// yet (RFC 9000 §3.2), whereas a stream ended short of its
// Content-Length is a truncated response the client detects (RFC 9114
// §4.1.2) after it got everything sent before the cut.
func aborted(w http.ResponseWriter, r *http.Request, v any) {
	switch v {
	case errNoAnswer:
		panic(http.ErrAbortHandler)
	case http.ErrAbortHandler:
		http.NewResponseController(w).Flush()
		if r.ProtoMajor == 3 && w.Header().Get("Content-Length") != "" {
			return
		}
	}
	panic(v)
}

// fail is the one error path of a proxied request: the status for the
// failure, one log line saying why, and a short body. The client's faults
// (a bad request body: 400, 408, 413) and the proxy's own (out of
// resources: 503) are summarized in the backend's events instead of
// logged one by one. When the client went away first there is nobody to
// answer.
func (b *Backend) fail(w http.ResponseWriter, r *http.Request, err error) {
	if lg := logFrom(r.Context()); lg != nil {
		lg.err = err
	}
	if cb := clientFault(err, r.Body); cb != nil {
		b.clientFailed(w, r, cb)
		return
	}
	if r.Context().Err() != nil {
		b.log.Info("client closed the request", "method", r.Method, "path", r.URL.Path, "error", err)
		return
	}
	status := statusFor(err)
	if ownFault(err) {
		b.note("request failed: the proxy's own fault", err, "status", status, "reason", reason(err))
	} else {
		attrs := []any{"status", status, "reason", reason(err), "method", r.Method, "host", r.Host, "path", r.URL.Path, "client", r.RemoteAddr}
		var re *roundTripError
		if errors.As(err, &re) {
			attrs = append(attrs, "server", re.server, "attempts", re.attempts)
		}
		attrs = append(attrs, "error", err)
		b.log.Warn("request failed", attrs...)
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(1))
	}
	Error(w, status)
}

// clientFailed answers a request whose body failed on the client's side,
// or aborts it when the client is gone.
func (b *Backend) clientFailed(w http.ResponseWriter, r *http.Request, cb *clientBodyError) {
	if lg := logFrom(r.Context()); lg != nil {
		lg.err = cb
	}
	kind := cb.kind
	if kind == bodyMalformed && r.Context().Err() != nil {
		// An HTTP/2 or HTTP/3 stream the client reset fails its body
		// before its context ends.
		kind = bodyAborted
	}
	if kind == bodyAborted {
		b.note("request failed: the client's fault", cb.err, "reason", kind.String())
		panic(errNoAnswer)
	}
	status := kind.status()
	b.note("request failed: the client's fault", cb.err, "status", status, "reason", kind.String())
	refuse(w, r, status)
}

// note counts an event in the backend's summaries.
func (b *Backend) note(msg string, err error, attrs ...any) {
	b.events.Note(msg, err, append(attrs, b.eventAttrs...)...)
}
