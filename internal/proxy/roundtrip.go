package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/upstream"
)

// roundTripper is a Backend seen as the http.RoundTripper under its
// ReverseProxy: it picks a server, waits in the queue when every server
// is at max_conns, sends the request, retries on another server when that
// is safe, and feeds passive health checks.
type roundTripper Backend

// roundTripError is a request that got no response from any server.
type roundTripError struct {
	err      error
	server   string // the last server tried, if any
	attempts int
}

func (e *roundTripError) Error() string { return e.err.Error() }
func (e *roundTripError) Unwrap() error { return e.err }

func (rt *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	b := (*Backend)(rt)
	if err := req.Context().Err(); err != nil {
		// Cancelled before it was sent (a stream reset right after its
		// HEADERS): the server never hears of it.
		return nil, err
	}
	b.up.Request()
	lg := logFrom(req.Context())
	if lg != nil {
		lg.backend = b.up.Name()
	}
	var hash uint64
	if b.hashKey != nil {
		hash = b.hashKey(req)
	}
	body := newReplayBody(req)
	// The servers that failed; nil until one does (a stack array would
	// escape through Pick and cost every request an allocation).
	var tried []*balance.Member
	var lastErr error
	var lastServer string
	for attempt := 1; ; attempt++ {
		m, err := b.acquireLogged(req, hash, tried, lg)
		if err != nil {
			if lastErr != nil && errors.Is(err, upstream.ErrNoServer) {
				err = lastErr // every server was tried: report why the last failed
			}
			body.finish()
			return nil, &roundTripError{err: err, server: lastServer, attempts: attempt - 1}
		}
		if attempt > 1 {
			// Only now is there another server to retry on: spend the
			// budget and say so.
			if !b.up.AllowRetry() {
				b.up.Release(m)
				body.finish()
				return nil, &roundTripError{err: fmt.Errorf("%w (no retry: the backend's retry budget is spent)", lastErr), server: lastServer, attempts: attempt - 1}
			}
			b.log.Info("retrying on another server", "failed", lastServer, "server", m.State.Address, "attempt", attempt, "method", req.Method, "path", req.URL.Path, "error", lastErr)
		}
		if lg != nil {
			lg.server, lg.retries = m.State.Address, attempt-1
		}
		sm, sent := b.up.Server(m).Metrics(), time.Now()
		sm.Request(attempt > 1)
		resp, err := b.send(req, m, body)
		countAttempt(sm, req, resp, err, sent)
		if err == nil {
			body.finish()
			if lg != nil {
				lg.connected = time.Duration(lg.connect.Load())
				lg.headers, lg.gotHeaders = time.Since(lg.start), true
			}
			return resp, nil
		}
		lastErr, lastServer = err, m.State.Address
		tried = append(tried, m)
		if !b.retriable(req, err, body, attempt) {
			body.finish()
			return nil, &roundTripError{err: err, server: lastServer, attempts: attempt}
		}
	}
}

// acquireLogged is acquire that adds the time it took to the request's
// queue wait when the request is logged (lg not nil).
func (b *Backend) acquireLogged(req *http.Request, hash uint64, tried []*balance.Member, lg *requestLog) (*balance.Member, error) {
	if lg == nil {
		return b.acquire(req, hash, tried)
	}
	start := time.Now()
	m, err := b.acquire(req, hash, tried)
	lg.queue += time.Since(start)
	return m, err
}

// acquire returns a server that has counted the request as in flight: the
// sticky one if it can take it, else the balancer's pick, waiting in the
// queue while every usable server is at max_conns.
func (b *Backend) acquire(req *http.Request, hash uint64, tried []*balance.Member) (*balance.Member, error) {
	if name := b.up.Sticky().Cookie; name != "" {
		if c, err := req.Cookie(name); err == nil {
			if m := b.up.AcquireID(c.Value, tried); m != nil {
				return m, nil
			}
		}
	}
	return b.up.Acquire(req.Context(), hash, tried)
}

