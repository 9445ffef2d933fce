package sni

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

// captureConn is a net.Conn that records what a TLS client writes and ends
// every read, so a client handshake stops right after its ClientHello.
type captureConn struct{ out bytes.Buffer }

func (c *captureConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (c *captureConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *captureConn) Close() error                     { return nil }
func (c *captureConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *captureConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }

// replayConn is a net.Conn that reads from r and discards what is written:
// a server handshake over it sees exactly the bytes of r.
type replayConn struct {
	captureConn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *replayConn) Write(p []byte) (int, error) { return len(p), nil }

// captureHello returns the bytes a crypto/tls client writes as its first
// flight (the records carrying its ClientHello) with conf.
func captureHello(tb testing.TB, conf *tls.Config) []byte {
	tb.Helper()
	c := new(captureConn)
	if err := tls.Client(c, conf).Handshake(); err == nil {
		tb.Fatal("handshake against a conn that only returns EOF succeeded")
	}
	if c.out.Len() == 0 {
		tb.Fatal("the TLS client wrote nothing")
	}
	return c.out.Bytes()
}

// realHello is a ClientHello crypto/tls sends with conf, and what Read must
// find in it.
type realHello struct {
	name     string
	conf     *tls.Config
	wantName string
	wantALPN []string
	minLen   int // lower bound on the record bytes, to catch a missing key share
}

func realHellos() []realHello {
	return []realHello{
		{
			name:     "TLS 1.3 with post-quantum key share",
			conf:     &tls.Config{ServerName: "www.example.com", NextProtos: []string{"h2", "http/1.1"}},
			wantName: "www.example.com",
			wantALPN: []string{"h2", "http/1.1"},
			minLen:   1200, // an X25519MLKEM768 key share alone is 1216 bytes
		},
		{
			name: "TLS 1.3 only",
			conf: &tls.Config{ServerName: "api.example.org", NextProtos: []string{"acme-tls/1"},
				MinVersion: tls.VersionTLS13},
			wantName: "api.example.org",
			wantALPN: []string{"acme-tls/1"},
			minLen:   1200,
		},
		{
			name: "TLS 1.2",
			conf: &tls.Config{ServerName: "legacy.example.net", NextProtos: []string{"http/1.1"},
				MaxVersion: tls.VersionTLS12},
			wantName: "legacy.example.net",
			wantALPN: []string{"http/1.1"},
		},
		{
			name:     "TLS 1.2 without SNI or ALPN",
			conf:     &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12},
			wantName: "",
		},
		{
			name:     "TLS 1.3 without SNI",
			conf:     &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}},
			wantName: "",
			wantALPN: []string{"h2"},
			minLen:   1200,
		},
		{
			name:     "IP address sends no SNI",
			conf:     &tls.Config{ServerName: "192.0.2.1"},
			wantName: "",
		},
		{
			name:     "mixed case and trailing dot",
			conf:     &tls.Config{ServerName: "WWW.Example.COM."},
			wantName: "www.example.com",
		},
	}
}

// handshakeMessage returns the handshake data carried by the records in
// raw, which must be well formed.
func handshakeMessage(tb testing.TB, raw []byte) []byte {
	tb.Helper()
	var msg []byte
	for len(raw) > 0 {
		if len(raw) < recordHeaderLen || len(raw) < recordHeaderLen+recordLen(raw) {
			tb.Fatalf("truncated record in %d bytes", len(raw))
		}
		n := recordHeaderLen + recordLen(raw)
		msg = append(msg, raw[recordHeaderLen:n]...)
		raw = raw[n:]
	}
	return msg
}

// fragment splits a handshake message into handshake records carrying at
// most size bytes each.
func fragment(msg []byte, size int) []byte {
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, recordTypeHandshake, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// record wraps a ClientHello body in a handshake header and one record.
func record(body []byte) []byte {
	msg := append([]byte{typeClientHello, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	return fragment(msg, len(msg))
}

// helloBody builds a ClientHello body with the given extensions block
// (nil: no extensions at all), a 32-byte session ID, two cipher suites and
// the null compression method.
func helloBody(exts []byte) []byte {
	var b cryptobyte.Builder
	b.AddUint16(tls.VersionTLS12)
	b.AddBytes(make([]byte, 32))
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(make([]byte, 32)) })
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(tls.TLS_AES_128_GCM_SHA256)
		b.AddUint16(tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
	})
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
	if exts != nil {
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(exts) })
	}
	return b.BytesOrPanic()
}

// ext encodes one extension.
func ext(typ uint16, data []byte) []byte {
	return append([]byte{byte(typ >> 8), byte(typ), byte(len(data) >> 8), byte(len(data))}, data...)
}

// sniData encodes server_name extension data with host_name entries.
func sniData(names ...string) []byte {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, n := range names {
			b.AddUint8(0)
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(n)) })
		}
	})
	return b.BytesOrPanic()
}

// alpnData encodes ALPN extension data.
func alpnData(protos ...string) []byte {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, p := range protos {
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(p)) })
		}
	})
	return b.BytesOrPanic()
}

var errStop = errors.New("stop after the ClientHello")

// goServerHello hands raw to a crypto/tls server and returns the server
// name and ALPN protocols it read, and whether it accepted the ClientHello
// at all.
func goServerHello(raw []byte) (name string, alpn []string, ok bool) {
	conf := &tls.Config{GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		name, alpn, ok = chi.ServerName, chi.SupportedProtos, true
		return nil, errStop
	}}
	_ = tls.Server(&replayConn{r: bytes.NewReader(raw)}, conf).Handshake()
	return name, alpn, ok
}
