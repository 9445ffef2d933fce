package proxyproto

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	pp "github.com/pires/go-proxyproto"
)

func libHeader(t *testing.T, h *pp.Header) []byte {
	t.Helper()
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ourHeader(t *testing.T, version int, src, dst net.Addr) []byte {
	t.Helper()
	b, err := Header(version, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAcceptTrusted(t *testing.T) {
	src4, dst4 := tcp("192.0.2.1:1234"), tcp("198.51.100.2:443")
	src6, dst6 := tcp("[2001:db8::1]:50000"), tcp("[2001:db8::2]:8443")
	unixAddr := &net.UnixAddr{Name: "/run/lb.sock", Net: "unix"}

	withTLV := pp.HeaderProxyFromAddrs(2, src4, dst4)
	if err := withTLV.SetTLVs([]pp.TLV{{Type: pp.PP2_TYPE_AUTHORITY, Value: []byte("example.com")}}); err != nil {
		t.Fatal(err)
	}
	localV4 := pp.HeaderProxyFromAddrs(2, src4, dst4)
	localV4.Command = pp.LOCAL
	udp := pp.HeaderProxyFromAddrs(2, &net.UDPAddr{IP: src4.IP, Port: 53}, &net.UDPAddr{IP: dst4.IP, Port: 53})

	for _, tc := range []struct {
		name     string
		header   []byte
		src, dst net.Addr // nil: the socket's own addresses
	}{
		{"lib v1 tcp4", libHeader(t, pp.HeaderProxyFromAddrs(1, src4, dst4)), src4, dst4},
		{"lib v2 tcp4", libHeader(t, pp.HeaderProxyFromAddrs(2, src4, dst4)), src4, dst4},
		{"lib v1 tcp6", libHeader(t, pp.HeaderProxyFromAddrs(1, src6, dst6)), src6, dst6},
		{"lib v2 tcp6", libHeader(t, pp.HeaderProxyFromAddrs(2, src6, dst6)), src6, dst6},
		{"lib v1 unknown", []byte("PROXY UNKNOWN\r\n"), nil, nil},
		{"lib v1 unknown with addresses", []byte("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), nil, nil},
		{"lib v2 local", libHeader(t, &pp.Header{Version: 2, Command: pp.LOCAL, TransportProtocol: pp.UNSPEC}), nil, nil},
		{"lib v2 local with tcp4 addresses", libHeader(t, localV4), nil, nil},
		{"lib v2 udp4", libHeader(t, udp), nil, nil},
		{"lib v2 tcp4 with TLV", libHeader(t, withTLV), src4, dst4},
		{"our v1 tcp4", ourHeader(t, 1, src4, dst4), src4, dst4},
		{"our v2 tcp4", ourHeader(t, 2, src4, dst4), src4, dst4},
		{"our v1 tcp6", ourHeader(t, 1, src6, dst6), src6, dst6},
		{"our v2 tcp6", ourHeader(t, 2, src6, dst6), src6, dst6},
		{"our v1 local", ourHeader(t, 1, unixAddr, unixAddr), nil, nil},
		{"our v2 local", ourHeader(t, 2, unixAddr, unixAddr), nil, nil},
	} {
		for _, mode := range []string{"read", "take", "copy"} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				client, server := pair(t)
				first := []byte("hello after the header\n")
				if _, err := client.Write(append(append([]byte(nil), tc.header...), first...)); err != nil {
					t.Fatal(err)
				}
				pc, err := Accept(server, loopback, bound())
				if err != nil {
					t.Fatal(err)
				}
				wantSrc, wantDst := tc.src, tc.dst
				if wantSrc == nil {
					wantSrc, wantDst = server.RemoteAddr(), server.LocalAddr()
				}
				if got := pc.RemoteAddr().String(); got != wantSrc.String() {
					t.Errorf("RemoteAddr = %s, want %s", got, wantSrc)
				}
				if got := pc.LocalAddr().String(); got != wantDst.String() {
					t.Errorf("LocalAddr = %s, want %s", got, wantDst)
				}
				if got := pc.Peer().String(); got != client.LocalAddr().String() {
					t.Errorf("Peer = %s, want %s", got, client.LocalAddr())
				}
				if pc.Header() == nil {
					t.Fatal("Header() = nil")
				}

				// The rest of the stream comes in later segments.
				rest := payload(256 << 10)
				go func() {
					client.Write(rest)
					client.(*net.TCPConn).CloseWrite()
				}()
				want := append(append([]byte(nil), first...), rest...)
				server.SetReadDeadline(time.Now().Add(bound()))
				var got []byte
				switch mode {
				case "read":
					got, err = io.ReadAll(pc)
				case "take":
					if n := pc.Buffered(); n != len(first) {
						t.Errorf("Buffered() = %d, want %d", n, len(first))
					}
					got = pc.TakeBuffered()
					if raw := pc.Raw(); raw != server {
						t.Fatalf("Raw() = %T after TakeBuffered, want the accepted *net.TCPConn", raw)
					}
					if b := pc.TakeBuffered(); b != nil {
						t.Errorf("second TakeBuffered() = %q, want nil", b)
					}
					var tail []byte
					tail, err = io.ReadAll(pc.Raw())
					got = append(got, tail...)
				case "copy":
					var buf bytes.Buffer
					_, err = io.Copy(&buf, pc)
					got = buf.Bytes()
				}
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("read %d bytes, want %d; first %q", len(got), len(want), got[:min(len(got), 40)])
				}
			})
		}
	}
}

// A header split over many packets is complete within the timeout.
func TestAcceptTrustedSplitHeader(t *testing.T) {
	for _, v := range []int{1, 2} {
		client, server := pair(t)
		src, dst := tcp("203.0.113.9:40000"), tcp("203.0.113.10:80")
		h := append(ourHeader(t, v, src, dst), "data"...)
		go writeSlowly(client, h)
		pc, err := Accept(server, loopback, bound())
		if err != nil {
			t.Fatalf("v%d: %v", v, err)
		}
		if pc.RemoteAddr().String() != src.String() {
			t.Errorf("v%d: RemoteAddr = %s, want %s", v, pc.RemoteAddr(), src)
		}
		if got := readN(t, server, pc, 4); string(got) != "data" {
			t.Errorf("v%d: read %q", v, got)
		}
	}
}

func TestAcceptClearsDeadline(t *testing.T) {
	client, server := pair(t)
	client.Write(ourHeader(t, 2, tcp("192.0.2.1:1"), tcp("192.0.2.2:2")))
	timeout := 50 * time.Millisecond
	pc, err := Accept(server, loopback, timeout)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * timeout)
	client.Write([]byte("late"))
	b := make([]byte, 4)
	if _, err := io.ReadFull(pc, b); err != nil {
		t.Fatalf("read after the header timeout: %v (deadline not cleared?)", err)
	}
}

