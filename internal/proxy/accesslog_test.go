package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/accesslog"
	"github.com/portcullis/portcullis/internal/hostname"
	"github.com/portcullis/portcullis/internal/testutil"
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

// serveLogged serves lt's handler on loopback and returns its address.
func serveLogged(t *testing.T, lt *loggedTest) string {
	t.Helper()
	front := httptest.NewServer(lt.h)
	t.Cleanup(front.Close)
	return strings.TrimPrefix(front.URL, "http://")
}

// TestLoggedClientLeavesDuringBody: a client that closes its connection
// in the middle of the response body gets CD, with the bytes it was sent.
func TestLoggedClientLeavesDuringBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "0123456789")
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	lt := newLoggedTest(t, strings.TrimPrefix(srv.URL, "http://"), false)
	addr := serveLogged(t, lt)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: app.test\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	c.Close()
	e := waitLoggedLine(t, lt)
	if e["state"] != "CD" || e["status"] != 200.0 || e["bytes_out"].(float64) < 10 {
		t.Errorf("line %v, want CD, 200 and the 10 bytes sent", e)
	}
}

// TestLoggedUpgrade: an upgraded connection (WebSocket) goes through the
// logged handler (it hijacks through Unwrap) and is logged with its 101
// when the tunnel ends.
func TestLoggedUpgrade(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n")
		line, _ := brw.ReadString('\n')
		io.WriteString(c, line)
	}))
	defer srv.Close()
	lt := newLoggedTest(t, strings.TrimPrefix(srv.URL, "http://"), false)
	c, err := net.Dial("tcp", serveLogged(t, lt))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: app.test\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("%v %v", resp, err)
	}
	io.WriteString(c, "ping\n")
	if got, _ := br.ReadString('\n'); got != "ping\n" {
		t.Fatalf("echo %q", got)
	}
	c.Close() // the tunnel ends when both sides have
	e := waitLoggedLine(t, lt)
	if e["status"] != 101.0 || e["state"] != "--" || e["path"] != "/ws" {
		t.Errorf("line %v, want 101 and --", e)
	}
}

// waitLoggedLine waits for lt's first line and returns it.
func waitLoggedLine(t *testing.T, lt *loggedTest) map[string]any {
	t.Helper()
	deadline := time.Now().Add(testutil.Scaled(5 * time.Second))
	for {
		b, _ := os.ReadFile(lt.path)
		if bytes.Count(b, []byte("\n")) > 0 || time.Now().After(deadline) {
			lines := lt.lines(t)
			if len(lines) != 1 {
				t.Fatalf("%d lines, want 1", len(lines))
			}
			return lines[0]
		}
		time.Sleep(10 * time.Millisecond)
	}
}
