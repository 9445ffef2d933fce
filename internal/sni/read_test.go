package sni

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
)

const sentinel = "AFTER-THE-CLIENTHELLO"

func TestReadRealClientHellos(t *testing.T) {
	for _, tc := range realHellos() {
		t.Run(tc.name, func(t *testing.T) {
			hello := captureHello(t, tc.conf)
			if len(hello) < tc.minLen {
				t.Fatalf("ClientHello is %d bytes, want at least %d (post-quantum key share missing?)", len(hello), tc.minLen)
			}
			for _, rd := range []struct {
				name string
				wrap func(io.Reader) io.Reader
			}{
				{"whole", func(r io.Reader) io.Reader { return r }},
				{"one byte per read", iotest.OneByteReader},
				{"half per read", iotest.HalfReader},
			} {
				t.Run(rd.name, func(t *testing.T) {
					src := bytes.NewReader(append(slices.Clip(hello), sentinel...))
					h, raw, err := Read(rd.wrap(src))
					if err != nil {
						t.Fatalf("Read: %v", err)
					}
					if h.ServerName != tc.wantName {
						t.Errorf("ServerName = %q, want %q", h.ServerName, tc.wantName)
					}
					if !slices.Equal(h.ALPN, tc.wantALPN) {
						t.Errorf("ALPN = %q, want %q", h.ALPN, tc.wantALPN)
					}
					if !bytes.Equal(raw, hello) {
						t.Errorf("Read returned %d bytes, not the %d bytes the client wrote", len(raw), len(hello))
					}
					if rest, _ := io.ReadAll(src); string(rest) != sentinel {
						t.Errorf("left in the reader: %q, want %q", rest, sentinel)
					}
				})
			}
		})
	}
}

// TestReadAgreesWithCryptoTLS checks that a crypto/tls server reads the
// same name and protocols from the bytes Read returns.
func TestReadAgreesWithCryptoTLS(t *testing.T) {
	for _, tc := range realHellos() {
		hello := captureHello(t, tc.conf)
		h, raw, err := Read(bytes.NewReader(hello))
		if err != nil {
			t.Fatalf("%s: Read: %v", tc.name, err)
		}
		name, alpn, ok := goServerHello(raw)
		if !ok {
			t.Fatalf("%s: crypto/tls refused the replayed ClientHello", tc.name)
		}
		if strings.ToLower(name) != h.ServerName || !slices.Equal(alpn, h.ALPN) {
			t.Errorf("%s: crypto/tls read %q %q, Read %q %q", tc.name, name, alpn, h.ServerName, h.ALPN)
		}
	}
}

func TestReadFragmented(t *testing.T) {
	for _, tc := range realHellos()[:3] {
		msg := handshakeMessage(t, captureHello(t, tc.conf))
		for _, size := range []int{1, 100, 1000} {
			in := fragment(msg, size)
			src := bytes.NewReader(append(slices.Clip(in), sentinel...))
			h, raw, err := Read(src)
			if err != nil {
				t.Fatalf("%s in records of %d bytes: Read: %v", tc.name, size, err)
			}
			if h.ServerName != tc.wantName || !slices.Equal(h.ALPN, tc.wantALPN) {
				t.Errorf("%s in records of %d bytes: got %q %q, want %q %q", tc.name, size, h.ServerName, h.ALPN, tc.wantName, tc.wantALPN)
			}
			if !bytes.Equal(raw, in) {
				t.Errorf("%s in records of %d bytes: Read returned %d bytes, want all %d", tc.name, size, len(raw), len(in))
			}
			if rest, _ := io.ReadAll(src); string(rest) != sentinel {
				t.Errorf("%s in records of %d bytes: left in the reader: %q, want %q", tc.name, size, rest, sentinel)
			}
			if name, _, ok := goServerHello(raw); !ok || strings.ToLower(name) != h.ServerName {
				t.Errorf("%s in records of %d bytes: crypto/tls read name %q (accepted: %v), Read %q", tc.name, size, name, ok, h.ServerName)
			}
		}
	}
}