func TestAcceptTrustedErrors(t *testing.T) {
	v2 := func(rest ...byte) []byte { return append(append([]byte(nil), pp.SIGV2...), rest...) }
	for _, tc := range []struct {
		name    string
		send    []byte
		close   bool // close the client after sending
		want    error
		timeout bool // wraps os.ErrDeadlineExceeded
		says    string
	}{
		{name: "http instead", send: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), want: ErrNoHeader, says: `"GET / HTTP/1"`},
		{name: "one other byte", send: []byte("G"), want: ErrNoHeader, says: "send-proxy"},
		{name: "PROXY without space", send: []byte("PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n"), want: ErrNoHeader},
		{name: "closed at once", close: true, want: ErrNoHeader, says: "closed"},
		{name: "closed in signature", send: []byte("PRO"), close: true, want: ErrNoHeader, says: "closed"},
		{name: "nothing", want: ErrNoHeader, timeout: true, says: "nothing received"},
		{name: "slow signature", send: []byte("\r\n\r\n"), want: ErrNoHeader, timeout: true},
		{name: "slow v1 line", send: []byte("PROXY TCP4 192.0.2.1 "), want: ErrBadHeader, timeout: true, says: "v1"},
		{name: "slow v2 addresses", send: v2(0x21, 0x11, 0, 12, 192, 0), want: ErrBadHeader, timeout: true, says: "v2"},
		{name: "v1 garbage", send: []byte("PROXY TCP4 1.2.3\r\n"), want: ErrBadHeader},
		{name: "v1 bad port", send: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n"), want: ErrBadHeader},
		{name: "v1 LF only", send: []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), want: ErrBadHeader},
		{name: "v1 too long", send: []byte("PROXY " + strings.Repeat("x", 200)), want: ErrBadHeader, says: "107"},
		{name: "v1 truncated", send: []byte("PROXY TCP4 1.2.3.4"), close: true, want: ErrBadHeader, says: "truncated"},
		{name: "v2 bad version", send: v2(0x31, 0x11, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2), want: ErrBadHeader},
		{name: "v2 short length", send: v2(0x21, 0x11, 0, 5, 1, 2, 3, 4, 5), want: ErrBadHeader},
		{name: "v2 bad family", send: v2(0x21, 0x13, 0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2), want: ErrBadHeader},
		{name: "v2 proxy unspec", send: v2(0x21, 0x00, 0, 0), want: ErrBadHeader},
		{name: "v2 too long", send: v2(0x21, 0x11, 0xff, 0xff), want: ErrBadHeader, says: "65535"},
		{name: "v2 truncated", send: v2(0x21, 0x11, 0, 12, 1, 2), close: true, want: ErrBadHeader, says: "truncated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := pair(t)
			if len(tc.send) > 0 {
				if _, err := client.Write(tc.send); err != nil {
					t.Fatal(err)
				}
			}
			if tc.close {
				client.Close()
			}
			timeout := bound()
			if tc.timeout {
				timeout = 100 * time.Millisecond
			}
			done := make(chan struct{})
			var pc *Conn
			var err error
			go func() {
				pc, err = Accept(server, loopback, timeout)
				close(done)
			}()
			select {
			case <-done:
			case <-time.After(timeout + bound()):
				t.Fatal("Accept did not return")
			}
			if err == nil {
				t.Fatalf("Accept succeeded with header %+v", pc.Header())
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("error %q does not wrap %q", err, tc.want)
			}
			if got := errors.Is(err, os.ErrDeadlineExceeded); got != tc.timeout {
				t.Errorf("error %q: wraps os.ErrDeadlineExceeded = %v, want %v", err, got, tc.timeout)
			}
			if peer := client.LocalAddr().String(); !strings.Contains(err.Error(), peer) {
				t.Errorf("error %q does not name the peer %s", err, peer)
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not say %q", err, tc.says)
			}
		})
	}
}

