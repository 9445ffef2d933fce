package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/portcullis/portcullis/internal/accesslog"
	"github.com/portcullis/portcullis/internal/hostname"
	"github.com/portcullis/portcullis/internal/upstream"
)

// loggedTest is a frontend with a JSON access log in a file, over a
// backend of one server.
type loggedTest struct {
	h    http.Handler
	w    *accesslog.Writer
	path string
}

func newLoggedTest(t *testing.T, server string, trust bool) *loggedTest {
	t.Helper()
	be := newTestBackend("app", []string{server}, testOptions{}, slog.New(slog.DiscardHandler))
	t.Cleanup(be.CloseIdleConnections)
	h := &Handler{Router: &Router{Routes: []Route{{Host: hostname.MustParsePattern("app.test"), Backend: be}}}}
	path := filepath.Join(t.TempDir(), "access.log")
	w := accesslog.NewWriter(path, 0, slog.New(slog.DiscardHandler))
	if err := w.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	lh := Logged(h, LogOptions{Log: &accesslog.Logger{W: w, Format: accesslog.JSON}, Frontend: "web", TrustRequestID: trust})
	return &loggedTest{h: lh, w: w, path: path}
}

// lines closes the log and returns its lines, decoded.
func (lt *loggedTest) lines(t *testing.T) []map[string]any {
	t.Helper()
	lt.w.Close()
	b, err := os.ReadFile(lt.path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for l := range strings.SplitSeq(strings.TrimSuffix(string(b), "\n"), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		out = append(out, m)
	}
	return out
}

// TestLoggedRequest: a POST is logged with its bytes both ways, its
// server and its timings; the request id is generated and forwarded
// unless the peer is trusted, and a request no route takes is logged
// with its 404.
func TestLoggedRequest(t *testing.T) {
	var gotIDs []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotIDs = append(gotIDs, r.Header.Get("X-Request-ID"))
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "read %d", n)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, trust := range []bool{false, true} {
		lt := newLoggedTest(t, addr, trust)
		req := httptest.NewRequest("POST", "http://app.test/upload?x=1", strings.NewReader("0123456789"))
		req.Header.Set("X-Request-ID", "from-the-client")
		rec := httptest.NewRecorder()
		lt.h.ServeHTTP(rec, req)
		lt.h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "http://nowhere.test/", nil))
		lines := lt.lines(t)
		if len(lines) != 2 {
			t.Fatalf("%d lines, want 2", len(lines))
		}
		e := lines[0]
		want := map[string]any{"method": "POST", "path": "/upload", "query": "x=1", "status": 200.0, "bytes_in": 10.0,
			"bytes_out": float64(len("read 10")), "backend": "app", "server": addr, "frontend": "web", "protocol": "HTTP/1.1", "state": "--"}
		for k, v := range want {
			if e[k] != v {
				t.Errorf("trust %v: %s = %v, want %v", trust, k, e[k], v)
			}
		}
		if e["total_ms"].(float64) < e["headers_ms"].(float64) || e["headers_ms"].(float64) < e["connect_ms"].(float64) {
			t.Errorf("timings out of order: %v", e)
		}
		id := gotIDs[len(gotIDs)-1]
		if e["request_id"] != id || trust != (id == "from-the-client") || len(id) != 32 && !trust {
			t.Errorf("trust %v: the server got id %q, the log says %v", trust, id, e["request_id"])
		}
		if nf := lines[1]; nf["status"] != 404.0 || nf["backend"] != "" || nf["state"] != "--" {
			t.Errorf("no route: %v", nf)
		}
	}
}

// TestLoggedNoLog: without a log, Logged is the handler itself.
func TestLoggedNoLog(t *testing.T) {
	h := &Handler{}
	if Logged(h, LogOptions{}) != http.Handler(h) {
		t.Error("Logged without a log wraps the handler")
	}
}

// TestStateFor: each failure of the error path gets the termination
// state of whose fault it is and of its phase.
func TestStateFor(t *testing.T) {
	timeout := &dialError{err: context.DeadlineExceeded}
	for _, c := range []struct {
		err  error
		gone bool
		want accesslog.State
	}{
		{&roundTripError{err: upstream.ErrQueueTimeout}, false, accesslog.QueueTimeout},
		{&roundTripError{err: upstream.ErrNoServer}, false, accesslog.NoServer},
		{&roundTripError{err: timeout}, false, accesslog.ConnectFailed},
		{&roundTripError{err: &dialError{err: syscall.ECONNREFUSED}}, false, accesslog.ConnectFailed},
		{&roundTripError{err: &dialError{err: context.DeadlineExceeded, late: true}}, false, accesslog.Resource},
		{&roundTripError{err: syscall.EMFILE}, false, accesslog.Resource},
		{&roundTripError{err: errTimeout{}}, false, accesslog.ServerTimeout},
		{&roundTripError{err: syscall.ECONNRESET}, false, accesslog.ServerHeaders},
		{&roundTripError{err: context.Canceled}, true, accesslog.ClientHeaders},
		{&clientBodyError{kind: bodyTooLarge, err: errors.New("x")}, false, accesslog.Refused},
		{&clientBodyError{kind: bodyAborted, err: errors.New("x")}, false, accesslog.ClientHeaders},
	} {
		if got := stateFor(c.err, c.gone); got != c.want {
			t.Errorf("stateFor(%v, gone %v) = %s, want %s", c.err, c.gone, got, c.want)
		}
	}
}

// TestRequestID: ids are 32 hex digits and differ.
func TestRequestID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := newRequestID()
		if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" || seen[id] {
			t.Fatalf("id %q: want 32 hex digits, unique", id)
		}
		seen[id] = true
	}
}
