package proxy

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/portcullis/portcullis/internal/limit"
)

// Names of the request limits, as the configuration spells them and as
// they are logged when they fire.
const (
	LimitMaxBodyBytes = "max_body_bytes"
	LimitBodyTimeout  = "body_timeout"
	LimitSendTimeout  = "send_timeout"
	// LimitMaxHeaderBytes is the limit on a request's head.
	LimitMaxHeaderBytes = "max_header_bytes"
)

// RequestLimits bound what one request may take from the proxy. A zero
// field means no limit. The configuration's defaults (frontend
// `limits:`) are given with each field.
type RequestLimits struct {
	// MaxBodyBytes bounds a request body, in bytes: a request whose
	// Content-Length says more gets 413 at once, and a body without a
	// length (chunked HTTP/1.1, HTTP/2 or HTTP/3 without Content-Length)
	// is counted as it passes: 413 when nothing of the response was sent
	// yet, else the response is cut. Default 10485760 (10 MiB).
	MaxBodyBytes int64
	// BodyTimeout bounds each read of a request body: a client that sends
	// nothing of its body for this long gets 408 and the request to the
	// server is cancelled. Time spent waiting for the server to take the
	// body does not count. Default 30s.
	BodyTimeout time.Duration
	// SendTimeout cuts a client that accepts nothing of its response for
	// this long (a full TCP window, an HTTP/2 or HTTP/3 flow-control
	// window never opened): every write of the response must make
	// progress within it (up to a sixteenth more over HTTP/1.1 and
	// HTTP/3, where the write deadline is moved at most that often). A
	// response may pause between writes as long as it likes (long
	// polling, server-sent events). The HTTP/1.1 connection is closed, or
	// the HTTP/2 or HTTP/3 stream reset. Default 30s.
	SendTimeout time.Duration
	// MaxHeaderBytes bounds a request's head, in bytes, counted as the
	// request line (or pseudo-header fields) and each header field with
	// its name, value and 4 bytes of framing: 431 beyond it. The servers
	// stop reading a head at about the same size (net/http's HTTP/1.1
	// reads up to 4096 bytes more before it answers 431 itself; HTTP/2
	// and HTTP/3 announce the limit): this makes the configured value
	// exact. Default 65536.
	MaxHeaderBytes int
}

// Limited returns next with l applied to every request, for the handler
// of one frontend. Each limit that fires is noted in ev (nil: not
// logged), summarized once a second as "limit reached, request refused"
// (max_body_bytes, body_timeout) or "limit reached, client cut"
// (send_timeout), with the limit's name and the frontend. With no limit
// set it returns next.
//
// The ResponseWriter next sees keeps Flush, Hijack (WebSocket upgrades)
// and http.ResponseController (Unwrap) of the server's.
func Limited(next http.Handler, l RequestLimits, ev *limit.Events, frontend string) http.Handler {
	if l.MaxBodyBytes <= 0 && l.BodyTimeout <= 0 && l.SendTimeout <= 0 && l.MaxHeaderBytes <= 0 {
		return next
	}
	return &limited{next: next, limits: l, events: ev, frontend: frontend, sendSlack: l.SendTimeout / 16}
}

type limited struct {
	next      http.Handler
	limits    RequestLimits
	events    *limit.Events
	frontend  string
	sendSlack time.Duration
}

// aLongTimeAgo is a deadline in the past: it ends a pending read or write
// at once (HTTP/2: resets the stream).
var aLongTimeAgo = time.Unix(1, 0)

func (h *limited) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	lr := &limitedRequest{rw: w, h: h}
	if h.limits.SendTimeout > 0 {
		lr.wd = writeDeadliner(w)
		lr.h2 = r.ProtoMajor == 2
		if r.ProtoMajor == 1 {
			// The connection keeps the write deadline of its previous
			// request, which net/http's own writes (100 Continue, an
			// empty response) would otherwise meet.
			lr.arm()
		}
	}
	defer lr.finish()
	if max := h.limits.MaxHeaderBytes; max > 0 && headSize(r) > max {
		h.note(LimitMaxHeaderBytes)
		refuse(lr, r, http.StatusRequestHeaderFieldsTooLarge)
		lr.end()
		return
	}
	if max := h.limits.MaxBodyBytes; max > 0 && r.ContentLength > max {
		h.note(LimitMaxBodyBytes)
		refuse(lr, r, http.StatusRequestEntityTooLarge)
		lr.end()
		return
	}
	if r.Body != nil && r.Body != http.NoBody && (h.limits.MaxBodyBytes > 0 || h.limits.BodyTimeout > 0) {
		lr.body = clientBody{rc: r.Body, ctx: r.Context(), lim: lr}
		r.Body = &lr.body
	}
	h.next.ServeHTTP(lr, r)
	if lr.status == 0 {
		if f := lr.body.fault.Load(); f != nil && (f.kind == bodyTooLarge || f.kind == bodyTimeout) {
			// The handler wrote nothing for a body the limits stopped.
			refuse(lr, r, f.kind.status())
		}
	}
	lr.end()
}