func TestAcceptUntrustedHeader(t *testing.T) {
	src, dst := tcp("192.0.2.1:1234"), tcp("192.0.2.2:80")
	v1 := append(ourHeader(t, 1, src, dst), "GET / HTTP/1.0\r\n\r\n"...)
	v2 := append(ourHeader(t, 2, src, dst), "GET / HTTP/1.0\r\n\r\n"...)
	for _, tc := range []struct {
		name   string
		writes func(c net.Conn) error
	}{
		{"v1 in one write", func(c net.Conn) error { _, err := c.Write(v1); return err }},
		{"v2 in one write", func(c net.Conn) error { _, err := c.Write(v2); return err }},
		{"v1 byte by byte", func(c net.Conn) error { return writeSlowly(c, v1) }},
		{"v2 byte by byte", func(c net.Conn) error { return writeSlowly(c, v2) }},
		{"PRO then XY", func(c net.Conn) error {
			c.Write([]byte("PRO"))
			time.Sleep(20 * time.Millisecond)
			_, err := c.Write([]byte("XY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"))
			return err
		}},
		{"bare signature", func(c net.Conn) error { _, err := c.Write([]byte("PROXY ")); return err }},
		{"bare v2 signature", func(c net.Conn) error { _, err := c.Write(pp.SIGV2); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := pair(t)
			pc, err := Accept(server, nobody, bound())
			if err != nil {
				t.Fatal(err)
			}
			if pc.Header() != nil {
				t.Fatal("Header() != nil before anything was sent")
			}
			go tc.writes(client)
			server.SetReadDeadline(time.Now().Add(bound()))
			b := make([]byte, 64)
			n, err := pc.Read(b)
			if !errors.Is(err, ErrUntrustedHeader) {
				t.Fatalf("Read = %q, %v; want ErrUntrustedHeader", b[:n], err)
			}
			if n != 0 {
				t.Errorf("Read returned %d bytes with the error", n)
			}
			if peer := client.LocalAddr().String(); !strings.Contains(err.Error(), peer) {
				t.Errorf("error %q does not name the peer %s", err, peer)
			}
			// The refusal sticks, whichever way the stream is read.
			if _, err := pc.Read(b); !errors.Is(err, ErrUntrustedHeader) {
				t.Errorf("second Read: %v", err)
			}
			if err := pc.Verify(); !errors.Is(err, ErrUntrustedHeader) {
				t.Errorf("Verify: %v", err)
			}
			if _, err := io.Copy(io.Discard, pc); !errors.Is(err, ErrUntrustedHeader) {
				t.Errorf("io.Copy: %v", err)
			}
			if pc.Raw() != pc {
				t.Error("Raw() returned the underlying connection of a refused peer")
			}
			if b := pc.TakeBuffered(); b != nil {
				t.Errorf("TakeBuffered() = %q for a refused peer", b)
			}
		})
	}
}

