package attack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// BackendHeader is the response header by which a Backend signs its
// answers ("X-Attack-Backend: NAME"), so that a client can tell them from
// the proxy's own.
const BackendHeader = "X-Attack-Backend"

// LengthHeader carries, in a mid-response reset, the body length that its
// Content-Length announces, for clients behind a proxy that drops
// Content-Length (to re-frame the body as chunked, say).
const LengthHeader = "X-Attack-Length"

// Backend is the upstream server of the attacks: HTTP/1.1 with keep-alive,
// counting the TCP connections it accepts and the requests it serves. It
// answers 200 with the body "NAME\n", after reading up to 1 MiB of the
// request body; a body it cannot read (a bad chunk) gets 400 "bad body".
// It accepts header sections of up to 16 MiB, so that what a proxy
// forwards reaches it. Every answer carries BackendHeader.
//
// The path /midreset?bytes=K (default 1000) answers with a mid-response
// reset (see MidReset), whatever the MidReset field says. The query
// delay_ms=N on any other path delays the answer by N ms (at most 10 s),
// as a server that does some work; size=N answers N bytes of body
// (at most 64 MiB) instead of the name.
type Backend struct {
	// Name is in BackendHeader and the body. Default "backend".
	Name string
	// MidReset, when positive, makes every request a mid-response reset:
	// status 200, a Content-Length of 2×MidReset, MidReset bytes of body,
	// then a TCP reset (SO_LINGER 0). Zero: answer normally.
	MidReset int
	// Log, when not nil, gets a line with the counters once a second, when
	// they have changed.
	Log io.Writer

	conns, open, used, requests atomic.Int64
	mu                          sync.Mutex
	srv                         *http.Server
}

// BackendStats are a Backend's counters.
type BackendStats struct {
	// Conns counts the TCP connections accepted since the start, Open
	// those open now, Used those that carried at least one request (a
	// proxy's TCP health checks do not).
	Conns int64 `json:"conns"`
	Open  int64 `json:"open"`
	Used  int64 `json:"used"`
	// Requests counts the requests read (including the mid-response
	// resets).
	Requests int64 `json:"requests"`
}

func (s BackendStats) String() string {
	return fmt.Sprintf("conns=%d open=%d used=%d requests=%d", s.Conns, s.Open, s.Used, s.Requests)
}

// Stats returns the counters now.
func (b *Backend) Stats() BackendStats {
	return BackendStats{Conns: b.conns.Load(), Open: b.open.Load(), Used: b.used.Load(), Requests: b.requests.Load()}
}

// StatsHandler serves the counters as JSON (BackendStats). Serve it on a
// listener of its own (see FetchBackendStats), so that reading them does
// not count as a connection.
func (b *Backend) StatsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(b.Stats())
	})
}

// FetchBackendStats reads the counters a StatsHandler serves at addr
// (host:port).
func FetchBackendStats(ctx context.Context, addr string) (BackendStats, error) {
	var s BackendStats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return s, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&s)
	return s, err
}

// Serve accepts connections on l until Close; it returns
// http.ErrServerClosed then. It closes l. Call it once.
func (b *Backend) Serve(l net.Listener) error {
	b.mu.Lock()
	if b.srv != nil {
		b.mu.Unlock()
		return errors.New("attack: Backend.Serve called twice")
	}
	if b.Name == "" {
		b.Name = "backend"
	}
	b.srv = &http.Server{
		Handler:        http.HandlerFunc(b.serveHTTP),
		MaxHeaderBytes: 16 << 20,
		ErrorLog:       log.New(io.Discard, "", 0),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
	}
	srv := b.srv
	b.mu.Unlock()
	if b.Log != nil {
		done := make(chan struct{})
		defer close(done)
		go b.logEverySecond(done)
	}
	return srv.Serve(&countingListener{Listener: l, b: b})
}

// Close closes the listener and every connection.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.srv == nil {
		return nil
	}
	return b.srv.Close()
}

func (b *Backend) logEverySecond(done <-chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last BackendStats
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		if s := b.Stats(); s != last {
			fmt.Fprintf(b.Log, "%s %s %s\n", time.Now().Format("15:04:05"), b.Name, s)
			last = s
		}
	}
}

// connKey is the context key of a request's *countedConn.
type connKey struct{}

func (b *Backend) serveHTTP(w http.ResponseWriter, r *http.Request) {
	b.requests.Add(1)
	if c, ok := r.Context().Value(connKey{}).(*countedConn); ok && c.used.CompareAndSwap(false, true) {
		b.used.Add(1)
	}
	if r.URL.Path == "/midreset" {
		k, err := strconv.Atoi(r.URL.Query().Get("bytes"))
		if err != nil || k <= 0 {
			k = 1000
		}
		b.midReset(w, min(k, 64<<20))
		return
	}
	if b.MidReset > 0 {
		b.midReset(w, b.MidReset)
		return
	}
	if ms, err := strconv.Atoi(r.URL.Query().Get("delay_ms")); err == nil && ms > 0 {
		select {
		case <-time.After(time.Duration(min(ms, 10000)) * time.Millisecond):
		case <-r.Context().Done():
		}
	}
	w.Header().Set(BackendHeader, b.Name)
	if _, err := io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20)); err != nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	if n, err := strconv.Atoi(r.URL.Query().Get("size")); err == nil && n > 0 {
		writeBody(w, min(n, 64<<20))
		return
	}
	io.WriteString(w, b.Name+"\n")
}

// writeBody writes n bytes of body, with its Content-Length.
func writeBody(w http.ResponseWriter, n int) {
	w.Header().Set("Content-Length", strconv.Itoa(n))
	chunk := make([]byte, 32<<10)
	for i := range chunk {
		chunk[i] = 'a' + byte(i%26)
	}
	for n > 0 {
		k := min(n, len(chunk))
		if _, err := w.Write(chunk[:k]); err != nil {
			return
		}
		n -= k
	}
}

// midReset answers 200 with a Content-Length of 2k, sends k bytes of body,
// waits until the kernel has sent them, and resets the connection.
func (b *Backend) midReset(w http.ResponseWriter, k int) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "cannot hijack", http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	head := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n%s: %d\r\n%s: %s\r\n\r\n",
		2*k, LengthHeader, 2*k, BackendHeader, b.Name)
	body := make([]byte, k)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(append([]byte(head), body...)); err != nil {
		return
	}
	if cc, ok := conn.(*countedConn); ok {
		conn = cc.Conn
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		waitSent(tc, time.Second)
		tc.SetLinger(0)
	}
}

// countingListener counts the connections it accepts for b.
type countingListener struct {
	net.Listener
	b *Backend
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.b.conns.Add(1)
	l.b.open.Add(1)
	return &countedConn{Conn: c, b: l.b}, nil
}

// countedConn takes itself off b's open connections when it closes.
type countedConn struct {
	net.Conn
	b    *Backend
	once sync.Once
	used atomic.Bool // it carried a request
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.b.open.Add(-1) })
	return c.Conn.Close()
}
