package l4

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/hostname"
	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/internal/upstream"
)

// countingEcho returns an echo handler that counts its connections.
func countingEcho(n *atomic.Int64) func(net.Conn) {
	return func(c net.Conn) {
		n.Add(1)
		echo(c)
	}
}

// roundTrip writes payload on c from another goroutine, half-closes, and
// returns the SHA-256 of everything read until EOF.
func roundTrip(c *net.TCPConn, payload []byte) ([32]byte, int64, error) {
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err == nil {
		err = <-werr
	}
	return [32]byte(h.Sum(nil)), n, err
}

func TestTCPEcho(t *testing.T) {
	var counts [3]atomic.Int64
	b := newFakeBackend(serve(t, countingEcho(&counts[0])), serve(t, countingEcho(&counts[1])), serve(t, countingEcho(&counts[2])))
	log, _ := testLog()
	addr := startTCP(t, &TCP{Frontend: "echo", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: singleTable(b), Log: log})

	const conns = 300
	maxLen := 1 << 20
	if testing.Short() {
		maxLen = 64 << 10
	}
	src := rand.NewChaCha8([32]byte{1})
	rng := rand.New(src)
	payloads := make([][]byte, conns)
	for i := range payloads {
		payloads[i] = make([]byte, rng.IntN(maxLen+1))
		src.Read(payloads[i])
	}
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			c := dial(t, addr)
			sum, n, err := roundTrip(c, payloads[i])
			if err != nil {
				t.Errorf("connection %d: %v", i, err)
				return
			}
			if want := sha256.Sum256(payloads[i]); sum != want || n != int64(len(payloads[i])) {
				t.Errorf("connection %d: echoed %d bytes with another digest, want %d bytes", i, n, len(payloads[i]))
			}
		})
	}
	wg.Wait()
	for i := range counts {
		if n := counts[i].Load(); n < conns/3-2 || n > conns/3+2 {
			t.Errorf("server %d took %d connections, want about %d", i, n, conns/3)
		}
	}
	b.waitInflight(t)
}

func TestTCPRetry(t *testing.T) {
	dead := deadAddr(t)
	b := newBackend(backendOptions{Options: upstream.Options{Retries: 1}}, dead, serve(t, echo), serve(t, echo))
	log, logs := testLog()
	addr := startTCP(t, &TCP{Frontend: "retry", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: singleTable(b), Log: log})
	for i := range 30 {
		c := dial(t, addr)
		msg := fmt.Appendf(nil, "hello %d", i)
		_, n, err := roundTrip(c, msg)
		if err != nil || n != int64(len(msg)) {
			t.Fatalf("connection %d: %d bytes back, error %v", i, n, err)
		}
	}
	// Round robin picks the dead server for every third connection,
	// which then goes to another server: smooth round robin over the
	// two left spreads the 30 connections evenly.
	if fails, oks := b.observations(dead); fails != 10 || oks != 0 {
		t.Errorf("the dead server was observed failing %d times and working %d times, want 10 and 0", fails, oks)
	}
	for i, want := range []int{15, 15} {
		addr := b.members[1+i].State.Address
		if fails, oks := b.observations(addr); fails != 0 || oks != want {
			t.Errorf("server %s observed failing %d times and working %d times, want 0 and %d", addr, fails, oks, want)
		}
	}
	if got := logLines(logs, "level=INFO", `msg="retrying on another server"`, "failed="+dead, "frontend=retry", "backend=test"); len(got) != 10 {
		t.Errorf("%d retry log lines, want 10:\n%s", len(got), logs)
	}
	b.waitInflight(t)
}

