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
	"time"

	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/limit"
)

// Server is one server of a backend as the proxy sees it: the balancer's
// member and the passive health observer that learns from each request.
type Server struct {
	Member *balance.Member
	// Observe, when set, is told the outcome of every request at the
	// server (passive health checks). It must be cheap.
	Observe func(ok bool)
	// SendProxy is the PROXY protocol version toward this server: 0 none,
	// 1 (text) or 2 (binary). Every connection to the server then starts
	// with a header naming the client, so over HTTP each one is private to
	// one client connection (see ClientConn).
	SendProxy int
}

// BackendOptions configure a backend. Zero values take the defaults.
type BackendOptions struct {
	Upstream Upstream
	// Algorithm is the balance algorithm (see balance.NewPool).
	Algorithm string
	// HashKey is source, uri, header:NAME or cookie:NAME (with hash).
	HashKey string
	// StickyCookie, when set, pins clients to a server with this cookie.
	StickyCookie string
	// StickyMaxAge is the sticky cookie's lifetime; 0: a session cookie.
	StickyMaxAge time.Duration
	// Retries is how many more servers a request may try. Default 0.
	Retries int
	// RetryBudget is the percentage of requests that may be retries.
	// Default 20.
	RetryBudget int
	// QueueTimeout is how long a request waits for a server below
	// max_conns. Default 5s.
	QueueTimeout time.Duration
	// Count5xx makes 5xx responses count as failures for passive health.
	Count5xx bool
	// Events, when set, summarizes the backend's frequent events (requests
	// refused for the client's fault, failures that are the proxy's own)
	// into one log line per second, with the backend's name. Nil: a
	// summarizer of its own, writing to the backend's log.
	Events *limit.Events
}

// Backend is a compiled, immutable backend: its servers, balancer,
// connection pool and retry policy. The live state it uses (in-flight
// counts, health) belongs to the servers' balance.State and outlives it.
type Backend struct {
	Name      string
	pool      *balance.Pool
	servers   map[*balance.Member]*Server
	byID      map[string]*balance.Member
	hashKey   func(*http.Request) uint64
	opt       BackendOptions
	budget    *retryBudget
	queue     *queue
	proxy     *httputil.ReverseProxy
	log       *slog.Logger
	events    *limit.Events
	Transport *http.Transport
	// noClientConn is set once a request to a send_proxy server came
	// without a ClientConn (and was warned about).
	noClientConn atomic.Bool
	// eventAttrs name the backend in events when they are shared.
	eventAttrs []any
}

// NewBackend builds a backend.
func NewBackend(name string, servers []*Server, opt BackendOptions, log *slog.Logger) (*Backend, error) {
	opt.Upstream.setDefaults()
	if opt.RetryBudget == 0 {
		opt.RetryBudget = 20
	}
	if opt.QueueTimeout <= 0 {
		opt.QueueTimeout = 5 * time.Second
	}
	opt.Upstream.MaxConnsPerServer = maxConns(servers)
	members := make([]*balance.Member, len(servers))
	b := &Backend{
		Name:      name,
		servers:   make(map[*balance.Member]*Server, len(servers)),
		byID:      make(map[string]*balance.Member, len(servers)),
		opt:       opt,
		budget:    newRetryBudget(opt.RetryBudget),
		queue:     newQueue(),
		log:       log,
		events:    opt.Events,
		Transport: newTransport(opt.Upstream, nil),
	}
	if b.events == nil {
		b.events = limit.NewEvents(log, 0)
	} else {
		b.eventAttrs = []any{"backend", name}
	}
	for i, s := range servers {
		members[i] = s.Member
		b.servers[s.Member] = s
		b.byID[s.Member.ID] = s.Member
	}
	pool, err := balance.NewPool(opt.Algorithm, members, balance.Options{})
	if err != nil {
		return nil, err
	}
	b.pool = pool
	b.hashKey = hashKeyFunc(opt.HashKey)
	b.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			if opt.Upstream.TLS != nil {
				pr.Out.URL.Scheme = "https"
			}
			pr.Out.URL.Host = name // replaced by the server's address in RoundTrip
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
	return b, nil
}

// maxConns is the largest max_conns of servers, 0 when one has none.
func maxConns(servers []*Server) int {
	n := 0
	for _, s := range servers {
		if s.Member.MaxConns == 0 {
			return 0
		}
		n = max(n, s.Member.MaxConns)
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

// Servers lists the backend's servers.
func (b *Backend) Servers() []*Server {
	out := make([]*Server, 0, len(b.servers))
	for _, m := range b.pool.Members() {
		out = append(out, b.servers[m])
	}
	return out
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
