package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"time"
)

// Backend is a pool of servers balanced round robin over one pooled
// keep-alive HTTP/1.1 transport.
type Backend struct {
	Name    string
	servers []*server
	next    atomic.Uint64
	log     *slog.Logger
	// Transport is the shared connection pool; the runtime closes its idle
	// connections when the backend is retired.
	Transport *http.Transport
}

type server struct {
	address string
	proxy   *httputil.ReverseProxy
}

// BackendOptions tunes a backend. Zero values take the defaults.
type BackendOptions struct {
	// ConnectTimeout bounds dialing a server. Default 5s.
	ConnectTimeout time.Duration
	// MaxIdlePerServer is how many idle keep-alive connections are kept per
	// server. Default 256.
	MaxIdlePerServer int
	// IdleTimeout closes pooled connections idle this long. Default 90s.
	IdleTimeout time.Duration
}

// NewBackend builds a backend for server addresses ("host:port").
func NewBackend(name string, addresses []string, opt BackendOptions, log *slog.Logger) *Backend {
	if opt.ConnectTimeout <= 0 {
		opt.ConnectTimeout = 5 * time.Second
	}
	if opt.MaxIdlePerServer <= 0 {
		opt.MaxIdlePerServer = 256
	}
	if opt.IdleTimeout <= 0 {
		opt.IdleTimeout = 90 * time.Second
	}
	b := &Backend{
		Name: name,
		log:  log,
		Transport: &http.Transport{
			Proxy:               nil, // never take HTTP_PROXY from the environment
			DialContext:         (&net.Dialer{Timeout: opt.ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        0,
			MaxIdleConnsPerHost: opt.MaxIdlePerServer,
			IdleConnTimeout:     opt.IdleTimeout,
			DisableCompression:  true, // pass Accept-Encoding through untouched
			ForceAttemptHTTP2:   false,
		},
	}
	for _, addr := range addresses {
		b.servers = append(b.servers, b.newServer(addr))
	}
	return b
}

func (b *Backend) newServer(addr string) *server {
	s := &server{address: addr}
	target := &url.URL{Scheme: "http", Host: addr}
	s.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = target.Scheme
			pr.Out.URL.Host = target.Host
			pr.Out.Host = pr.In.Host // the server sees the client's Host
			sanitize(pr.Out.Header, pr.In, scheme(pr.In))
		},
		Transport: b.Transport,
		ModifyResponse: func(resp *http.Response) error {
			addVia(resp.Header, resp.ProtoMajor, resp.ProtoMinor)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			b.fail(w, r, s, err)
		},
		ErrorLog: slog.NewLogLogger(b.log.Handler(), slog.LevelWarn),
	}
	return s
}

func scheme(r *http.Request) string {
	if r.TLS != nil || r.ProtoMajor == 3 {
		return "https"
	}
	return "http"
}

// ServeHTTP proxies r to the next server.
func (b *Backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if len(b.servers) == 0 {
		Error(w, http.StatusServiceUnavailable)
		return
	}
	s := b.servers[(b.next.Add(1)-1)%uint64(len(b.servers))]
	s.proxy.ServeHTTP(w, r)
}

// fail is the one error path of a proxied request: it maps the failure to
// 502 or 504, logs it once and writes a short body. When the client went
// away there is nobody to answer.
func (b *Backend) fail(w http.ResponseWriter, r *http.Request, s *server, err error) {
	status := http.StatusBadGateway
	var nerr net.Error
	switch {
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		b.log.Info("client closed the request", "server", s.address, "method", r.Method, "path", r.URL.Path)
		return
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &nerr) && nerr.Timeout():
		status = http.StatusGatewayTimeout
	}
	b.log.Warn("proxy error", "status", status, "server", s.address, "method", r.Method, "path", r.URL.Path, "error", err)
	Error(w, status)
}

// Error writes a short plain-text error response.
func Error(w http.ResponseWriter, status int) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write([]byte(http.StatusText(status) + "\n"))
}