func TestTCPNoServer(t *testing.T) {
	dead1, dead2 := deadAddr(t), deadAddr(t)
	for _, retries := range []int{0, 1, 5} {
		t.Run(fmt.Sprint("retries=", retries), func(t *testing.T) {
			b := newBackend(backendOptions{Options: upstream.Options{Retries: retries}}, dead1, dead2)
			log, logs := testLog()
			addr := startTCP(t, &TCP{Frontend: "down", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: singleTable(b), Log: log})
			c := dial(t, addr)
			if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("read %d bytes, error %v; want EOF", n, err)
			}
			b.waitInflight(t)
			warn := logLines(logs, "level=WARN", "frontend=down", "backend=test", "client="+c.LocalAddr().String(), "connection refused")
			if len(warn) != 1 {
				t.Errorf("%d warn lines about the failed connection, want 1:\n%s", len(warn), logs)
			}
			fails1, _ := b.observations(dead1)
			fails2, _ := b.observations(dead2)
			if want := min(retries+1, 2); fails1+fails2 != want {
				t.Errorf("%d failed connects observed, want %d", fails1+fails2, want)
			}
		})
	}
}

// reverser reads until EOF, answers with the bytes reversed, half-closes,
// and reports on done whether the proxy then ended the connection cleanly
// (EOF, no reset).
func reverser(done chan<- error) func(net.Conn) {
	return func(c net.Conn) {
		c.SetDeadline(time.Now().Add(bound()))
		b, err := io.ReadAll(c)
		if err != nil {
			done <- err
			return
		}
		slices.Reverse(b)
		if _, err := c.Write(b); err != nil {
			done <- err
			return
		}
		c.(*net.TCPConn).CloseWrite()
		n, err := c.Read(make([]byte, 1))
		if err == io.EOF && n == 0 {
			err = nil
		} else if err == nil {
			err = fmt.Errorf("read %d more bytes after EOF", n)
		}
		done <- err
	}
}

func TestTCPHalfClose(t *testing.T) {
	done := make(chan error, 1)
	b := newFakeBackend(serve(t, reverser(done)))
	log, _ := testLog()
	addr := startTCP(t, &TCP{Frontend: "half", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: singleTable(b), Log: log})

	c := dial(t, addr)
	req := bytes.Repeat([]byte("0123456789"), 100_000)
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the reply after half-closing: %v", err)
	}
	slices.Reverse(req)
	if !bytes.Equal(got, req) {
		t.Fatalf("reply of %d bytes is not the request reversed (%d bytes)", len(got), len(req))
	}
	c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("server side: %v", err)
		}
	case <-time.After(bound()):
		t.Fatal("the server never saw the connection end")
	}
	b.waitInflight(t)
}

func TestTCPServerResetIsPassedOn(t *testing.T) {
	b := newFakeBackend(serve(t, func(c net.Conn) {
		io.ReadFull(c, make([]byte, 5))
		c.(*net.TCPConn).SetLinger(0) // close with RST
	}))
	log, _ := testLog()
	addr := startTCP(t, &TCP{Frontend: "reset", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: singleTable(b), Log: log})
	c := dial(t, addr)
	io.WriteString(c, "hello")
	_, err := c.Read(make([]byte, 1))
	if err == nil || err == io.EOF {
		t.Fatalf("after the server reset: read error %v, want a reset", err)
	}
	b.waitInflight(t)
	if fails, _ := b.observations(b.members[0].State.Address); fails != 0 {
		t.Errorf("a reset after connecting counted as %d failures; only connect failures count", fails)
	}
}

