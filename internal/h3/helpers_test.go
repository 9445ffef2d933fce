package h3

import (
	"context"
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
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/portcullis/portcullis/internal/quiclb"
	"github.com/portcullis/portcullis/internal/testutil"
)

const testALPN = "portcullis-test"

// serverTLS returns a TLS configuration with a fresh self-signed
// certificate for 127.0.0.1.
func serverTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos:   []string{testALPN},
	}
}

type serverOptions struct {
	transport *quic.Transport // Conn is set by startServer; nil: a default
	config    quic.Config
	// onAccept, if set, runs for every connection accepted (handshake
	// completed).
	onAccept func(*quic.Conn)
}

type testServer struct {
	addr *net.UDPAddr
	tr   *quic.Transport
}

// startServer runs an echo server (one stream per connection) on
// 127.0.0.1:0 until the test ends.
func startServer(t *testing.T, o serverOptions) *testServer {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := o.transport
	if tr == nil {
		tr = &quic.Transport{}
	}
	tr.Conn = udp
	ln, err := tr.Listen(serverTLS(t), &o.config)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		tr.Close()
		udp.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			if o.onAccept != nil {
				o.onAccept(conn)
			}
			wg.Go(func() {
				str, err := conn.AcceptStream(context.Background())
				if err != nil {
					return
				}
				io.Copy(str, str)
				str.Close()
			})
		}
	})
	return &testServer{addr: udp.LocalAddr().(*net.UDPAddr), tr: tr}
}

// roundTrip dials addr, echoes a message on one stream and closes.
func roundTrip(t *testing.T, ctx context.Context, addr *net.UDPAddr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, testutil.Scaled(10*time.Second))
	defer cancel()
	conn, err := quic.DialAddr(ctx, addr.String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{testALPN}}, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.CloseWithError(0, "")
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	str.SetDeadline(time.Now().Add(testutil.Scaled(10 * time.Second)))
	msg := []byte("hello over QUIC")
	if _, err := str.Write(msg); err != nil {
		t.Fatal(err)
	}
	str.Close()
	got, err := io.ReadAll(str)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(msg) {
		t.Fatalf("echo: got %q, want %q", got, msg)
	}
}

// relay forwards UDP datagrams between one client and a server and keeps a
// copy of each.
type relay struct {
	addr *net.UDPAddr

	mu       sync.Mutex
	up, down [][]byte
}

func newRelay(t *testing.T, server *net.UDPAddr) *relay {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{addr: c.LocalAddr().(*net.UDPAddr)}
	done := make(chan struct{})
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	go func() {
		defer close(done)
		var client *net.UDPAddr
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			} else if err != nil {
				continue
			}
			p := slices.Clone(buf[:n])
			r.mu.Lock()
			if from.AddrPort() == server.AddrPort() {
				r.down = append(r.down, p)
				to := client
				r.mu.Unlock()
				if to != nil {
					c.WriteToUDP(p, to)
				}
				continue
			}
			client = from
			r.up = append(r.up, p)
			r.mu.Unlock()
			c.WriteToUDP(p, server)
		}
	}()
	return r
}

func (r *relay) fromServer() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.down)
}

func (r *relay) toServer() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.up)
}

func mustFormat(t testing.TB, serverID []byte) quiclb.CIDFormat {
	t.Helper()
	f, err := quiclb.NewCIDFormat(serverID)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// fillCID writes a connection ID of g into b (g.ConnectionIDLen() bytes).
func fillCID(g quic.ConnectionIDGenerator, b []byte) {
	id, _ := g.GenerateConnectionID()
	copy(b, id.Bytes())
}
