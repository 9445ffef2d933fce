package proxyproto

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"testing"

	pp "github.com/pires/go-proxyproto"
)

func fuzzSeeds(f *testing.F) {
	src, dst := tcp("192.0.2.1:1234"), tcp("[2001:db8::2]:443")
	for _, h := range [][]byte{
		[]byte("PROXY TCP4 192.0.2.1 198.51.100.2 1234 443\r\nGET / HTTP/1.1\r\n\r\n"),
		[]byte("PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"),
		[]byte("PROXY UNKNOWN\r\nrest"),
		[]byte("PROXY TCP4 1.2.3\r\n"),
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		[]byte("POST /"),
		[]byte("PRO"),
		append(append([]byte(nil), pp.SIGV2...), 0x20, 0x00, 0, 0, 'x'),
		append(append([]byte(nil), pp.SIGV2...), 0x21, 0x11, 0, 12),
		append(append([]byte(nil), pp.SIGV2...), 0x21, 0x11, 0xff, 0xff),
		{},
	} {
		f.Add(uint8(0), h)
		f.Add(uint8(1), h)
	}
	for _, v := range []int{1, 2} {
		b, _ := Header(v, src, dst)
		f.Add(uint8(3), append(b, "payload"...))
	}
}

// reference parses data the way Accept must: the library's parser over the
// whole stream at once. It returns the header and its length.
func reference(data []byte) (*pp.Header, int, error) {
	r := bytes.NewReader(data)
	br := bufio.NewReaderSize(r, 1<<17)
	h, err := pp.Read(br)
	if err != nil {
		return nil, 0, err
	}
	return h, len(data) - br.Buffered() - r.Len(), nil
}

// FuzzAccept feeds arbitrary bytes as a trusted peer's stream, chunk bytes
// per read (0: all at once). Accept must not panic or hang, must agree with
// the library's parser on whether there is a header and what it says, and
// must return every byte after it, in order.
func FuzzAccept(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, chunk uint8, data []byte) {
		c := &stubConn{data: bytes.Clone(data), chunk: int(chunk % 20), remote: tcp("127.0.0.1:9")}
		pc, err := Accept(c, loopback, bound())
		refH, refLen, refErr := reference(data)
		if (err == nil) != (refErr == nil) {
			t.Fatalf("Accept error %v, library parser error %v", err, refErr)
		}
		if err != nil {
			if !errors.Is(err, ErrNoHeader) && !errors.Is(err, ErrBadHeader) {
				t.Fatalf("error %v wraps neither ErrNoHeader nor ErrBadHeader", err)
			}
			return
		}
		if !pc.Header().EqualsTo(refH) {
			t.Fatalf("header %+v, library parser %+v", pc.Header(), refH)
		}
		_ = pc.RemoteAddr().String()
		_ = pc.LocalAddr().String()
		rest, err := io.ReadAll(pc)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(rest, data[refLen:]) {
			t.Fatalf("read %q after the header, want %q", rest, data[refLen:])
		}
	})
}

// FuzzUntrusted feeds arbitrary bytes as an untrusted peer's stream: a
// stream that starts with a PROXY signature is refused before any byte is
// returned; any other passes unchanged, by Read and by io.Copy.
func FuzzUntrusted(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, chunk uint8, data []byte) {
		signature := bytes.HasPrefix(data, []byte("PROXY ")) || bytes.HasPrefix(data, pp.SIGV2)
		for _, copyIt := range []bool{false, true} {
			c := &stubConn{data: bytes.Clone(data), chunk: int(chunk % 20), remote: tcp("192.0.2.1:9")}
			pc, err := Accept(c, loopback, bound())
			if err != nil {
				t.Fatal(err)
			}
			var got []byte
			if copyIt {
				var buf bytes.Buffer
				_, err = io.Copy(&buf, pc)
				got = buf.Bytes()
			} else {
				got, err = io.ReadAll(pc)
			}
			if signature {
				if !errors.Is(err, ErrUntrustedHeader) || len(got) != 0 {
					t.Fatalf("signature: got %q, %v; want ErrUntrustedHeader and no data", got, err)
				}
				continue
			}
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("got %q, %v; want %q", got, err, data)
			}
		}
	})
}

var _ net.Conn = (*Conn)(nil)
