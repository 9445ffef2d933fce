package integration

// Traffic for the binary upgrade tests (upgrade_test.go): clients that
// keep HTTP/1.1, HTTP/2, HTTP/3 and WebSocket traffic going through an
// upgrade and count every failure, requests in flight across it, and TLS
// session resumption.

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/websocket"
)

// traffic counts one kind of request and its failures.
type traffic struct {
	name       string
	ok, failed atomic.Int64
	mu         sync.Mutex
	first      []string
}

func (k *traffic) record(err error) {
	if err == nil {
		k.ok.Add(1)
		return
	}
	k.failed.Add(1)
	k.mu.Lock()
	if len(k.first) < 5 {
		k.first = append(k.first, time.Now().Format("15:04:05.000")+" "+err.Error())
	}
	k.mu.Unlock()
}

// upgradeLoad is traffic through portcullis while it upgrades: HTTP/1.1 on :80,
// HTTP/2 and HTTP/3 on :443 in loops; one HTTP/3 connection kept open
// with a request every 100 ms; one WebSocket on :80 echoing a message
// every 100 ms.
type upgradeLoad struct {
	kinds []*traffic
	// uploaded counts the uploads (uploads) on clients h1, h2 and h3.
	uploaded   *traffic
	h1, h2, h3 *http.Client
	// dials counts the connections the long-lived HTTP/3 client opened,
	// and wsEnds the WebSocket connections that ended between messages.
	dials, wsEnds atomic.Int64
	stop          chan struct{}
	wg            sync.WaitGroup
}

func (l *upgradeLoad) kind(name string) *traffic {
	k := &traffic{name: name}
	l.kinds = append(l.kinds, k)
	return k
}

// checkBody accepts a 200 from the echo upstream.
func checkBody(r result) error {
	if r.err != nil {
		return r.err
	}
	if r.status != http.StatusOK || !strings.HasPrefix(r.body, "upstream: app\n") {
		return fmt.Errorf("GET %s: HTTP/%d %d %.60q", r.path, r.proto, r.status, r.body)
	}
	return nil
}

func startLoad(t *testing.T, s *site) *upgradeLoad {
	t.Helper()
	l := &upgradeLoad{stop: make(chan struct{})}
	h1 := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2}, Timeout: scaled(10 * time.Second)}
	t.Cleanup(h1.CloseIdleConnections)
	loops := []struct {
		name string
		c    *http.Client
		url  string
	}{
		{"HTTP/1.1", h1, "http://127.0.0.1/h1"},
		{"HTTP/2", clientFor(t, s, "HTTP/2", 2), "https://127.0.0.1/h2"},
		{"HTTP/3", clientFor(t, s, "HTTP/3", 2), "https://127.0.0.1/h3"},
	}
	l.h1, l.h2, l.h3 = loops[0].c, loops[1].c, loops[2].c
	l.uploaded = l.kind("uploads in flight during an upgrade")
	for _, lp := range loops {
		k := l.kind(lp.name)
		for w := range 2 {
			l.wg.Go(func() {
				for i := 0; l.running(5 * time.Millisecond); i++ {
					k.record(checkBody(get(lp.c, fmt.Sprintf("%s/%d/%d", lp.url, w, i))))
				}
			})
		}
	}
	held := l.kind("HTTP/3, one connection kept")
	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: s.pool, ServerName: "localhost"},
		QUICConfig:      &quic.Config{MaxIdleTimeout: 30 * time.Second, KeepAlivePeriod: time.Second},
		Dial: func(ctx context.Context, _ string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
			l.dials.Add(1)
			return quic.DialAddrEarly(ctx, "127.0.0.1:443", tlsCfg, cfg)
		},
	}
	t.Cleanup(func() { tr.Close() })
	heldClient := &http.Client{Transport: tr, Timeout: scaled(10 * time.Second)}
	l.wg.Go(func() {
		for i := 0; l.running(100 * time.Millisecond); i++ {
			held.record(checkBody(get(heldClient, fmt.Sprintf("https://127.0.0.1/held/%d", i))))
		}
	})
	ws := l.kind("WebSocket")
	l.wg.Go(func() { l.webSocket(ws) })
	return l
}