// headSize is the size of r's head as MaxHeaderBytes counts it.
func headSize(r *http.Request) int {
	n := len(r.Method) + len(r.Host) + len(r.RequestURI) + len(r.Proto) + 4
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// refuse answers a request whose body is not (or no more) read: over
// HTTP/1.1 the connection closes, since the rest of the body would have
// to be read first.
func refuse(w http.ResponseWriter, r *http.Request, status int) {
	if r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
	Error(w, status)
}

func (h *limited) note(name string) {
	if h.events != nil {
		h.events.Note("limit reached, request refused", nil, "limit", name, "frontend", h.frontend)
	}
}

func (h *limited) noteCut() {
	if h.events != nil {
		h.events.Note("limit reached, client cut", nil, "limit", LimitSendTimeout, "frontend", h.frontend)
	}
}

// writeDeadliner returns the first ResponseWriter of w's Unwrap chain
// that can set write deadlines, or nil.
func writeDeadliner(w http.ResponseWriter) interface{ SetWriteDeadline(time.Time) error } {
	for {
		switch t := w.(type) {
		case interface{ SetWriteDeadline(time.Time) error }:
			return t
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return nil
		}
	}
}

// limitedRequest is one request under limits: the ResponseWriter that
// holds each write to send_timeout, and the request body (clientBody)
// with its body_timeout timer, in one allocation.
//
// send_timeout is kept in one of two ways. Over HTTP/1.1 and HTTP/3 a
// write deadline bounds only the writes, so it is moved before each write
// (at most every sixteenth of send_timeout, to keep the cost down). Over
// HTTP/2, net/http resets the stream when the write deadline passes, even
// with no write pending, which would cut a response idle between two
// writes (long polling, server-sent events, gRPC streams): there a timer
// runs while a write is pending and, when it fires, moves the deadline
// into the past.
type limitedRequest struct {
	rw http.ResponseWriter
	h  *limited
	// wd sets rw's write deadlines; nil without send_timeout or when rw
	// cannot.
	wd interface{ SetWriteDeadline(time.Time) error }
	h2 bool // HTTP/2: send_timeout times each pending write
	// armed is when the write deadline was last set (HTTP/1.1, HTTP/3).
	armed  time.Time
	status int // the final status written; 0: none yet
	// unflushed is set when body bytes were written since the last
	// flush.
	unflushed bool
	cut       bool // send_timeout fired (noted once)
	hijacked  bool

	body clientBody

	mu sync.Mutex
	// The body_timeout timer runs while a read is pending.
	readTimer *time.Timer
	readStart time.Time
	reading   bool
	fired     bool // body_timeout fired: the read deadline is in the past
	// The send_timeout timer (HTTP/2) runs while a write is pending.
	writeTimer *time.Timer
	writeStart time.Time
	writing    bool
	done       bool // the handler returned: leave the connection alone
}

// arm sets the write deadline send_timeout (and up to a sixteenth more)
// from now, unless it was set less than a sixteenth ago (HTTP/1.1,
// HTTP/3).
func (l *limitedRequest) arm() {
	if l.wd == nil || l.hijacked || l.h2 {
		return
	}
	now := time.Now()
	if !l.armed.IsZero() && now.Sub(l.armed) < l.h.sendSlack {
		return
	}
	l.armed = now
	l.wd.SetWriteDeadline(now.Add(l.h.limits.SendTimeout + l.h.sendSlack))
}

// startWrite begins a write under send_timeout.
func (l *limitedRequest) startWrite() {
	if !l.h2 {
		l.arm()
		return
	}
	if l.wd == nil {
		return
	}
	d := l.h.limits.SendTimeout
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return
	}
	l.writing = true
	l.writeStart = time.Now()
	if l.writeTimer == nil {
		l.writeTimer = time.AfterFunc(d, l.sendTimedOut)
	} else {
		l.writeTimer.Reset(d)
	}
}

// endWrite ends a write begun by startWrite that returned err.
func (l *limitedRequest) endWrite(err error) {
	if l.h2 {
		if l.writeTimer != nil {
			l.mu.Lock()
			l.writing = false
			l.writeTimer.Stop()
			l.mu.Unlock()
		}
		return
	}
	// The deadline failed the write when it has passed.
	if err != nil && !l.cut && l.wd != nil && time.Since(l.armed) >= l.h.limits.SendTimeout {
		l.cut = true
		l.h.noteCut()
	}
}