func TestTCPSNI(t *testing.T) {
	one := startTLSServer(t, "one", nil, "one.pass.test")
	wild := startTLSServer(t, "wild", nil, "*.pass.test", "a.b.pass.test")
	imap := startTLSServer(t, "imap", []string{"imap"}, "mail.test")
	mail := startTLSServer(t, "mail", []string{"h2", "http/1.1"}, "mail.test")
	def := startTLSServer(t, "default", nil, "other.test")
	log, logs := testLog()
	tab := NewTable([]Route{
		{SNI: hostname.MustParsePattern("one.pass.test"), Backend: newFakeBackend(one.addr).Backend, BackendName: "one"},
		{SNI: hostname.MustParsePattern("*.PASS.test"), Backend: newFakeBackend(wild.addr).Backend, BackendName: "wild"},
		{SNI: hostname.MustParsePattern("mail.test"), ALPN: []string{"imap", "pop3"}, Backend: newFakeBackend(imap.addr).Backend, BackendName: "imap"},
		{SNI: hostname.MustParsePattern("mail.test"), Backend: newFakeBackend(mail.addr).Backend, BackendName: "mail"},
		{Backend: newFakeBackend(def.addr).Backend, BackendName: "default"},
	})
	addr := startTCP(t, &TCP{Frontend: "sni", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: func() *Table { return tab }, Log: log})

	for _, c := range []struct {
		name string
		alpn []string
		want *tlsServer
		line string
	}{
		{"one.pass.test", nil, one, "one "},
		{"ONE.pass.test", nil, one, "one "},
		{"x.pass.test", nil, wild, "wild "},
		{"a.b.pass.test", nil, wild, "wild "},
		{"mail.test", []string{"imap"}, imap, "imap imap"},
		{"mail.test", []string{"h2", "http/1.1"}, mail, "mail h2"},
		{"mail.test", nil, mail, "mail "},
		{"other.test", nil, def, "default "},
	} {
		conn, line, err := tlsDial(t, addr, c.name, c.alpn, c.want.cert)
		if err != nil {
			t.Errorf("%s %v: %v", c.name, c.alpn, err)
			continue
		}
		if line != c.line {
			t.Errorf("%s %v: server said %q, want %q", c.name, c.alpn, line, c.line)
		}
		// The rest of the connection is relayed too.
		io.WriteString(conn, "ping")
		b := make([]byte, 4)
		if _, err := io.ReadFull(conn, b); err != nil || string(b) != "ping" {
			t.Errorf("%s: echo %q, %v", c.name, b, err)
		}
		conn.Close()
	}

	// A client that is not TLS goes to the route without SNI, every byte
	// of it.
	c := dial(t, addr)
	const req = "GET / HTTP/1.0\r\n\r\n"
	io.WriteString(c, req)
	c.CloseWrite()
	if b, err := io.ReadAll(c); err != nil || string(b) != "default plain\n"+req {
		t.Errorf("a plain-text client got %q, %v", b, err)
	}
	if w := logLines(logs, "level=WARN"); len(w) != 0 {
		t.Errorf("warnings:\n%s", strings.Join(w, ""))
	}
}

func TestTCPSNINoDefault(t *testing.T) {
	one := startTLSServer(t, "one", nil, "one.pass.test")
	log, logs := testLog()
	tab := NewTable([]Route{{SNI: hostname.MustParsePattern("one.pass.test"), Backend: newFakeBackend(one.addr).Backend, BackendName: "one"}})
	addr := startTCP(t, &TCP{Frontend: "sni", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: func() *Table { return tab }, Log: log})

	if _, _, err := tlsDial(t, addr, "two.pass.test", nil, one.cert); err == nil {
		t.Error("a name without a route was passed through")
	}
	c := dial(t, addr)
	io.WriteString(c, "SSH-2.0-OpenSSH\r\n")
	if n, err := c.Read(make([]byte, 1)); n != 0 || (err != io.EOF && !isReset(err)) {
		t.Errorf("a client without TLS: read %d bytes, error %v; want the connection closed", n, err)
	}
	waitFor(t, "two log lines", func() bool { return len(logLines(logs, `msg="closing connection: no route matches"`)) == 2 })
	if got := logLines(logs, "level=WARN", "sni=two.pass.test", "tls=true"); len(got) != 1 {
		t.Errorf("no warning naming two.pass.test:\n%s", logs)
	}
	if got := logLines(logs, "level=WARN", "tls=false", "client="+c.LocalAddr().String()); len(got) != 1 {
		t.Errorf("no warning naming the client without TLS:\n%s", logs)
	}
}