// running pauses for d and reports whether the load goes on.
func (l *upgradeLoad) running(d time.Duration) bool {
	select {
	case <-l.stop:
		return false
	case <-time.After(d):
		return true
	}
}

// webSocket keeps a WebSocket open on ws://127.0.0.1/ws and echoes a
// message every 100 ms. A connection that ends between two messages (the
// process that held it finished) is replaced by a new one; a message sent
// and not echoed is a failure.
func (l *upgradeLoad) webSocket(k *traffic) {
	for l.running(0) {
		ws, err := dialWebSocket()
		if err != nil {
			k.record(fmt.Errorf("WebSocket handshake: %w", err))
			l.running(100 * time.Millisecond)
			continue
		}
		l.echoUntilEnd(k, ws)
		ws.Close()
	}
}

func (l *upgradeLoad) echoUntilEnd(k *traffic, ws *websocket.Conn) {
	msgs := make(chan string, 1)
	ended := make(chan error, 1)
	go func() {
		for {
			var m string
			if err := websocket.Message.Receive(ws, &m); err != nil {
				ended <- err
				return
			}
			msgs <- m
		}
	}()
	for i := 0; ; i++ {
		select {
		case <-l.stop:
			return
		case <-ended:
			l.wsEnds.Add(1)
			return
		case <-time.After(100 * time.Millisecond):
		}
		msg := fmt.Sprintf("message %d", i)
		if err := websocket.Message.Send(ws, msg); err != nil {
			k.record(fmt.Errorf("send %q: %w", msg, err))
			return
		}
		select {
		case got := <-msgs:
			if got != "echo: "+msg {
				k.record(fmt.Errorf("sent %q, got %q", msg, got))
				continue
			}
			k.record(nil)
		case err := <-ended:
			k.record(fmt.Errorf("%q was sent, and the connection ended before its echo: %v", msg, err))
			return
		case <-time.After(scaled(5 * time.Second)):
			k.record(fmt.Errorf("no echo of %q within 5s", msg))
			return
		}
	}
}

func dialWebSocket() (*websocket.Conn, error) {
	config, err := websocket.NewConfig("ws://127.0.0.1/ws", "http://127.0.0.1/")
	if err != nil {
		return nil, err
	}
	conn, err := net.DialTimeout("tcp", "127.0.0.1:80", scaled(5*time.Second))
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(scaled(5 * time.Second)))
	ws, err := websocket.NewClient(config, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return ws, nil
}

// finish stops the load and checks that nothing failed, and that every
// kind of request was served.
func (l *upgradeLoad) finish(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	for _, k := range l.kinds {
		t.Logf("%s: %d ok, %d failed", k.name, k.ok.Load(), k.failed.Load())
		if n := k.failed.Load(); n > 0 {
			t.Errorf("%s: %d of %d requests failed; the first:\n  %s", k.name, n, n+k.ok.Load(), strings.Join(k.first, "\n  "))
		}
		if k.ok.Load() == 0 {
			t.Errorf("%s: no request succeeded", k.name)
		}
	}
	t.Logf("the long-lived HTTP/3 client opened %d connections; the WebSocket client saw %d connections end between messages", l.dials.Load(), l.wsEnds.Load())
}

