package proxy

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/portcullis/portcullis/internal/hostname"
)

var testPages = ErrorPages{
	http.StatusNotFound:           []byte("<h1>no such page</h1>\n"),
	http.StatusBadGateway:         []byte("<h1>the service is down</h1>\n"),
	http.StatusServiceUnavailable: []byte("<h1>back soon</h1>\n"),
}

// checkPage checks that resp is status with page as its body (none for
// HEAD), sent as HTML with its length.
func checkPage(t *testing.T, resp *http.Response, status int, page []byte) {
	t.Helper()
	body := readBody(t, resp)
	if resp.StatusCode != status {
		t.Errorf("status = %d, want %d", resp.StatusCode, status)
	}
	want := string(page)
	if resp.Request.Method == http.MethodHead {
		want = ""
	}
	if body != want {
		t.Errorf("body = %q, want %q", body, want)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q, want text/html; charset=utf-8", ct)
	}
	if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(page)) {
		t.Errorf("Content-Length = %q, want %d", cl, len(page))
	}
	if v := resp.Header.Get("X-Content-Type-Options"); v != "nosniff" {
		t.Errorf("X-Content-Type-Options = %q, want nosniff", v)
	}
}

// A request no route takes gets the 404 page, through the request
// limits' writer; HEAD gets its headers alone.
func TestErrorPagesNoRoute(t *testing.T) {
	h := &Handler{Router: &Router{Routes: []Route{{Host: hostname.MustParsePattern("example.test"), Backend: testBackend("app")}}}}
	url := serve(t, Paged(Limited(h, RequestLimits{MaxHeaderBytes: 1 << 16}, nil, "web"), testPages))
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		t.Run(method, func(t *testing.T) {
			req, _ := http.NewRequest(method, url+"/anything", nil)
			req.Host = "other.test"
			checkPage(t, do(t, req), http.StatusNotFound, testPages[http.StatusNotFound])
		})
	}
}

// A server nothing listens on: the proxy's own 502 gets the page.
func TestErrorPagesBackendDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := l.Addr().String()
	l.Close()
	b := newTestBackend("app", []string{down}, testOptions{}, slog.New(slog.DiscardHandler))
	t.Cleanup(b.CloseIdleConnections)
	url := serve(t, Paged(&Handler{Router: &Router{Routes: []Route{{Backend: b}}}}, testPages))
	req, _ := http.NewRequest(http.MethodGet, url+"/", nil)
	checkPage(t, do(t, req), http.StatusBadGateway, testPages[http.StatusBadGateway])
}

// The headers set before the error stay, the status is kept.
func TestErrorPagesKeepHeaders(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "1")
		Error(w, http.StatusServiceUnavailable)
	})
	url := serve(t, Paged(Limited(h, RequestLimits{MaxHeaderBytes: 1 << 16}, nil, "web"), testPages))
	req, _ := http.NewRequest(http.MethodGet, url+"/", nil)
	resp := do(t, req)
	checkPage(t, resp, http.StatusServiceUnavailable, testPages[http.StatusServiceUnavailable])
	if v := resp.Header.Get("Retry-After"); v != "1" {
		t.Errorf("Retry-After = %q, want 1", v)
	}
}

// A status without a page keeps the text body; a backend's own error
// passes through untouched.
func TestErrorPagesOthersUntouched(t *testing.T) {
	url := serve(t, Paged(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		Error(w, http.StatusRequestEntityTooLarge)
	}), testPages))
	req, _ := http.NewRequest(http.MethodGet, url+"/", nil)
	resp := do(t, req)
	if body := readBody(t, resp); resp.StatusCode != http.StatusRequestEntityTooLarge || body != "Request Entity Too Large\n" {
		t.Errorf("unlisted status: %d %q, want 413 with the text body", resp.StatusCode, body)
	}

	own := startUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"busy":true}`))
	})
	b := newTestBackend("app", []string{own.addr}, testOptions{}, slog.New(slog.DiscardHandler))
	t.Cleanup(b.CloseIdleConnections)
	url = serve(t, Paged(&Handler{Router: &Router{Routes: []Route{{Backend: b}}}}, testPages))
	req, _ = http.NewRequest(http.MethodGet, url+"/", nil)
	resp = do(t, req)
	if body := readBody(t, resp); resp.StatusCode != http.StatusServiceUnavailable || body != `{"busy":true}` || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("backend's own 503: %d %q (%s), want it untouched", resp.StatusCode, body, resp.Header.Get("Content-Type"))
	}
}

// Without pages, Paged adds nothing to the request path.
func TestPagedWithoutPages(t *testing.T) {
	h := &Handler{}
	if got := Paged(h, nil); got != h {
		t.Errorf("Paged(h, nil) = %T, want h itself", got)
	}
}

// HEAD gets the page's headers and length, and no byte of it is written.
func TestErrorPagesHeadWritesNoBody(t *testing.T) {
	h := Paged(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		Error(w, http.StatusBadGateway)
	}), testPages)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, "/", nil))
	page := testPages[http.StatusBadGateway]
	if rec.Code != http.StatusBadGateway || rec.Body.Len() != 0 || rec.Header().Get("Content-Length") != strconv.Itoa(len(page)) {
		t.Errorf("HEAD: %d, %d body bytes, Content-Length %q; want 502, none, %d", rec.Code, rec.Body.Len(), rec.Header().Get("Content-Length"), len(page))
	}
}