// send makes one attempt at server m, which has counted the request.
func (b *Backend) send(req *http.Request, m *balance.Member, body *replayBody) (*http.Response, error) {
	out, x := outgoing(req, m.State.Address, body)
	srv := b.up.Server(m)
	t := b.transport
	var private *privateAttempt
	if srv != nil && srv.SendProxy() != 0 {
		var err error
		if t, out, private, err = b.private(out, srv); err != nil {
			x.end()
			b.up.Release(m)
			return nil, err
		}
	}
	resp, err := t.RoundTrip(out)
	if err == nil && req.Context().Err() != nil && resp.StatusCode != http.StatusSwitchingProtocols {
		// The client left while the server answered: keep the
		// connection if the rest of the response comes cheaply.
		drain(resp.Body)
		err = context.Cause(req.Context())
	}
	if err != nil {
		x.end()
		b.up.Release(m)
		if cb := clientFault(err, body); cb != nil {
			// The transport gave up because the client's body failed
			// (errors.go): the client's fault, whatever it reported.
			err = cb
		}
		if req.Context().Err() == nil && serverFault(err) {
			// A request the client abandoned says nothing about the server.
			srv.Observe(false)
		}
		if private != nil {
			private.done()
		}
		return nil, err
	}
	srv.Observe(!(b.up.Count5xx() && resp.StatusCode >= 500))
	var own *privateAttempt
	if private != nil && private.own {
		own = private
	}
	if rwc, ok := resp.Body.(io.ReadWriteCloser); ok && resp.StatusCode == http.StatusSwitchingProtocols {
		if private != nil {
			private.upgraded()
		}
		if tu := tunnelsFrom(req.Context()); tu != nil {
			rwc = tu.track(rwc)
		}
		resp.Body = &releaseReadWriteCloser{rwc, releaser{b: b, m: m, own: own, x: x}}
	} else {
		resp.Body = &releaseBody{ReadCloser: resp.Body, r: releaser{b: b, m: m, own: own, x: x}, client: req.Context(), srv: srv, reqBody: body}
	}
	b.stick(req, resp, m)
	return resp, nil
}

// outgoing returns the request of one attempt at the server at addr, and
// the exchange that ends its context (nil: the client's). Each attempt
// sends its own shallow copy, with its own URL (a failed attempt's
// request may still be read by the transport): one allocation for both.
// HTTP/2 and HTTP/3 requests, and requests with a body, also get a
// context of their own: streams are cancelled cheaply and at will, and a
// request body's own failure must reach the transport before a
// cancellation does, to be told apart (exchange.go).
func outgoing(req *http.Request, addr string, body *replayBody) (*http.Request, *exchange) {
	a := &attempt{req: *req, url: *req.URL}
	a.url.Host = addr
	out := &a.req
	out.URL = &a.url
	var x *exchange
	if req.ProtoMajor >= 2 || body != nil {
		var ctx context.Context
		ctx, x = detach(req.Context())
		out = out.WithContext(ctx)
	}
	if body != nil {
		body.rearm()
		out.Body = body
	}
	return out, x
}

// stick sets the sticky cookie naming server m on resp, unless the
// request already carried it.
func (b *Backend) stick(req *http.Request, resp *http.Response, m *balance.Member) {
	sticky := b.up.Sticky()
	if sticky.Cookie == "" {
		return
	}
	if c, err := req.Cookie(sticky.Cookie); err == nil && c.Value == m.ID {
		return
	}
	ck := &http.Cookie{Name: sticky.Cookie, Value: m.ID, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode}
	if sticky.MaxAge > 0 {
		ck.MaxAge = int(sticky.MaxAge / time.Second)
	}
	resp.Header.Add("Set-Cookie", ck.String())
}

// retriable reports whether a failed attempt may go to another server: the
// request never reached the server (whatever its method, if its body was
// not read), or it is idempotent, has no body and failed before any
// response byte without timing out. Retries are bounded by Retries here
// and by the retry budget once another server is found.
func (b *Backend) retriable(req *http.Request, err error, body *replayBody, attempt int) bool {
	if attempt > b.up.Retries() || req.Context().Err() != nil {
		return false
	}
	var de *dialError
	var nerr net.Error
	switch {
	case !retryElsewhere(err):
		return false
	case errors.As(err, &de):
		if body != nil && body.consumed() {
			return false
		}
	case body == nil && idempotent(req) && !(errors.As(err, &nerr) && nerr.Timeout()):
	default:
		return false
	}
	return true
}