func TestTCPMalformedHello(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	junk := make([]byte, 256)
	for i := range junk {
		junk[i] = byte(rng.Uint32())
	}
	// A record of 256 bytes holding a client_hello of 252 bytes of junk.
	bad := append([]byte{22, 3, 1, 1, 0, 1, 0, 0, 252}, junk[4:]...)
	// A record longer than TLS allows.
	long := append([]byte{22, 3, 1, 0x48, 0x01}, junk...)
	// A handshake message that is not a ClientHello.
	notHello := append([]byte{22, 3, 1, 1, 0, 2, 0, 0, 252}, junk[4:]...)

	srv := startTLSServer(t, "one", nil, "one.test")
	for _, c := range []struct {
		name  string
		bytes []byte
	}{{"junk", bad}, {"oversized record", long}, {"server hello", notHello}} {
		t.Run(c.name, func(t *testing.T) {
			b := newFakeBackend(srv.addr)
			log, logs := testLog()
			tab := NewTable([]Route{{SNI: hostname.MustParsePattern("one.test"), Backend: b.Backend, BackendName: "one"}, {Backend: b.Backend, BackendName: "default"}})
			addr := startTCP(t, &TCP{Frontend: "bad", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: func() *Table { return tab }, Log: log})
			conn := dial(t, addr)
			conn.Write(c.bytes)
			if n, err := conn.Read(make([]byte, 1)); n != 0 || (err != io.EOF && !isReset(err)) {
				t.Errorf("read %d bytes, error %v; want the connection closed", n, err)
			}
			waitFor(t, "a log line", func() bool { return strings.Contains(logs.String(), "closing connection") })
			lines := logLines(logs, "level=WARN", "frontend=bad", "client="+conn.LocalAddr().String(), "malformed")
			if len(lines) != 1 || len(logLines(logs, "closing connection")) != 1 {
				t.Errorf("want one warning naming the frontend and the client:\n%s", logs)
			}
			if b.picked() {
				t.Error("a server was picked")
			}
		})
	}
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func TestTCPHelloTimeout(t *testing.T) {
	srv := startTLSServer(t, "one", nil, "one.test")
	log, logs := testLog()
	tab := NewTable([]Route{{SNI: hostname.MustParsePattern("one.test"), Backend: newFakeBackend(srv.addr).Backend, BackendName: "one"}})
	addr := startTCP(t, &TCP{Frontend: "slow", IdleTimeout: testTCPIdleTimeout, Table: func() *Table { return tab }, Log: log, HeaderTimeout: 200 * time.Millisecond})
	c := dial(t, addr)
	c.Write([]byte{22, 3, 1}) // and then nothing
	start := time.Now()
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("read %d bytes, error %v; want EOF", n, err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("closed after %v, before the header timeout", d)
	}
	waitFor(t, "a log line", func() bool {
		return len(logLines(logs, "level=INFO", "within the header timeout", "client="+c.LocalAddr().String())) == 1
	})
}

func TestTCPReloadAppliesToNewConnections(t *testing.T) {
	var hits [2]atomic.Int64
	b1, b2 := newFakeBackend(serve(t, countingEcho(&hits[0]))), newFakeBackend(serve(t, countingEcho(&hits[1])))
	var cur atomic.Pointer[Table]
	cur.Store(NewTable([]Route{{Backend: b1.Backend}}))
	log, _ := testLog()
	addr := startTCP(t, &TCP{Frontend: "reload", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: cur.Load, Log: log})

	old := dial(t, addr)
	io.WriteString(old, "a")
	io.ReadFull(old, make([]byte, 1))
	cur.Store(NewTable([]Route{{Backend: b2.Backend}}))
	c := dial(t, addr)
	if _, n, err := roundTrip(c, []byte("b")); err != nil || n != 1 {
		t.Fatalf("new connection: %d bytes, %v", n, err)
	}
	if _, n, err := roundTrip(old, []byte("c")); err != nil || n != 1 {
		t.Fatalf("old connection after the reload: %d bytes, %v", n, err)
	}
	if hits[0].Load() != 1 || hits[1].Load() != 1 {
		t.Errorf("connections per backend %d and %d, want 1 and 1", hits[0].Load(), hits[1].Load())
	}
}

func TestTCPIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	newProxy := func(t *testing.T, handle func(net.Conn)) (string, *testBackend, *TCP) {
		b := newFakeBackend(serve(t, handle))
		log, _ := testLog()
		p := &TCP{Frontend: "idle", HeaderTimeout: testHeaderTimeout, Table: singleTable(b), Log: log, IdleTimeout: idle}
		return startTCP(t, p), b, p
	}

	t.Run("idle connection closed", func(t *testing.T) {
		addr, b, _ := newProxy(t, echo)
		c := dial(t, addr)
		io.WriteString(c, "x")
		io.ReadFull(c, make([]byte, 1))
		last := time.Now()
		n, err := c.Read(make([]byte, 1))
		if n != 0 || err != io.EOF {
			t.Fatalf("read %d bytes, error %v; want EOF at the idle timeout", n, err)
		}
		if d := time.Since(last); d < idle-50*time.Millisecond || d > testutil.Scaled(idle*3) {
			t.Errorf("closed %v after the last byte, want about %v", d, idle)
		}
		b.waitInflight(t)
	})

	t.Run("upload longer than the timeout", func(t *testing.T) {
		addr, _, _ := newProxy(t, func(c net.Conn) { io.Copy(io.Discard, c); io.WriteString(c, "done") })
		c := dial(t, addr)
		for range int(4 * idle / (50 * time.Millisecond)) {
			if _, err := io.WriteString(c, "x"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		c.CloseWrite()
		if b, err := io.ReadAll(c); err != nil || string(b) != "done" {
			t.Fatalf("after a slow upload the server said %q, %v; want done", b, err)
		}
	})

	t.Run("download longer than the timeout", func(t *testing.T) {
		const ticks = int(4 * idle / (50 * time.Millisecond))
		addr, _, _ := newProxy(t, func(c net.Conn) {
			for range ticks {
				if _, err := io.WriteString(c, "x"); err != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
		c := dial(t, addr)
		b, err := io.ReadAll(c)
		if err != nil || len(b) != ticks {
			t.Fatalf("slow download: %d of %d bytes, %v", len(b), ticks, err)
		}
	})
}

func TestTCPShutdown(t *testing.T) {
	t.Run("waits, then closes at the deadline", func(t *testing.T) {
		b := newFakeBackend(serve(t, echo))
		log, logs := testLog()
		p := &TCP{Frontend: "stop", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: singleTable(b), Log: log}
		ln := listen(t)
		go acceptLoop(p, nil).Serve(ln)
		c := dial(t, ln.Addr().String())
		io.WriteString(c, "x")
		io.ReadFull(c, make([]byte, 1))
		ln.Close()

		const grace = 300 * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		start := time.Now()
		err := p.Shutdown(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown: %v, want the context's error", err)
		}
		if d := time.Since(start); d < grace-20*time.Millisecond {
			t.Errorf("Shutdown returned after %v, before the grace of %v", d, grace)
		}
		if n, err := c.Read(make([]byte, 1)); n != 0 || (err != io.EOF && !isReset(err)) {
			t.Errorf("after Shutdown: read %d bytes, %v; want the connection closed", n, err)
		}
		b.waitInflight(t)
		waitFor(t, "the end logged", func() bool { return len(logLines(logs, "reason=shutdown")) == 1 })
	})

	t.Run("returns when the connections end", func(t *testing.T) {
		b := newFakeBackend(serve(t, echo))
		log, _ := testLog()
		p := &TCP{Frontend: "stop", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: singleTable(b), Log: log}
		ln := listen(t)
		go acceptLoop(p, nil).Serve(ln)
		c := dial(t, ln.Addr().String())
		io.WriteString(c, "x")
		io.ReadFull(c, make([]byte, 1))
		ln.Close()

		done := make(chan error, 1)
		go func() { done <- p.Shutdown(context.Background()) }()
		select {
		case err := <-done:
			t.Fatalf("Shutdown returned %v with a connection open", err)
		case <-time.After(100 * time.Millisecond):
		}
		// The connection still works while Shutdown waits.
		if _, n, err := roundTrip(c, []byte("yz")); err != nil || n != 2 {
			t.Fatalf("during Shutdown: %d bytes, %v", n, err)
		}
		c.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		case <-time.After(bound()):
			t.Fatal("Shutdown did not return after the last connection ended")
		}
	})

	t.Run("no connections", func(t *testing.T) {
		p := &TCP{HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: singleTable(newFakeBackend())}
		if err := p.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
}
