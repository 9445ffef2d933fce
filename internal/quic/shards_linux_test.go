package quic

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"net/http"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

func selfSigned(t *testing.T) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestShardedHTTP3 serves HTTP/3 on steered shards and makes several
// requests on one connection: every packet of the connection must reach
// the shard that owns it, or the other shard answers with a stateless
// reset.
func TestShardedHTTP3(t *testing.T) {
	const shards = 2
	conns := bindShards(t, shards)
	f, err := NewCIDFormat(nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := LoadSteering(shards, f.ShardOffset())
	if err != nil {
		skipOrFail(t, "cannot load the reuseport program here: %v", err)
	}
	defer st.Close()
	if err := st.Attach(fds(t, conns)); err != nil {
		t.Fatal(err)
	}
	var reset quicgo.StatelessResetKey
	rand.Read(reset[:])
	srv := &http3.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })}
	tlsConf := http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{selfSigned(t)}})
	for i, c := range conns {
		tr := &quicgo.Transport{Conn: c, ConnectionIDGenerator: NewCIDGenerator(f, uint8(i)), StatelessResetKey: &reset, VerifySourceAddress: func(net.Addr) bool { return true }}
		ln, err := tr.ListenEarly(tlsConf, &quicgo.Config{})
		if err != nil {
			t.Fatal(err)
		}
		go srv.ServeListener(ln)
		t.Cleanup(func() { tr.Close() })
	}
	t.Cleanup(func() { srv.Close() })
	client := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer client.Close()
	for i := 0; i < 6; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+conns[0].LocalAddr().String()+"/", nil)
		resp, err := client.RoundTrip(req)
		cancel()
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp.Body.Close()
	}
	_ = net.IPv4len
}
