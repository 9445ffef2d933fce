package proxy

import (
	"bufio"
	"net"
	"net/http"
)

// ErrorPages are a frontend's pages for the errors portcullis answers
// itself (Error), by status: each is sent as text/html in place of the
// short text body. A backend's own responses never get one. Default
// (nil): every error has its text body.
type ErrorPages map[int][]byte

// Paged returns next whose own errors (Error: 404 of no route, 502, 503,
// 504, the 4xx of the request limits and guards) carry the pages of
// their status. With no page it returns next, which then costs nothing
// more.
//
// The ResponseWriter next sees keeps Flush, Hijack and
// http.ResponseController (Unwrap) of the server's.
func Paged(next http.Handler, pages ErrorPages) http.Handler {
	if len(pages) == 0 {
		return next
	}
	return &paged{next: next, pages: pages}
}

type paged struct {
	next  http.Handler
	pages ErrorPages
}

func (h *paged) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.next.ServeHTTP(&pagedWriter{ResponseWriter: w, pages: h.pages, head: r.Method == http.MethodHead}, r)
}

// pagedWriter carries a request's pages down to Error, which finds it
// on the Unwrap chain of the ResponseWriter it is given.
type pagedWriter struct {
	http.ResponseWriter
	pages ErrorPages
	head  bool // a HEAD request: the page's headers, no body
}

// Unwrap gives http.ResponseController (Flush, deadlines) the server's
// ResponseWriter.
func (w *pagedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush flushes the server's ResponseWriter.
func (w *pagedWriter) Flush() { http.NewResponseController(w.ResponseWriter).Flush() }

// Hijack takes the connection for an upgrade.
func (w *pagedWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// pageFor returns the pages of the request that w answers, found on its
// Unwrap chain, or nil when its frontend has none.
func pageFor(w http.ResponseWriter) *pagedWriter {
	for {
		switch x := w.(type) {
		case *pagedWriter:
			return x
		case interface{ Unwrap() http.ResponseWriter }:
			w = x.Unwrap()
		default:
			return nil
		}
	}
}
