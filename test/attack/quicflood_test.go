package attack

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// TestQUICFlood floods a quic-go server that answers the first 10
// attempts with Retry, refuses the next 10 in ConnContext and admits the
// rest, and checks that the flood sees exactly that, with one source
// address and one connection ID per attempt.
func TestQUICFlood(t *testing.T) {
	const n = 30
	var asked, accepted atomic.Int64
	var mu sync.Mutex
	sources := map[netip.Addr]bool{}
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{
		Conn: udp,
		VerifySourceAddress: func(a net.Addr) bool {
			mu.Lock()
			sources[a.(*net.UDPAddr).AddrPort().Addr().Unmap()] = true
			mu.Unlock()
			return asked.Add(1) <= 10
		},
		ConnContext: func(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
			if accepted.Add(1) <= 10 {
				return nil, errors.New("refused")
			}
			return ctx, nil
		},
	}
	t.Cleanup(func() { tr.Close(); udp.Close() })
	ln, err := tr.Listen(&tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, NextProtos: []string{"h3"}},
		&quic.Config{HandshakeIdleTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })

	res, err := QUICFlood(context.Background(), QUICFloodOptions{
		Target: Target{Addr: udp.LocalAddr().String(), Timeout: 500 * time.Millisecond},
		Count:  n,
		// Slow enough that quic-go's queues for Retry and
		// CONNECTION_REFUSED packets (8 and 4) never overflow.
		Rate: 200,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if res.Sent != n || res.Addresses != n || res.Retry != 10 || res.Refused != 10 || res.Handshake != 10 || res.Other != 0 || res.Silent != 0 {
		t.Errorf("got %s; want %d sent from %d addresses, 10 each answered by Retry, refusal and handshake", res, n, n)
	}
	mu.Lock()
	seen := len(sources)
	mu.Unlock()
	if seen != n {
		t.Errorf("the server saw %d source addresses, want %d", seen, n)
	}
	if got := asked.Load(); got != n {
		t.Errorf("VerifySourceAddress ran %d times, want one per attempt (%d): each attempt must open a new connection", got, n)
	}
}

func TestQUICFloodRefusesNonLoopback(t *testing.T) {
	for _, o := range []QUICFloodOptions{
		{Target: Target{Addr: "192.0.2.1:443"}},
		{Target: Target{Addr: "127.0.0.1:443"}, Sources: netip.MustParsePrefix("10.0.0.0/8")},
		{Target: Target{Addr: "127.0.0.1:443"}, Sources: netip.MustParsePrefix("127.1.0.0/24"), Count: 1000},
	} {
		if _, err := QUICFlood(context.Background(), o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
