package proxy

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// streamBody is a request body of unknown length, as an HTTP/3 server
// hands it to a handler.
func streamBody(r io.Reader) io.ReadCloser {
	return io.NopCloser(struct{ io.Reader }{r})
}

func TestProbeBody(t *testing.T) {
	slow, slowW := io.Pipe()
	go func() {
		time.Sleep(2 * bodyProbeWait)
		io.WriteString(slowW, "late")
		slowW.Close()
	}()
	for _, tc := range []struct {
		name, method string
		body         io.ReadCloser
		length       int64
		wantNoBody   bool
		want         string
	}{
		{"empty GET", "GET", streamBody(strings.NewReader("")), -1, true, ""},
		{"empty DELETE", "DELETE", streamBody(strings.NewReader("")), -1, true, ""},
		{"GET with a body", "GET", streamBody(strings.NewReader("abc")), -1, false, "abc"},
		{"slow GET body", "GET", streamBody(slow), -1, false, "late"},
		{"empty POST", "POST", streamBody(strings.NewReader("")), -1, false, ""},
		{"known length", "GET", streamBody(strings.NewReader("xy")), 2, false, "xy"},
	} {
		r := httptest.NewRequest(tc.method, "/", nil)
		r.Body, r.ContentLength = tc.body, tc.length
		probeBody(r)
		if got := r.Body == http.NoBody && r.ContentLength == 0; got != tc.wantNoBody {
			t.Errorf("%s: body dropped: %v, want %v (ContentLength %d)", tc.name, got, tc.wantNoBody, r.ContentLength)
		}
		b, err := io.ReadAll(r.Body)
		if err != nil || string(b) != tc.want {
			t.Errorf("%s: body %q, %v; want %q", tc.name, b, err, tc.want)
		}
	}
}

// An empty GET body of unknown length (every HTTP/3 GET) must not stop a
// retry after a reset, as it does not for a GET without a body.
func TestEmptyStreamBodyGetRetried(t *testing.T) {
	bad := startResetting(t)
	good := startCounting(t, ok)
	b := newTestBackend("app", []string{bad.addr, good.addr}, testOptions{Retries: 2}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(b.CloseIdleConnections)
	for i := range 4 { // round robin: half of these try the resetting server first
		r := httptest.NewRequest("GET", "/", nil)
		r.Body, r.ContentLength = streamBody(strings.NewReader("")), -1
		w := httptest.NewRecorder()
		b.ServeHTTP(w, r)
		if w.Code != 200 || w.Body.String() != "ok " {
			t.Fatalf("GET %d: %d %q, want 200 after a retry", i, w.Code, w.Body.String())
		}
	}
	if bad.hits.Load() == 0 {
		t.Fatal("the resetting server got no request: the test proves nothing")
	}
}