func TestReadNotTLS(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		wantRaw  string
	}{
		{"HTTP/1.1", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", "G"},
		{"SSH banner", "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", "S"},
		{"PROXY v1", "PROXY TCP4 192.0.2.1 192.0.2.2 56324 443\r\n", "P"},
		{"PROXY v2", "\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c", "\r"},
		{"SSLv2-compatible ClientHello", "\x80\x2e\x01\x03\x01", "\x80"},
		{"handshake byte, then not TLS", "\x16\x00\x00\x00\x10rest", "\x16\x00\x00\x00\x10"},
	} {
		src := bytes.NewReader([]byte(tc.in))
		h, raw, err := Read(src)
		if !errors.Is(err, ErrNotTLS) || h != nil {
			t.Errorf("%s: Read = %v, %v, want ErrNotTLS", tc.name, h, err)
		}
		if string(raw) != tc.wantRaw {
			t.Errorf("%s: returned bytes %q, want %q", tc.name, raw, tc.wantRaw)
		}
		if rest, _ := io.ReadAll(src); string(raw)+string(rest) != tc.in {
			t.Errorf("%s: bytes read %q and left %q do not make the input", tc.name, raw, rest)
		}
	}
}

func TestReadMalformed(t *testing.T) {
	hello := captureHello(t, realHellos()[0].conf)
	msg := handshakeMessage(t, hello)
	changeType := append([]byte{20, 3, 3, 0, 1, 1}, hello[5+100:]...) // change_cipher_spec
	secondRecordCCS := append(fragment(msg[:100], 100), changeType...)
	serverHello := slices.Clone(hello)
	serverHello[5] = 2
	// A ClientHello declaring 16,000 bytes, sent 1 byte per record, runs
	// past MaxHelloBytes in record headers.
	fine := fragment(append([]byte{1, 0, 0x3e, 0x80}, make([]byte, 16000)...), 1)

	for _, tc := range []struct {
		name, want string
		in         []byte
	}{
		{"oversized ClientHello", "ClientHello of 65540 bytes exceeds 16384 bytes (MaxHelloLen)",
			fragment(append([]byte{1, 1, 0, 0}, make([]byte, 100)...), 104)},
		{"oversized ClientHello in 1-byte records", "ClientHello of 16777219 bytes exceeds",
			fragment([]byte{1, 0xff, 0xff, 0xff}, 1)},
		{"empty record", "record 1 has length 0", []byte{22, 3, 1, 0, 0}},
		{"record too long", "record 1 has length 20000, want 1 to 18432", []byte{22, 3, 1, 0x4e, 0x20}},
		{"records past MaxHelloBytes", "past 32768 bytes (MaxHelloBytes)", fine},
		{"second record not handshake", "record 2 has content type 20", secondRecordCCS},
		{"not a ClientHello", "handshake message type 2, want client_hello (1)", serverHello},
		{"empty ClientHello", "shorter than its version and random", record(nil)},
		{"extensions overrun", "extensions length 200 exceeds the 8 bytes left",
			record(append(helloBody(nil), 0, 200, 0, 0, 0, 4, 0, 0, 0, 0))},
		{"server_name list overruns its extension", "server_name list length 9 exceeds the 7 bytes left",
			record(helloBody(ext(extServerName, []byte{0, 9, 0, 0, 4, 'a', '.', 'b', 'c'})))},
		{"extension overruns the extensions", "extension 43 length 100 exceeds the 2 bytes left",
			record(helloBody([]byte{0, 43, 0, 100, 3, 4}))},
		{"empty ALPN protocol", "empty ALPN protocol name at position 2",
			record(helloBody(ext(extALPN, alpnData("h2", ""))))},
	} {
		h, raw, err := Read(bytes.NewReader(tc.in))
		var e *Error
		if !errors.As(err, &e) || h != nil {
			t.Errorf("%s: Read = %v, %v, want *Error", tc.name, h, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not say %q", tc.name, err, tc.want)
		}
		if !bytes.HasPrefix(tc.in, raw) {
			t.Errorf("%s: returned bytes are not a prefix of the input", tc.name)
		}
	}
}

func TestReadTruncated(t *testing.T) {
	hello := captureHello(t, realHellos()[0].conf)
	for _, n := range []int{1, 3, 5, 6, 9, 100, len(hello) - 1} {
		h, raw, err := Read(bytes.NewReader(hello[:n]))
		if !errors.Is(err, io.ErrUnexpectedEOF) || h != nil {
			t.Errorf("first %d bytes: Read = %v, %v, want io.ErrUnexpectedEOF", n, h, err)
		}
		if !bytes.Equal(raw, hello[:n]) {
			t.Errorf("first %d bytes: returned %d bytes, want all read", n, len(raw))
		}
	}
	// Records that end before the ClientHello does.
	in := fragment(handshakeMessage(t, hello), 100)[:1000]
	if _, _, err := Read(bytes.NewReader(in)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("records ending early: Read error %v, want EOF", err)
	}
	if _, raw, err := Read(bytes.NewReader(nil)); !errors.Is(err, io.EOF) || raw != nil {
		t.Errorf("empty input: Read = %q, %v, want io.EOF", raw, err)
	}
	// A reader's own error, here a timeout on the second read, is wrapped.
	_, raw, err := Read(iotest.TimeoutReader(iotest.OneByteReader(bytes.NewReader(hello))))
	if !errors.Is(err, iotest.ErrTimeout) || len(raw) != 1 {
		t.Errorf("timeout: Read = %d bytes, %v, want 1 byte and iotest.ErrTimeout", len(raw), err)
	}
}

// TestReadPassthrough plays a TLS passthrough proxy: it reads the
// ClientHello from a real client, replays the bytes to a real server and
// splices the rest, and the handshake and the data that follow succeed.
func TestReadPassthrough(t *testing.T) {
	cert := selfSigned(t, "www.example.com")
	roots := x509.NewCertPool()
	roots.AddCert(cert.Leaf)

	clientConn, proxyConn := net.Pipe()
	t.Cleanup(func() { clientConn.Close(); proxyConn.Close() })
	deadline := time.Now().Add(testutil.Scaled(10 * time.Second))
	clientConn.SetDeadline(deadline)
	proxyConn.SetDeadline(deadline)

	type result struct {
		proto string
		reply []byte
		err   error
	}
	done := make(chan result, 1)
	go func() {
		c := tls.Client(clientConn, &tls.Config{ServerName: "WWW.example.com", RootCAs: roots, NextProtos: []string{"h2", "http/1.1"}})
		if _, err := c.Write([]byte("ping")); err != nil {
			done <- result{err: err}
			return
		}
		reply := make([]byte, 4)
		_, err := io.ReadFull(c, reply)
		done <- result{c.ConnectionState().NegotiatedProtocol, reply, err}
	}()

	h, raw, err := Read(proxyConn)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if h.ServerName != "www.example.com" || !slices.Equal(h.ALPN, []string{"h2", "http/1.1"}) {
		t.Fatalf("Read = %q %q", h.ServerName, h.ALPN)
	}
	server := tls.Server(&splicedConn{Conn: proxyConn, r: io.MultiReader(bytes.NewReader(raw), proxyConn)},
		&tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
	got := make([]byte, 4)
	if _, err := io.ReadFull(server, got); err != nil || string(got) != "ping" {
		t.Fatalf("server read %q, %v", got, err)
	}
	if _, err := server.Write([]byte("pong")); err != nil {
		t.Fatalf("server write: %v", err)
	}
	res := <-done
	if res.err != nil || string(res.reply) != "pong" || res.proto != "h2" {
		t.Fatalf("client: reply %q, protocol %q, %v", res.reply, res.proto, res.err)
	}
}

// splicedConn reads from r (the replayed bytes, then the connection).
type splicedConn struct {
	net.Conn
	r io.Reader
}

func (c *splicedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func selfSigned(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func BenchmarkRead(b *testing.B) {
	hello := captureHello(b, realHellos()[0].conf)
	r := bytes.NewReader(hello)
	b.SetBytes(int64(len(hello)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(hello)
		if _, _, err := Read(r); err != nil {
			b.Fatal(err)
		}
	}
}