func TestAcceptUntrustedData(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks []string // written with a pause between them; the client then waits
	}{
		{"http", []string{"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"}},
		{"P then OST", []string{"P", "OST /"}},
		{"PRO then XIMA", []string{"PRO", "XIMA"}},
		{"PROXY without space", []string{"PROXY", "\r\n"}},
		{"three bytes", []string{"GET"}},
		{"one byte", []string{"x"}},
		{"crlf then text", []string{"\r\n", "\r\n", "HELO"}},
		{"v2 signature but one", []string{"\r\n\r\n\x00\r\nQUI", "X\n"}},
		{"binary", []string{"\x00\x01\x02"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := pair(t)
			pc, err := Accept(server, nobody, bound())
			if err != nil {
				t.Fatal(err)
			}
			want := strings.Join(tc.chunks, "")
			go func() {
				for i, c := range tc.chunks {
					if i > 0 {
						time.Sleep(20 * time.Millisecond)
					}
					client.Write([]byte(c))
				}
			}()
			// The client does not close: every byte must come out without
			// waiting for more than it sent.
			if got := readN(t, server, pc, len(want)); string(got) != want {
				t.Fatalf("read %q, want %q", got, want)
			}
			if pc.RemoteAddr() != server.RemoteAddr() || pc.LocalAddr() != server.LocalAddr() {
				t.Errorf("addresses %s → %s, want the socket's", pc.RemoteAddr(), pc.LocalAddr())
			}
		})
	}
}

// A prefix of a signature followed by the end of the stream is data.
func TestAcceptUntrustedEOFInPrefix(t *testing.T) {
	client, server := pair(t)
	pc, _ := Accept(server, nobody, bound())
	client.Write([]byte("PRO"))
	client.Close()
	server.SetReadDeadline(time.Now().Add(bound()))
	got, err := io.ReadAll(pc)
	if err != nil || string(got) != "PRO" {
		t.Fatalf("ReadAll = %q, %v; want PRO", got, err)
	}
}

// The server speaks first: Accept reads nothing from an untrusted peer.
func TestAcceptUntrustedServerFirst(t *testing.T) {
	client, server := pair(t)
	done := make(chan *Conn, 1)
	go func() {
		pc, err := Accept(server, nobody, bound())
		if err != nil {
			t.Error(err)
		}
		done <- pc
	}()
	var pc *Conn
	select {
	case pc = <-done:
	case <-time.After(bound()):
		t.Fatal("Accept waited for the client to speak")
	}
	if pc == nil {
		t.FailNow()
	}
	if _, err := pc.Write([]byte("220 ready\r\n")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, client, client, 11); string(got) != "220 ready\r\n" {
		t.Fatalf("client read %q", got)
	}
	client.Write([]byte("EHLO x\r\n"))
	if got := readN(t, server, pc, 8); string(got) != "EHLO x\r\n" {
		t.Fatalf("server read %q", got)
	}
}