// uploads starts a POST over each of HTTP/1.1, HTTP/2 and HTTP/3 whose
// body is sent in six parts 100 ms apart: started before an upgrade, the
// old process serves them while the client still sends. It returns once
// the first part is out; wait waits for the answers.
func (l *upgradeLoad) uploads(t *testing.T, s *site) (wait func()) {
	t.Helper()
	k := l.uploaded
	var wg sync.WaitGroup
	sent := make(chan struct{}, 3)
	for _, c := range []struct {
		client *http.Client
		url    string
	}{
		{l.h1, "http://127.0.0.1/upload/h1"},
		{l.h2, "https://127.0.0.1/upload/h2"},
		{l.h3, "https://127.0.0.1/upload/h3"},
	} {
		wg.Go(func() {
			pr, pw := io.Pipe()
			go func() {
				for i := range 6 {
					if i > 0 {
						time.Sleep(100 * time.Millisecond)
					}
					if _, err := fmt.Fprintf(pw, "part %d\n", i); err != nil {
						return
					}
					if i == 0 {
						sent <- struct{}{}
					}
				}
				pw.Close()
			}()
			req, err := http.NewRequest(http.MethodPost, c.url, pr)
			if err != nil {
				k.record(err)
				return
			}
			resp, err := c.client.Do(req)
			if err != nil {
				k.record(fmt.Errorf("POST %s: %w", c.url, err))
				pr.CloseWithError(err)
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			r := result{path: c.url, status: resp.StatusCode, proto: resp.ProtoMajor, body: string(body), err: err}
			k.record(checkBody(r))
		})
	}
	for range 3 {
		select {
		case <-sent:
		case <-time.After(scaled(5 * time.Second)):
			t.Fatal("an upload did not start")
		}
	}
	return wg.Wait
}

// echoUpstream is the upstream "app" of the upgrade tests: the echo
// handler, a WebSocket echo at /ws (80 ms late), and /slow?ms=N.
func echoUpstream(t *testing.T) *upstream {
	t.Helper()
	app := &upstream{name: "app"}
	mux := http.NewServeMux()
	// The echo takes 80 ms: a process that cut the connection at any
	// moment would often catch a message in flight.
	mux.Handle("/ws", websocket.Handler(func(ws *websocket.Conn) {
		for {
			var m string
			if websocket.Message.Receive(ws, &m) != nil {
				return
			}
			time.Sleep(80 * time.Millisecond)
			if websocket.Message.Send(ws, "echo: "+m) != nil {
				return
			}
		}
	}))
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		time.Sleep(time.Duration(ms) * time.Millisecond)
		app.echo(w, r)
	})
	mux.HandleFunc("/", app.echo)
	up := startUpstream(t, "app", mux)
	app.addr = up.addr
	return app
}

// resumption checks that TLS sessions resume across an upgrade, over TCP
// and over QUIC: connect fills the client's session caches, and reports
// whether each connection resumed a session.
type resumption struct {
	s         *site
	tcp, quic tls.ClientSessionCache
}

func newResumption(s *site) *resumption {
	return &resumption{s: s, tcp: tls.NewLRUClientSessionCache(4), quic: tls.NewLRUClientSessionCache(4)}
}

func (r *resumption) connect(t *testing.T) (tcpResumed, quicResumed bool) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: scaled(5 * time.Second)}, "tcp", "127.0.0.1:443",
		&tls.Config{RootCAs: r.s.pool, ServerName: "localhost", NextProtos: []string{"http/1.1"}, ClientSessionCache: r.tcp})
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(scaled(5 * time.Second)))
	// A response makes the client read the session ticket sent after
	// the handshake.
	fmt.Fprintf(c, "GET /resume HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
	io.ReadAll(c)
	tcpResumed = c.ConnectionState().DidResume
	c.Close()

	tr := &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: r.s.pool, ServerName: "localhost", ClientSessionCache: r.quic},
		Dial: func(ctx context.Context, _ string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
			conn, err := quic.DialAddr(ctx, "127.0.0.1:443", tlsCfg, cfg)
			if err == nil {
				quicResumed = conn.ConnectionState().TLS.DidResume
			}
			return conn, err
		},
	}
	defer tr.Close()
	if err := checkBody(get(&http.Client{Transport: tr, Timeout: scaled(5 * time.Second)}, "https://127.0.0.1/resume")); err != nil {
		t.Fatalf("HTTP/3: %v", err)
	}
	return tcpResumed, quicResumed
}
