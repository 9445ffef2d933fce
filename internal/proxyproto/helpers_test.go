package proxyproto

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
)

// loopback trusts the peers of the tests' sockets.
var loopback = mustTrusted("127.0.0.0/8", "::1/128")

// nobody trusts no peer.
var nobody Trusted

func mustTrusted(prefixes ...string) Trusted {
	t, err := ParseTrusted(prefixes)
	if err != nil {
		panic(err)
	}
	return t
}

// bound is how long a test waits for something that should happen at once;
// it only turns a hang into a failure.
func bound() time.Duration { return testutil.Scaled(5 * time.Second) }

// pair returns the two ends of a TCP connection over 127.0.0.1, closed at
// the end of the test.
func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := l.Accept()
		ch <- res{c, err}
	}()
	client, err = net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { client.Close(); r.c.Close() })
	return client, r.c
}

// readN reads exactly n bytes from r, failing the test after bound().
func readN(t *testing.T, c net.Conn, r io.Reader, n int) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(bound()))
	defer c.SetReadDeadline(time.Time{})
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

// writeSlowly writes b one byte per write, pausing between writes so that
// each byte arrives in its own segment.
func writeSlowly(c net.Conn, b []byte) error {
	for i := range b {
		if _, err := c.Write(b[i : i+1]); err != nil {
			return err
		}
		time.Sleep(2 * time.Millisecond)
	}
	return nil
}

// payload returns n bytes of recognizable data.
func payload(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		b.WriteString(strings.Repeat(string(rune('a'+i%26)), 97))
		b.WriteByte('\n')
	}
	return b.Bytes()[:n]
}

func tcp(s string) *net.TCPAddr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		panic(err)
	}
	return a
}

// stubConn is a net.Conn that reads from a byte slice, at most chunk bytes
// per Read (0: all), then io.EOF; it never blocks. Writes are discarded.
type stubConn struct {
	data   []byte
	chunk  int
	remote net.Addr
}

func (s *stubConn) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	if s.chunk > 0 && len(p) > s.chunk {
		p = p[:s.chunk]
	}
	n := copy(p, s.data)
	s.data = s.data[n:]
	return n, nil
}

func (s *stubConn) Write(p []byte) (int, error)      { return len(p), nil }
func (s *stubConn) Close() error                     { return nil }
func (s *stubConn) LocalAddr() net.Addr              { return tcp("127.0.0.1:80") }
func (s *stubConn) RemoteAddr() net.Addr             { return s.remote }
func (s *stubConn) SetDeadline(time.Time) error      { return nil }
func (s *stubConn) SetReadDeadline(time.Time) error  { return nil }
func (s *stubConn) SetWriteDeadline(time.Time) error { return nil }
