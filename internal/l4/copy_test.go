package l4

import (
	"io"
	"net"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/proxyproto"
)

// pair returns both ends of a TCP connection over 127.0.0.1.
func pair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln := listen(t)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client = dial(t, ln.Addr().String())
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { s.Close() })
	return client, s.(*net.TCPConn)
}

// TestClientSourceIsTheSocket checks the fast path: what the client to
// server copy reads from is the *net.TCPConn itself, so that io.Copy
// splices, also behind the PROXY protocol wrapper, and no byte the
// wrapper buffered is lost or reordered.
func TestClientSourceIsTheSocket(t *testing.T) {
	for _, c := range []struct {
		name    string
		proxy   bool
		trusted proxyproto.Trusted
		send    func(t *testing.T, c net.Conn)
	}{
		{"plain", false, nil, func(t *testing.T, c net.Conn) { io.WriteString(c, "abc") }},
		{"trusted, bytes after the header", true, loopback, func(t *testing.T, c net.Conn) {
			c.Write(append(mustHeader(t, 2, headerSrc, headerDst), "abc"...))
		}},
		{"untrusted", true, elsewhere, func(t *testing.T, c net.Conn) { io.WriteString(c, "abc") }},
	} {
		t.Run(c.name, func(t *testing.T) {
			client, server := pair(t)
			c.send(t, client)
			var accepted net.Conn = server
			if c.proxy {
				pc, err := proxyproto.Accept(server, c.trusted, bound())
				if err != nil {
					t.Fatal(err)
				}
				accepted = pc
			}
			first, src, err := clientSource(accepted)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := src.(*net.TCPConn); !ok {
				t.Fatalf("the copy reads from a %T, want *net.TCPConn", src)
			}
			io.WriteString(client, "def")
			client.CloseWrite()
			rest, err := io.ReadAll(src)
			if got := string(first) + string(rest); err != nil || got != "abcdef" {
				t.Errorf("read %q, %v; want abcdef", got, err)
			}
		})
	}
}

func TestPipeUsesTCPInfo(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("TCP_INFO is read on Linux only")
	}
	a, _ := pair(t)
	b, _ := pair(t)
	p := newPipe(a, a, b, time.Minute)
	if p.counted || p.probe == nil {
		t.Fatal("a pipe between TCP sockets counts bytes itself instead of reading TCP_INFO (no splice)")
	}
	before, ok := p.progress()
	if !ok {
		t.Fatal("no TCP_INFO")
	}
	// Bytes the kernel acknowledges move the counter, whoever reads them.
	io.WriteString(a, "hello")
	waitFor(t, "progress", func() bool { n, _ := p.progress(); return n > before })
}

// TestTCPUnixListener runs the proxy on a unix socket: no TCP_INFO on the
// client side, so the pipe counts bytes; the idle timeout works the same.
func TestTCPUnixListener(t *testing.T) {
	const idle = 300 * time.Millisecond
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "l4.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	b := newFakeBackend(serve(t, echo))
	log, _ := testLog()
	p := &TCP{Frontend: "unix", HeaderTimeout: testHeaderTimeout, Table: singleTable(b), Log: log, IdleTimeout: idle}
	go acceptLoop(p, nil).Serve(ln)

	c, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(bound()))
	// Active for longer than the timeout.
	buf := make([]byte, 1)
	for range int(4 * idle / (50 * time.Millisecond)) {
		if _, err := io.WriteString(c, "x"); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("an active connection was cut: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Then idle.
	last := time.Now()
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("read %d bytes, %v; want EOF at the idle timeout", n, err)
	}
	if d := time.Since(last); d < idle-50*time.Millisecond {
		t.Errorf("closed %v after the last byte, before the idle timeout", d)
	}
	b.waitInflight(t)
}
