package proxy

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/portcullis/portcullis/internal/accesslog"
	"github.com/portcullis/portcullis/internal/upstream"
)

// LogOptions configure the access log of a frontend's HTTP requests.
type LogOptions struct {
	// Log receives one line per request. Nil: Logged logs nothing.
	Log *accesslog.Logger
	// Frontend is the frontend's name, written in every line.
	Frontend string
	// TrustRequestID keeps the X-Request-ID a client sent over TCP (its
	// peer is a trusted proxy: the bind accepts PROXY headers from
	// trusted_proxies only; HTTP/3 requests are never trusted). False:
	// every request gets a new id, which replaces the one the client
	// sent.
	TrustRequestID bool
}

// Logged returns h writing one access-log line per request to opt.Log,
// or h itself when opt.Log is nil: a frontend without an access log pays
// nothing. It is the outermost handler of a frontend, so that requests
// refused by the limits (Limited) are logged too.
func Logged(h http.Handler, opt LogOptions) http.Handler {
	if opt.Log == nil {
		return h
	}
	return &loggedHandler{next: h, opt: opt}
}

type loggedHandler struct {
	next http.Handler
	opt  LogOptions
}

// requestLog is what one request's line is made of, filled along the
// request path (the round trip finds it in the request's context): one
// allocation. It is not pooled: a dial may finish after its request.
type requestLog struct {
	e     accesslog.Entry
	start time.Time
	w     statusWriter
	body  countingBody
	// Set by the round trip (its goroutine, before the response body).
	// connected is connect as it was at the response headers: a dial
	// that ends later served another request.
	queue, headers, connected time.Duration
	gotHeaders                bool
	server                    string
	backend                   string
	retries                   int
	// err is the failure the error path answered (Backend.fail).
	err error
	// refused is the state of a request a policy refused (RateLimited).
	refused accesslog.State
	// connect is set by the dial (the transport's goroutine), in ns.
	connect atomic.Int64
	// serverCut: the server cut the response body.
	serverCut atomic.Bool
	// id holds the value of the X-Request-ID header given to the request.
	id [1]string
}

type logKey struct{}

// logFrom returns the request's log, nil when the frontend has none.
func logFrom(ctx context.Context) *requestLog {
	l, _ := ctx.Value(logKey{}).(*requestLog)
	return l
}

func (h *loggedHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l := &requestLog{start: time.Now()}
	l.w.ResponseWriter = w
	h.begin(l, r)
	if r.Body != nil && r.Body != http.NoBody {
		l.body.rc = r.Body
		r.Body = &l.body
	}
	r = r.WithContext(context.WithValue(r.Context(), logKey{}, l))
	defer func() {
		v := recover()
		h.end(l, r, v)
		if v != nil {
			panic(v)
		}
	}()
	h.next.ServeHTTP(&l.w, r)
}

// begin fills what the request says of itself, and gives it its id.
func (h *loggedHandler) begin(l *requestLog, r *http.Request) {
	e := &l.e
	e.Time = l.start
	e.Client = r.RemoteAddr
	e.Frontend = h.opt.Frontend
	e.Protocol = protocol(r)
	if r.TLS != nil {
		e.TLSVersion = tlsVersion(r.TLS.Version)
		e.SNI = r.TLS.ServerName
	}
	e.Method, e.Host, e.Path, e.Query = r.Method, r.Host, r.URL.Path, r.URL.RawQuery
	e.Referer, e.UserAgent = r.Header.Get("Referer"), r.Header.Get("User-Agent")
	id := ""
	if h.opt.TrustRequestID && r.ProtoMajor < 3 {
		// HTTP/3 reads no PROXY header: its clients come straight.
		id = r.Header.Get("X-Request-ID")
	}
	if id == "" {
		id = newRequestID()
		// The header's slice lives in l: one allocation less than Set.
		l.id[0] = id
		r.Header["X-Request-Id"] = l.id[:]
	}
	e.RequestID = id
}

// end completes the line (v is what the handler panicked with) and
// writes it.
func (h *loggedHandler) end(l *requestLog, r *http.Request, v any) {
	e := &l.e
	e.Total = time.Since(l.start)
	e.Status = l.w.status
	if e.Status == 0 && l.w.bytes > 0 { // a 101 is noted at the hijack
		e.Status = http.StatusOK
	}
	e.BytesIn, e.BytesOut = l.body.n.Load(), l.w.bytes
	e.Backend, e.Server, e.Retries = l.backend, l.server, l.retries
	e.Queue, e.Headers = l.queue, l.headers
	e.Connect = l.connected
	if !l.gotHeaders {
		e.Connect = time.Duration(l.connect.Load())
	}
	e.State = l.state(v, r.Context().Err() != nil)
	h.opt.Log.Log(e)
}

// state is the request's termination state (accesslog.State): from the
// failure the error path answered, else from how the response ended (v:
// what the handler panicked with; gone: the client's context ended).
func (l *requestLog) state(v any, gone bool) accesslog.State {
	if l.refused != "" {
		return l.refused
	}
	if l.err != nil {
		return stateFor(l.err, gone)
	}
	switch {
	case l.serverCut.Load():
		return accesslog.ServerData
	case v != nil || gone:
		// Cut short, and not by the server (serverCut): the client went
		// away, or writing to it failed.
		if l.w.status == 0 {
			return accesslog.ClientHeaders
		}
		return accesslog.ClientData
	}
	switch l.w.status {
	case http.StatusBadRequest, http.StatusRequestTimeout, http.StatusRequestEntityTooLarge, http.StatusRequestURITooLong,
		http.StatusTooManyRequests, http.StatusRequestHeaderFieldsTooLarge, http.StatusNotImplemented:
		if l.backend == "" {
			return accesslog.Refused // by a limit or a policy, before any server
		}
	}
	return accesslog.Normal
}

// stateFor maps a failure answered by Backend.fail to a termination
// state, with errors.go's attribution: the client's, the proxy's own,
// the server's by phase.
func stateFor(err error, gone bool) accesslog.State {
	var (
		cb *clientBodyError
		de *dialError
		ce *clientConnError
	)
	switch {
	case errors.As(err, &cb):
		if cb.kind == bodyAborted || gone {
			return accesslog.ClientHeaders
		}
		return accesslog.Refused
	case gone:
		return accesslog.ClientHeaders
	case errors.Is(err, upstream.ErrQueueTimeout):
		return accesslog.QueueTimeout
	case errors.Is(err, upstream.ErrNoServer):
		return accesslog.NoServer
	case ownFault(err), errors.As(err, &ce):
		return accesslog.Resource
	case errors.As(err, &de):
		return accesslog.ConnectFailed
	case isTimeout(err):
		return accesslog.ServerTimeout
	}
	return accesslog.ServerHeaders
}

// protocol names r's protocol as the access log does.
func protocol(r *http.Request) string {
	switch r.ProtoMajor {
	case 2:
		return "HTTP/2"
	case 3:
		return "HTTP/3"
	}
	return r.Proto
}

// tlsVersion names a TLS version as nginx and HAProxy log it.
func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "TLSv1.3"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS10:
		return "TLSv1"
	}
	return tls.VersionName(v)
}

// newRequestID returns 16 random bytes in hex (math/rand/v2's
// generator: per-thread ChaCha8, cheap, not for secrets).
func newRequestID() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	return hex.EncodeToString(b[:])
}

// countingBody counts the bytes of a request body.
type countingBody struct {
	rc io.ReadCloser
	n  atomic.Int64 // read by the transport's goroutine
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (b *countingBody) Close() error { return b.rc.Close() }
