package l4

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/hostname"
	"github.com/portcullis/portcullis/internal/proxyproto"
	"github.com/portcullis/portcullis/internal/upstream"
)

var (
	loopback, _  = proxyproto.ParseTrusted([]string{"127.0.0.0/8"})
	elsewhere, _ = proxyproto.ParseTrusted([]string{"10.0.0.0/8"})

	// The addresses in the tests' PROXY headers.
	headerSrc = &net.TCPAddr{IP: net.ParseIP("192.0.2.7").To4(), Port: 4242}
	headerDst = &net.TCPAddr{IP: net.ParseIP("198.51.100.1").To4(), Port: 443}
)

func mustHeader(t testing.TB, version int, src, dst net.Addr) []byte {
	t.Helper()
	h, err := proxyproto.Header(version, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// headerEcho reads a header of n bytes, sends it on got, then echoes.
func headerEcho(n int, got chan<- []byte) func(net.Conn) {
	return func(c net.Conn) {
		c.SetDeadline(time.Now().Add(bound()))
		h := make([]byte, n)
		k, _ := io.ReadFull(c, h)
		got <- h[:k]
		echo(c)
	}
}

// hashedTo returns a backend balanced by the hash of the client address
// (send_proxy version sendProxy) whose first server is live and the
// others refusing connections, such that the hash of source picks live and that of other
// picks a dead server.
func hashedTo(t *testing.T, source, other string, sendProxy int, live string) *testBackend {
	t.Helper()
	opt := backendOptions{Options: upstream.Options{Algorithm: balance.Hash, HashKey: upstream.HashKey{Kind: upstream.HashSource}}, sendProxy: sendProxy}
	pick := func(b *testBackend, ip string) *balance.Member {
		m, err := b.Acquire(context.Background(), balance.HashString(ip), nil)
		if err != nil {
			t.Fatal(err)
		}
		b.Release(m)
		return m
	}
	// Low ports of the loopback address refuse connections at once; the
	// servers' IDs, which the hash mixes in, change on each try.
	dead := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", 1+i) }
	for k := range 100 {
		opt.idPrefix = fmt.Sprint(k, "/")
		b := newBackend(opt, live, dead(0), dead(1), dead(2))
		if pick(b, source) == b.members[0] && pick(b, other) != b.members[0] {
			return b
		}
	}
	t.Fatal("no set of servers where only the hash of the source picks the live one")
	return nil
}

func TestTCPAcceptProxySendProxy(t *testing.T) {
	for _, c := range []struct {
		name    string
		in, out int
		want    []byte
	}{
		{"v2 in, v1 out", 2, 1, []byte("PROXY TCP4 192.0.2.7 198.51.100.1 4242 443\r\n")},
		{"v1 in, v2 out", 1, 2, mustHeader(t, 2, headerSrc, headerDst)},
		{"v2 in, v2 out", 2, 2, mustHeader(t, 2, headerSrc, headerDst)},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := make(chan []byte, 1)
			b := hashedTo(t, "192.0.2.7", "127.0.0.1", c.out, serve(t, headerEcho(len(c.want), got)))
			log, logs := testLog()
			addr := startTCP(t, &TCP{Frontend: "pp", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: singleTable(b), Log: log, AcceptProxy: true, Trusted: loopback})

			conn := dial(t, addr)
			// The header and the first data in one segment: the bytes
			// read past the header must follow it to the server.
			msg := append(mustHeader(t, c.in, headerSrc, headerDst), "hello"...)
			conn.Write(msg)
			back := make([]byte, 5)
			if _, err := io.ReadFull(conn, back); err != nil || string(back) != "hello" {
				t.Fatalf("echo %q, %v", back, err)
			}
			if h := <-got; !bytes.Equal(h, c.want) {
				t.Errorf("the server got the header %q, want %q", h, c.want)
			}
			// More data, then the end, after the header phase.
			if _, n, err := roundTrip(conn, []byte(" world")); err != nil || n != 6 {
				t.Errorf("then %d bytes back, %v", n, err)
			}
			// Only the hash of the header's source address picks the
			// server that answered.
			if _, oks := b.observations(b.members[0].State.Address); oks != 1 {
				t.Errorf("the live server was picked %d times, want once (by the hash of the header's source address)", oks)
			}
			b.waitInflight(t)
			waitFor(t, "the end logged", func() bool { return len(logLines(logs, "connection closed", "client=192.0.2.7:4242")) == 1 })
		})
	}
}

func TestTCPAcceptProxyServerSpeaksFirst(t *testing.T) {
	greeter := func(c net.Conn) {
		io.WriteString(c, "220 ready\r\n")
		echo(c)
	}
	for _, trusted := range []bool{true, false} {
		t.Run(map[bool]string{true: "trusted", false: "untrusted"}[trusted], func(t *testing.T) {
			b := newFakeBackend(serve(t, greeter))
			log, _ := testLog()
			p := &TCP{Frontend: "smtp", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: singleTable(b), Log: log, AcceptProxy: true, Trusted: elsewhere}
			if trusted {
				p.Trusted = loopback
			}
			conn := dial(t, startTCP(t, p))
			if trusted {
				conn.Write(mustHeader(t, 1, headerSrc, headerDst))
			}
			line := make([]byte, len("220 ready\r\n"))
			if _, err := io.ReadFull(conn, line); err != nil {
				t.Fatalf("the greeting did not come before the client spoke: %v", err)
			}
			if _, n, err := roundTrip(conn, []byte("EHLO x\r\n")); err != nil || n != 8 {
				t.Errorf("%d bytes back, %v", n, err)
			}
		})
	}
}

func TestTCPAcceptProxyRefused(t *testing.T) {
	v1 := []byte("PROXY TCP4 192.0.2.7 198.51.100.1 4242 443\r\nhello")
	for _, c := range []struct {
		name      string
		trusted   proxyproto.Trusted
		sni       bool
		send      []byte
		wantLog   string
		connected bool // the server is connected before the header is seen
	}{
		{"untrusted header", elsewhere, false, v1, "trusted_proxies", true},
		{"untrusted header, sni routes", elsewhere, true, v1, "trusted_proxies", false},
		{"trusted peer without header", loopback, false, []byte("hello"), "no valid PROXY header", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			received := make(chan []byte, 4)
			b := newFakeBackend(serve(t, func(c net.Conn) {
				c.SetDeadline(time.Now().Add(bound()))
				got, _ := io.ReadAll(c)
				received <- got
			}))
			log, logs := testLog()
			routes := []Route{{Backend: b.Backend, BackendName: "b"}}
			if c.sni {
				routes = append([]Route{{SNI: hostname.MustParsePattern("x.test"), Backend: b.Backend}}, routes...)
			}
			tab := NewTable(routes)
			addr := startTCP(t, &TCP{Frontend: "pp", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: func() *Table { return tab }, Log: log, AcceptProxy: true, Trusted: c.trusted})
			conn := dial(t, addr)
			conn.Write(c.send)
			if n, err := conn.Read(make([]byte, 1)); n != 0 || (err != io.EOF && !isReset(err)) {
				t.Errorf("read %d bytes, error %v; want the connection closed", n, err)
			}
			waitFor(t, "a warning", func() bool { return len(logLines(logs, "level=WARN", c.wantLog)) == 1 })
			if c.connected {
				if got := <-received; len(got) != 0 {
					t.Errorf("the server received %q", got)
				}
			} else if b.picked() {
				t.Error("a server was picked")
			}
			b.waitInflight(t)
			if strings.Count(logs.String(), "level=WARN") != 1 {
				t.Errorf("want one warning:\n%s", logs)
			}
		})
	}
}