// idempotent reports whether repeating req is safe (RFC 9110 §9.2.2).
func idempotent(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return req.Header.Get("Idempotency-Key") != ""
}

// replayBody lets a request body be offered to a second server when the
// first was never reached. http.Transport closes the body even when it
// fails to connect, so Close is deferred while an attempt is in doubt.
type replayBody struct {
	rc   io.ReadCloser
	read atomic.Bool
	// broken: a read of the client's body failed (client_body faults).
	broken atomic.Bool

	mu             sync.Mutex
	final          bool // no more attempts: Close closes
	closeRequested bool
	closed         bool
}

func newReplayBody(req *http.Request) *replayBody {
	if req.Body == nil || req.Body == http.NoBody {
		return nil
	}
	return &replayBody{rc: req.Body}
}

func (r *replayBody) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if n > 0 {
		r.read.Store(true)
	}
	if err != nil && err != io.EOF {
		r.broken.Store(true)
	}
	return n, err
}

// failed reports whether reading the client's body failed (nil-safe).
func (r *replayBody) failed() bool { return r != nil && r.broken.Load() }

func (r *replayBody) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.final {
		r.closeRequested = true
		return nil
	}
	return r.closeLocked()
}

func (r *replayBody) closeLocked() error {
	if r.closed {
		return nil
	}
	r.closed = true
	return r.rc.Close()
}

// consumed reports whether any byte went to a server.
func (r *replayBody) consumed() bool { return r.read.Load() }

// rearm forgets a Close from a failed attempt.
func (r *replayBody) rearm() {
	r.mu.Lock()
	r.closeRequested = false
	r.mu.Unlock()
}

// finish ends the attempts: a pending Close happens now, later ones at once.
func (r *replayBody) finish() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.final = true
	if r.closeRequested {
		r.closeLocked()
	}
}

// attempt is the request of one attempt and its URL.
type attempt struct {
	req http.Request
	url url.URL
}

// releaser ends a server's in-flight count once, however often the body
// holding it is closed.
type releaser struct {
	b *Backend
	m *balance.Member
	// own, when set, is the attempt's own ClientConn (the request had
	// none), ended with the response.
	own *privateAttempt
	// x is the attempt's context, ended with the response.
	x    *exchange
	done atomic.Bool
}

func (r *releaser) release() {
	if !r.done.Swap(true) {
		r.x.end()
		r.b.up.Release(r.m)
		if r.own != nil {
			r.own.done()
		}
	}
}

// releaseBody ends the server's in-flight count at the end of the
// response body: as soon as it is read to its end, so that a client that
// reads slowly (or never opens its flow-control window) holds no server
// connection for a response that is all in the proxy; else when it is
// closed.
type releaseBody struct {
	io.ReadCloser
	r releaser
	// client is the client request's context: a body closed before its
	// end because the client left is drained first (exchange.go).
	client context.Context
	// srv learns of a body the server cut (passive health), unless the
	// client's request body, reqBody, failed first.
	srv     *upstream.Server
	reqBody *replayBody
	eof     bool
	failed  bool
}

func (b *releaseBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		b.eof = true
		b.r.release()
	case err != nil && !b.failed && b.client.Err() == nil && !b.reqBody.failed():
		// The server reset or closed the connection in the middle of
		// the body (the client is still there and its request body did
		// not fail, so neither ended the exchange): the server's
		// failure.
		b.failed = true
		b.srv.Observe(false)
		if lg := logFrom(b.client); lg != nil {
			lg.serverCut.Store(true)
		}
	}
	return n, err
}

func (b *releaseBody) Close() error {
	if !b.eof && b.client.Err() != nil {
		drain(b.ReadCloser)
	}
	err := b.ReadCloser.Close()
	b.r.release()
	return err
}

// releaseReadWriteCloser is releaseBody for an upgraded connection
// (WebSocket), which ReverseProxy needs to be writable.
type releaseReadWriteCloser struct {
	io.ReadWriteCloser
	r releaser
}

func (b *releaseReadWriteCloser) Close() error {
	err := b.ReadWriteCloser.Close()
	b.r.release()
	return err
}
