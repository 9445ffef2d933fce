package sni

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

// fuzzSeeds returns real ClientHellos, whole and fragmented, and the
// inputs of the tests above.
func fuzzSeeds(tb testing.TB) [][]byte {
	var seeds [][]byte
	for _, tc := range realHellos() {
		hello := captureHello(tb, tc.conf)
		seeds = append(seeds, hello, append(slices.Clip(hello), sentinel...))
		msg := handshakeMessage(tb, hello)
		for _, size := range []int{1, 100, 1000} {
			seeds = append(seeds, fragment(msg, size))
		}
		seeds = append(seeds, hello[:len(hello)/2])
	}
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
		"PROXY TCP4 192.0.2.1 192.0.2.2 56324 443\r\n",
		"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c",
		"\x16\x00\x00\x00\x10",
		"\x16\x03\x01\x00\x00",
		"\x16\x03\x01\x4e\x20",
	} {
		seeds = append(seeds, []byte(s))
	}
	seeds = append(seeds,
		fragment(append([]byte{1, 1, 0, 0}, make([]byte, 100)...), 104),
		fragment([]byte{1, 0xff, 0xff, 0xff}, 1),
		record(helloBody(nil)),
		record(append(helloBody(nil), 0, 200, 0, 0, 0, 4, 0, 0, 0, 0)),
		record(helloBody(ext(extServerName, []byte{0, 9, 0, 0, 4, 'a', '.', 'b', 'c'}))),
		record(helloBody(ext(extServerName, sniData("a.example", "b.example")))),
		record(helloBody(ext(extServerName, sniData("Upper.Example.")))),
		record(helloBody(ext(extALPN, alpnData("h2", "")))),
		record(helloBody(append(ext(extALPN, alpnData("h2")), ext(extServerName, sniData("x.example"))...))),
	)
	return seeds
}

// FuzzRead checks that Read never panics, never reads more than
// MaxHelloBytes, always returns exactly the bytes it consumed, and, when
// it succeeds, returns a well-formed Hello that agrees with what crypto/tls
// reads from the same bytes.
func FuzzRead(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		h, raw, err := Read(r)
		if consumed := data[:len(data)-r.Len()]; !bytes.Equal(raw, consumed) {
			t.Fatalf("Read returned %d bytes, consumed %d (err %v)", len(raw), len(consumed), err)
		}
		if len(raw) > MaxHelloBytes {
			t.Fatalf("Read consumed %d bytes, more than MaxHelloBytes", len(raw))
		}
		var e *Error
		switch {
		case err == nil:
			checkHello(t, h)
			if name, alpn, ok := goServerHello(raw); ok {
				if strings.ToLower(name) != h.ServerName || !slices.Equal(alpn, h.ALPN) {
					t.Fatalf("crypto/tls read %q %q, Read %q %q", name, alpn, h.ServerName, h.ALPN)
				}
			}
		case h != nil:
			t.Fatalf("Read returned a Hello with error %v", err)
		case errors.Is(err, ErrNotTLS):
			if len(raw) > recordHeaderLen {
				t.Fatalf("ErrNotTLS after %d bytes", len(raw))
			}
		case errors.As(err, &e):
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		default:
			t.Fatalf("unexpected error %v", err)
		}
	})
}

// FuzzParse checks Parse on ClientHello bodies directly.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		if len(s) > recordHeaderLen+handshakeHeaderLen && s[0] == recordTypeHandshake && recordLen(s) == len(s)-recordHeaderLen {
			f.Add(s[recordHeaderLen+handshakeHeaderLen:])
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		h, err := Parse(body)
		var e *Error
		switch {
		case err == nil:
			checkHello(t, h)
		case h != nil || !errors.As(err, &e):
			t.Fatalf("Parse = %v, %v", h, err)
		}
	})
}

// checkHello checks what Parse promises of a Hello.
func checkHello(t *testing.T, h *Hello) {
	t.Helper()
	if h == nil {
		t.Fatal("nil Hello without error")
	}
	for i := 0; i < len(h.ServerName); i++ {
		if c := h.ServerName[i]; c < 0x21 || c > 0x7e || 'A' <= c && c <= 'Z' {
			t.Fatalf("ServerName %q has byte 0x%02x", h.ServerName, c)
		}
	}
	if strings.HasSuffix(h.ServerName, "..") {
		t.Fatalf("ServerName %q ends with dots", h.ServerName)
	}
	if h.ALPN != nil && len(h.ALPN) == 0 {
		t.Fatal("ALPN is empty but not nil")
	}
	for _, p := range h.ALPN {
		if p == "" {
			t.Fatalf("empty protocol in ALPN %q", h.ALPN)
		}
	}
}
