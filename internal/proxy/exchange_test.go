package proxy

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// connCounting is an upstream that counts the TCP connections it accepts.
type connCounting struct {
	addr  string
	conns atomic.Int64
	hits  atomic.Int64
}

func startConnCounting(t *testing.T, h http.HandlerFunc) *connCounting {
	t.Helper()
	c := &connCounting{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.hits.Add(1)
		h(w, r)
	}))
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			c.conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c.addr = strings.TrimPrefix(srv.URL, "http://")
	return c
}

// An HTTP/2 request its client cancels (a stream reset) after it reached
// the server still gets its response read, so that the server connection
// is reused: 20 cancelled requests in a row cost the server one
// connection, not 20.
func TestCancelledRequestKeepsServerConnection(t *testing.T) {
	up := startConnCounting(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(30 * time.Millisecond)
		w.Write([]byte("late but small"))
	})
	logs := &logBuffer{}
	b := newTestBackend("app", []string{up.addr}, testOptions{}, slog.New(slog.NewTextHandler(logs, nil)))
	t.Cleanup(b.CloseIdleConnections)
	url := "http://" + serveBoth(t, &Handler{Router: &Router{Routes: []Route{{Backend: b}}}})
	c := h2cClient(t)
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, "GET", url+"/", nil)
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("request %d was not cancelled", i)
		}
		cancel()
		// The proxy notices the client left, waits for the response
		// and drains it before the next request is sent.
		waitFor(t, func() bool { return up.hits.Load() == int64(i+1) })
		time.Sleep(60 * time.Millisecond)
	}
	if n := up.conns.Load(); n > 2 {
		t.Errorf("20 cancelled requests made the server accept %d connections, want 1 (2 at most)", n)
	}
}

// A response read to its end releases the server at once, even when the
// client does not read it: a client that never reads holds no server
// connection for a small response.
func TestSmallResponseReleasesServerBeforeClientReads(t *testing.T) {
	up := startConnCounting(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("small"))
	})
	logs := &logBuffer{}
	b := newTestBackend("app", []string{up.addr}, testOptions{}, slog.New(slog.NewTextHandler(logs, nil)))
	t.Cleanup(b.CloseIdleConnections)
	blocked := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.ServeHTTP(&stuckWriter{ResponseWriter: w, stuck: blocked}, r)
	})
	url := serve(t, h)
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := client.Get(url + "/")
		if err == nil {
			resp.Body.Close()
		}
	}()
	m := b.up.Servers()[0].Member()
	waitFor(t, func() bool { return up.hits.Load() == 1 })
	// The client's writer is stuck, yet the server's count is back to 0.
	waitFor(t, func() bool { return m.State.InFlight() == 0 })
	close(blocked)
	<-done
}

// stuckWriter blocks every body write until stuck is closed, as a client
// that never opens its flow-control window.
type stuckWriter struct {
	http.ResponseWriter
	stuck chan struct{}
}

func (w *stuckWriter) Write(p []byte) (int, error) {
	<-w.stuck
	return w.ResponseWriter.Write(p)
}

// A connection whose client cancels most of its requests is answered
// 429 with Connection: close once it has cancelled MaxResets: HTTP/2
// then sends GOAWAY, and the server hears of no more of its requests.
func TestConnGuardTripsOnCancelledRequests(t *testing.T) {
	up := startConnCounting(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-r.Context().Done():
			case <-time.After(time.Second):
			}
		}
	})
	logs := &logBuffer{}
	b := newTestBackend("app", []string{up.addr}, testOptions{}, slog.New(slog.NewTextHandler(logs, nil)))
	t.Cleanup(b.CloseIdleConnections)
	srv := httptest.NewUnstartedServer(&Handler{Router: &Router{Routes: []Route{{Backend: b}}}})
	srv.EnableHTTP2 = true
	srv.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return WithConnGuard(ctx, &ConnGuard{})
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tr := &http2.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr}
	// One request served: the connection is up before the cancelled ones.
	resp, err := c.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	for i := 0; i < MaxResets; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/slow", nil)
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
		}
		cancel()
	}
	// The handlers end once the server answered (1s) or cancelGrace
	// passed: then their cancellation is counted.
	time.Sleep(cancelGrace + scaled(300*time.Millisecond))
	hits := up.hits.Load()
	resp, err = c.Get(srv.URL + "/after")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("after %d cancelled requests: status %d, want 429", MaxResets, resp.StatusCode)
	}
	if up.hits.Load() != hits {
		t.Errorf("the request after the connection tripped reached the server")
	}
	// The connection is going away: the next request needs a new one,
	// which is served normally.
	ctx, cancel := context.WithTimeout(context.Background(), scaled(5*time.Second))
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/new", nil)
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	resp, err = c.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			t.Errorf("a new connection inherited the old one's state")
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(scaled(5 * time.Second))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
