package compress

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// Handler returns next whose responses are compressed with the first of
// algos (the route's order of preference) that the client accepts, when
// all of these hold: the request is not HEAD; the response is not 1xx,
// 204, 206 or 304, has no Content-Encoding and no Cache-Control
// no-transform; its Content-Type is compressible; its Content-Length is
// absent or at least MinSize.
//
// It streams: the decision is taken when the header is written, from
// Content-Length; without one, at most MinSize bytes are held to decide,
// and a Flush of next decides at once and flushes the encoder, so that a
// streamed response leaves chunk by chunk. A compressed response loses
// Content-Length and has its strong ETag made weak (W/); every response
// of a compressible type gets Vary: Accept-Encoding, compressed or not.
//
// The ResponseWriter next sees keeps Flush, Hijack and
// http.ResponseController (Unwrap). With no algos it returns next.
func Handler(next http.Handler, algos []Algorithm) http.Handler {
	if len(algos) == 0 {
		return next
	}
	return &handler{next: next, algos: algos}
}

type handler struct {
	next  http.Handler
	algos []Algorithm
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cw := &writer{ResponseWriter: w}
	if r.Method != http.MethodHead {
		cw.algo = Negotiate(r.Header["Accept-Encoding"], h.algos)
	}
	h.next.ServeHTTP(cw, r)
	// Not deferred: when next panics (an aborted response), the body must
	// stay truncated, not get a coding's valid end.
	cw.finish()
}

// state is where a writer is in its response.
type state uint8

const (
	undecided  state = iota // no header written yet
	holding                 // compressible, length unknown: holding up to MinSize
	passing                 // passing the body through
	compressed              // compressing into enc
)

// writer is the ResponseWriter of one response of a Handler.
type writer struct {
	http.ResponseWriter
	algo   Algorithm // the negotiated algorithm; None: never compress
	state  state
	status int // while holding: the status written by next
	held   []byte
	enc    encoder
}

// Unwrap gives http.ResponseController the server's ResponseWriter.
func (w *writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// WriteHeader decides whether to compress the response.
func (w *writer) WriteHeader(status int) {
	if w.state != undecided {
		if w.state == holding || status < 200 {
			return // a second status: dropped as net/http would
		}
		w.ResponseWriter.WriteHeader(status)
		return
	}
	if status < 200 && status != http.StatusSwitchingProtocols {
		w.ResponseWriter.WriteHeader(status) // 1xx informational: headers pass
		return
	}
	h := w.Header()
	if !w.eligible(status, h) {
		w.state = passing
		w.ResponseWriter.WriteHeader(status)
		return
	}
	if cl := h.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err != nil || n < MinSize {
			w.state = passing
			w.ResponseWriter.WriteHeader(status)
			return
		}
		w.status = status
		w.start()
		return
	}
	w.status = status
	w.state = holding
}

// eligible reports whether a response of status and h may be compressed,
// and adds Vary: Accept-Encoding to a compressible one.
func (w *writer) eligible(status int, h http.Header) bool {
	switch status {
	case http.StatusSwitchingProtocols, http.StatusNoContent, http.StatusPartialContent:
		return false
	case http.StatusNotModified:
		addVary(h) // as the 200 it stands for
		return false
	}
	if h.Get("Content-Encoding") != "" || !compressible(h.Get("Content-Type")) {
		return false
	}
	addVary(h)
	return w.algo != None && !noTransform(h)
}

// start sends the header of a compressed response and sets up the
// encoder, which is then given what was held.
func (w *writer) start() {
	h := w.Header()
	h.Del("Content-Length")
	h.Set("Content-Encoding", w.algo.String())
	if et := h.Get("Etag"); et != "" && !strings.HasPrefix(et, "W/") {
		h.Set("Etag", "W/"+et)
	}
	w.ResponseWriter.WriteHeader(w.status)
	w.state = compressed
	w.enc = getEncoder(w.algo, w.ResponseWriter)
	if len(w.held) > 0 {
		w.enc.Write(w.held) // an error shows again on the next Write
		w.held = nil
	}
}

// Write writes body bytes: held, passed or compressed.
func (w *writer) Write(p []byte) (int, error) {
	if w.state == undecided {
		w.WriteHeader(http.StatusOK)
	}
	switch w.state {
	case holding:
		if len(w.held)+len(p) < MinSize {
			if w.held == nil {
				w.held = make([]byte, 0, MinSize)
			}
			w.held = append(w.held, p...)
			return len(p), nil
		}
		w.start()
	case passing:
		return w.ResponseWriter.Write(p)
	}
	return w.enc.Write(p)
}

// Flush sends what next wrote so far: a held body starts compressing,
// and the encoder flushes a block that decodes on its own.
func (w *writer) Flush() {
	if w.state == undecided {
		w.WriteHeader(http.StatusOK)
	}
	switch w.state {
	case holding:
		w.start()
		w.enc.Flush()
	case compressed:
		w.enc.Flush()
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack takes the connection for an upgrade (never compressed).
func (w *writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.state = passing
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// finish ends the response after next returned: a short held body goes
// out as it is, with its length; an encoder writes its end and goes back
// to its pool.
func (w *writer) finish() {
	switch w.state {
	case holding:
		w.Header().Set("Content-Length", strconv.Itoa(len(w.held)))
		w.ResponseWriter.WriteHeader(w.status)
		w.ResponseWriter.Write(w.held)
	case compressed:
		if w.enc.Close() == nil {
			putEncoder(w.algo, w.enc)
		}
	}
	w.state, w.enc, w.held = passing, nil, nil
}

// addVary adds Accept-Encoding to h's Vary unless it is there.
func addVary(h http.Header) {
	for _, v := range h.Values("Vary") {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f == "*" || strings.EqualFold(f, "Accept-Encoding") {
				return
			}
		}
	}
	h.Add("Vary", "Accept-Encoding")
}

// noTransform reports whether Cache-Control forbids a proxy to change
// the body (RFC 9111 §5.2.2.6).
func noTransform(h http.Header) bool {
	for _, v := range h.Values("Cache-Control") {
		for _, d := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(d), "no-transform") {
				return true
			}
		}
	}
	return false
}