// sendTimedOut runs when send_timeout passes during a write (HTTP/2): it
// resets the stream.
func (l *limitedRequest) sendTimedOut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.writing || l.done || l.cut || time.Since(l.writeStart) < l.h.limits.SendTimeout {
		return // over, or a stale run: this write began after the timer fired
	}
	l.cut = true
	l.wd.SetWriteDeadline(aLongTimeAgo)
	l.h.noteCut()
}

func (l *limitedRequest) Header() http.Header { return l.rw.Header() }

func (l *limitedRequest) WriteHeader(code int) {
	if code >= 200 && l.status == 0 {
		l.status = code
	}
	l.arm()
	l.rw.WriteHeader(code)
}

func (l *limitedRequest) Write(p []byte) (int, error) {
	if l.status == 0 {
		l.status = http.StatusOK
	}
	l.startWrite()
	n, err := l.rw.Write(p)
	l.endWrite(err)
	l.unflushed = l.unflushed || n > 0
	return n, err
}

// FlushError flushes under send_timeout (http.ResponseController.Flush).
func (l *limitedRequest) FlushError() error {
	if l.status == 0 {
		l.status = http.StatusOK
	}
	l.startWrite()
	err := http.NewResponseController(l.rw).Flush()
	l.endWrite(err)
	l.unflushed = false
	return err
}

// Flush is http.Flusher's.
func (l *limitedRequest) Flush() { l.FlushError() }

// Hijack hands the connection over (an upgrade to WebSocket); net/http
// clears its deadlines, and send_timeout no longer applies.
func (l *limitedRequest) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(l.rw).Hijack()
	if err == nil {
		l.hijacked = true
	}
	return c, brw, err
}

// Unwrap returns the server's ResponseWriter (http.ResponseController).
func (l *limitedRequest) Unwrap() http.ResponseWriter { return l.rw }

// end sends the body bytes the response still holds under send_timeout,
// when the handler is done with it: what net/http writes after the
// handler returned would otherwise wait for a client that reads nothing
// as long as it likes (HTTP/2, HTTP/3), or be bounded without a word in
// the log (HTTP/1.1). What is left after it (headers alone, trailers, the
// end of a chunked HTTP/1.1 body or of an HTTP/2 or HTTP/3 stream) takes
// no flow-control window. A response without body bytes is not flushed:
// its headers must go out with the end of the stream (a gRPC error is a
// response of headers and trailers in one HEADERS frame).
func (l *limitedRequest) end() {
	if l.wd != nil && l.unflushed && !l.hijacked {
		l.FlushError()
	}
}

// startRead starts timing a read of the body against body_timeout; it
// reports whether it did.
func (l *limitedRequest) startRead() bool {
	d := l.h.limits.BodyTimeout
	if d <= 0 {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return false
	}
	l.reading = true
	l.readStart = time.Now()
	if l.readTimer == nil {
		l.readTimer = time.AfterFunc(d, l.bodyTimedOut)
	} else {
		l.readTimer.Reset(d)
	}
	return true
}

// endRead stops timing a read; it reports whether body_timeout fired
// while the read was pending.
func (l *limitedRequest) endRead() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reading = false
	l.readTimer.Stop()
	return l.fired
}

// bodyTimedOut runs when body_timeout passes during a read: it ends the
// pending read by moving the read deadline of the client's connection
// (HTTP/1.1) or stream (HTTP/2, HTTP/3) into the past.
func (l *limitedRequest) bodyTimedOut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.reading || l.done || l.fired || time.Since(l.readStart) < l.h.limits.BodyTimeout {
		return // over, or a stale run: this read began after the timer fired
	}
	l.fired = true
	http.NewResponseController(l.rw).SetReadDeadline(aLongTimeAgo)
}

// bodyFault notes a limit the body reached.
func (l *limitedRequest) bodyFault(kind bodyFault) {
	switch kind {
	case bodyTooLarge:
		l.h.note(LimitMaxBodyBytes)
	case bodyTimeout:
		l.h.note(LimitBodyTimeout)
	}
}

// finish ends the request's limits: no deadline moves after the handler
// returned (the connection may serve the next request by then).
func (l *limitedRequest) finish() {
	l.mu.Lock()
	l.done = true
	if l.readTimer != nil {
		l.readTimer.Stop()
	}
	if l.writeTimer != nil {
		l.writeTimer.Stop()
	}
	l.mu.Unlock()
}
