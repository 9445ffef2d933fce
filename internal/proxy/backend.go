package proxy

import (
	"errors"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/portcullis/portcullis/internal/balance"
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
	Transport *http.Transport
	// noClientConn is set once a request to a send_proxy server came
	// without a ClientConn (and was warned about).
	noClientConn atomic.Bool
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
	members := make([]*balance.Member, len(servers))
	b := &Backend{
		Name:      name,
		servers:   make(map[*balance.Member]*Server, len(servers)),
		byID:      make(map[string]*balance.Member, len(servers)),
		opt:       opt,
		budget:    newRetryBudget(opt.RetryBudget),
		queue:     newQueue(),
		log:       log,
		Transport: newTransport(opt.Upstream, nil),
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
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return b, nil
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
	probeBody(r)
	b.proxy.ServeHTTP(w, r)
}

// fail is the one error path of a proxied request: the status for the
// failure (502, 503 or 504), one log line saying why, and a short body.
// When the client went away first there is nobody to answer.
func (b *Backend) fail(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		b.log.Info("client closed the request", "method", r.Method, "path", r.URL.Path, "error", err)
		return
	}
	status := statusFor(err)
	attrs := []any{"status", status, "reason", reason(err), "method", r.Method, "host", r.Host, "path", r.URL.Path, "client", r.RemoteAddr}
	var re *roundTripError
	if errors.As(err, &re) {
		attrs = append(attrs, "server", re.server, "attempts", re.attempts)
	}
	attrs = append(attrs, "error", err)
	b.log.Warn("request failed", attrs...)
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(1))
	}
	Error(w, status)
}