// Raw and TakeBuffered for an untrusted peer wait for the check.
func TestAcceptUntrustedRaw(t *testing.T) {
	client, server := pair(t)
	pc, _ := Accept(server, nobody, bound())
	if pc.Raw() != pc {
		t.Fatal("Raw() returned the underlying connection before the check")
	}
	if b := pc.TakeBuffered(); b != nil {
		t.Fatalf("TakeBuffered() = %q before the check", b)
	}
	client.Write([]byte("hello"))
	server.SetReadDeadline(time.Now().Add(bound()))
	if err := pc.Verify(); err != nil {
		t.Fatal(err)
	}
	if n := pc.Buffered(); n != 5 {
		t.Fatalf("Buffered() = %d after Verify, want 5", n)
	}
	if pc.Raw() != pc {
		t.Fatal("Raw() returned the underlying connection with bytes buffered")
	}
	if b := pc.TakeBuffered(); string(b) != "hello" {
		t.Fatalf("TakeBuffered() = %q", b)
	}
	if pc.Raw() != server {
		t.Fatal("Raw() is not the underlying connection after TakeBuffered")
	}
	client.Write([]byte("world"))
	if got := readN(t, server, pc.Raw(), 5); string(got) != "world" {
		t.Fatalf("read %q from Raw()", got)
	}
}

// io.Copy in both directions goes through WriteTo and ReadFrom and loses
// nothing.
func TestCopyBothWays(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		client, server := pair(t)
		bclient, bserver := pair(t) // the proxy's connection to a backend
		tr := nobody
		var first []byte
		if trusted {
			tr = loopback
			first = ourHeader(t, 2, tcp("192.0.2.1:1"), tcp("192.0.2.2:2"))
		}
		up := payload(300 << 10)
		go func() {
			client.Write(append(first, up...))
			client.(*net.TCPConn).CloseWrite()
		}()
		pc, err := Accept(server, tr, bound())
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			io.Copy(bclient, pc)
			bclient.(*net.TCPConn).CloseWrite()
		}()
		bserver.SetReadDeadline(time.Now().Add(bound()))
		got, err := io.ReadAll(bserver)
		if err != nil || !bytes.Equal(got, up) {
			t.Fatalf("trusted=%v: backend got %d bytes (%v), want %d", trusted, len(got), err, len(up))
		}

		down := payload(200 << 10)
		go func() {
			bserver.Write(down)
			bserver.(*net.TCPConn).CloseWrite()
		}()
		go func() {
			io.Copy(pc, bclient)
			server.(*net.TCPConn).CloseWrite()
		}()
		client.SetReadDeadline(time.Now().Add(bound()))
		got, err = io.ReadAll(client)
		if err != nil || !bytes.Equal(got, down) {
			t.Fatalf("trusted=%v: client got %d bytes (%v), want %d", trusted, len(got), err, len(down))
		}
	}
}

// A read deadline that passes during the check hands out no byte of a
// possible signature; the check resumes on the next Read.
func TestAcceptUntrustedTimeoutInPrefix(t *testing.T) {
	client, server := pair(t)
	pc, _ := Accept(server, nobody, bound())
	client.Write([]byte("PRO"))
	pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	b := make([]byte, 16)
	if n, err := pc.Read(b); !errors.Is(err, os.ErrDeadlineExceeded) || n != 0 {
		t.Fatalf("Read = %q, %v; want a timeout and no data", b[:n], err)
	}
	if pc.Buffered() != 0 || pc.Raw() != pc {
		t.Fatal("bytes of a pending check were released")
	}
	client.Write([]byte("XY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"))
	pc.SetReadDeadline(time.Now().Add(bound()))
	if _, err := pc.Read(b); !errors.Is(err, ErrUntrustedHeader) {
		t.Fatalf("Read after the timeout: %v, want ErrUntrustedHeader", err)
	}
}

func TestReadEmpty(t *testing.T) {
	_, server := pair(t)
	pc, _ := Accept(server, nobody, bound())
	if n, err := pc.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v", n, err)
	}
}
