package integration

// Helpers of the binary upgrade tests (upgrade_test.go): the chain of
// processes a service goes through, one per upgrade, the executable they
// are started from, and clients that keep HTTP/1.1, HTTP/2, HTTP/3 and
// WebSocket traffic going and count every failure.

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/net/websocket"
	"golang.org/x/sys/unix"
)

// installBinary puts a copy of src at dst the way a package manager
// replaces an executable: a new file renamed over the old one, which
// running processes keep using.
func installBinary(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := dst + ".new"
	writeFile(t, tmp, string(b), 0o755)
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// executableDir makes a directory for the executable the service runs,
// readable by nobody, with src installed as NAME/portcullis.
func executableDir(t *testing.T, src string) string {
	t.Helper()
	exe := filepath.Join(sharedDir(t), "portcullis")
	installBinary(t, src, exe)
	return exe
}

var subreaperOnce sync.Once

// becomeSubreaper makes the test process the parent of processes whose
// parent exits (PR_SET_CHILD_SUBREAPER), as systemd is for a service: the
// new process of an upgrade outlives the old one, which started it, and
// the test waits for it and reads its exit status.
func becomeSubreaper(t *testing.T) {
	t.Helper()
	var err error
	subreaperOnce.Do(func() { err = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })
	if err != nil {
		t.Fatalf("prctl(PR_SET_CHILD_SUBREAPER): %v", err)
	}
}

// member is one process of a chain.
type member struct {
	pid      int
	done     chan struct{} // closed once it has exited
	status   int           // exit status, once done
	exitedAt time.Time
	signaled time.Time // when upgrade sent it SIGUSR2
}

// chain follows a service through binary upgrades: the process the test
// started, then each new process. They share the first one's output and
// notify socket.
type chain struct {
	t       *testing.T
	p       *proc
	exe     string
	members []*member
}

// newChain follows p, started from exe.
func newChain(t *testing.T, p *proc, exe string) *chain {
	t.Helper()
	becomeSubreaper(t)
	first := &member{pid: p.pid(), done: make(chan struct{})}
	go func() {
		<-p.done
		first.status, first.exitedAt = p.exitCode, p.exitedAt
		close(first.done)
	}()
	c := &chain{t: t, p: p, exe: exe, members: []*member{first}}
	t.Cleanup(func() {
		for _, m := range c.members[1:] {
			if !m.exited() {
				unix.Kill(m.pid, syscall.SIGKILL)
			}
		}
		for _, m := range c.members[1:] {
			select {
			case <-m.done:
			case <-time.After(scaled(5 * time.Second)):
				t.Errorf("pid %d did not exit after SIGKILL", m.pid)
			}
		}
		if t.Failed() {
			t.Logf("notifications: %q", p.notify.all())
		}
	})
	return c
}

func (m *member) exited() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// current is the newest process.
func (c *chain) current() *member { return c.members[len(c.members)-1] }

// follow adds the process pid, started by the current one: once that
// exits, pid is the test's child (becomeSubreaper) and is waited for.
func (c *chain) follow(pid int) *member {
	m := &member{pid: pid, done: make(chan struct{})}
	parent := c.current()
	go func() {
		<-parent.done
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(pid, &ws, 0, nil)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				m.status = -1
				for unix.Kill(pid, 0) == nil {
					time.Sleep(10 * time.Millisecond)
				}
			} else {
				m.status = ws.ExitStatus()
			}
			break
		}
		m.exitedAt = time.Now()
		close(m.done)
	}()
	c.members = append(c.members, m)
	return m
}

// notification waits up to timeout for a notification containing want
// (after those matched before) and returns it, or "".
func (c *chain) notification(want string, timeout time.Duration) string {
	msg, next := c.p.notify.receive(time.Now().Add(timeout), want, c.p.seen)
	if msg != "" {
		c.p.seen = next
	}
	return msg
}

// upgrade sends SIGUSR2 to the current process and waits until the new
// one says it is the main process (MAINPID=) and is ready, and until the
// old one has exited, within grace. It checks that the old one exited
// with status 0, and that the new one holds no privilege.
func (c *chain) upgrade(grace time.Duration, wantNNP bool) (old, new *member) {
	c.t.Helper()
	old = c.current()
	old.signaled = time.Now()
	if err := unix.Kill(old.pid, syscall.SIGUSR2); err != nil {
		c.t.Fatalf("SIGUSR2 to %d: %v", old.pid, err)
	}
	msg := c.notification("MAINPID=", scaled(15*time.Second))
	if msg == "" {
		c.t.Fatalf("no MAINPID= notification after SIGUSR2 to %d; log:\n%s", old.pid, c.p.stderr.String())
	}
	if !strings.Contains(msg, "READY=1") {
		c.t.Errorf("MAINPID= without READY=1: %q", msg)
	}
	v, _, _ := strings.Cut(strings.TrimPrefix(msg[strings.Index(msg, "MAINPID="):], "MAINPID="), "\n")
	pid, err := strconv.Atoi(v)
	if err != nil || pid == old.pid || pid <= 0 {
		c.t.Fatalf("MAINPID=%q after an upgrade of %d: want the new process's PID", v, old.pid)
	}
	new = c.follow(pid)
	ready := time.Now()
	select {
	case <-old.done:
	case <-time.After(grace + scaled(2*time.Second)):
		c.t.Fatalf("the old process %d still runs %v after the new one %d was ready (grace %v)", old.pid, time.Since(ready), pid, grace)
	}
	if took := old.exitedAt.Sub(ready); took > grace+scaled(500*time.Millisecond) {
		c.t.Errorf("the old process %d exited %v after the new one was ready, want within grace (%v)", old.pid, took, grace)
	}
	if old.status != 0 {
		c.t.Errorf("the old process %d exited with status %d, want 0", old.pid, old.status)
	}
	checkUnprivileged(c.t, pid, wantNNP)
	return old, new
}

// waitOutput waits for a line of the chain's output from mark on with
// every part, whichever process wrote it.
func (c *chain) waitOutput(mark int, timeout time.Duration, parts ...string) string {
	c.t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		if lines := logsWith(c.p, mark, parts...); len(lines) > 0 {
			return lines[0]
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no log line with %q within %v; log:\n%s", parts, timeout, c.p.stderr.String())
		}
	}
}

// stop stops the current process with SIGTERM.
func (c *chain) stop() {
	c.t.Helper()
	m := c.current()
	unix.Kill(m.pid, syscall.SIGTERM)
	select {
	case <-m.done:
		if m.status != 0 {
			c.t.Errorf("pid %d: exit status %d after SIGTERM, want 0", m.pid, m.status)
		}
	case <-time.After(scaled(10 * time.Second)):
		c.t.Errorf("pid %d still runs 10s after SIGTERM", m.pid)
	}
}

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
