package h3

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/portcullis/portcullis/internal/quiclb"
	"github.com/portcullis/portcullis/internal/testutil"
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
	conns := testutil.ReusePortUDP(t, shards)
	f, err := quiclb.NewCIDFormat(nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := quiclb.LoadSteering(shards, f.ShardOffset())
	if err != nil {
		testutil.SkipOrFail(t, "cannot load the reuseport program here: %v", err)
	}
	defer st.Close()
	if err := st.Attach(testutil.FDs(t, conns)); err != nil {
		t.Fatal(err)
	}
	var reset quic.StatelessResetKey
	rand.Read(reset[:])
	srv := &http3.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })}
	tlsConf := http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{selfSigned(t)}})
	for i, c := range conns {
		tr := &quic.Transport{Conn: c, ConnectionIDGenerator: quiclb.NewCIDGenerator(f, uint8(i)), StatelessResetKey: &reset, VerifySourceAddress: func(net.Addr) bool { return true }}
		ln, err := tr.ListenEarly(tlsConf, &quic.Config{})
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

// TestUpgradeKeepsConnections runs two generations of QUIC servers on the
// two socket sets of one bind, as the old and the new process of a binary
// upgrade do: a connection made before the flip stays with generation 0
// while new ones reach generation 1; once generation 0 is done, the
// packets of its connection reach generation 1, which answers with a
// stateless reset that the client recognizes (the key is shared).
func TestUpgradeKeepsConnections(t *testing.T) {
	const n = 2
	f := mustFormat(t, nil)
	conns := testutil.ReusePortUDP(t, 2*n)
	st, err := quiclb.LoadSteeringFor(f, n)
	if err != nil {
		testutil.SkipOrFail(t, "cannot load the reuseport program here: %v", err)
	}
	t.Cleanup(func() {
		st.Close()
		st.Counters.Close()
	})
	if err := st.Attach(testutil.FDs(t, conns)); err != nil {
		t.Fatal(err)
	}
	var reset quic.StatelessResetKey
	rand.Read(reset[:])
	tlsConf := serverTLS(t)

	// serve runs generation gen's servers on its set; each stream gets
	// the generation's digit, then its own bytes back.
	serve := func(gen quiclb.Generation) (stop func()) {
		var trs []*quic.Transport
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			tr := &quic.Transport{Conn: conns[int(gen)*n+i], ConnectionIDGenerator: quiclb.NewGenCIDGenerator(f, gen, i), StatelessResetKey: &reset}
			ln, err := tr.Listen(tlsConf, &quic.Config{})
			if err != nil {
				t.Fatal(err)
			}
			trs = append(trs, tr)
			wg.Go(func() {
				for {
					conn, err := ln.Accept(context.Background())
					if err != nil {
						return
					}
					wg.Go(func() {
						for {
							str, err := conn.AcceptStream(context.Background())
							if err != nil {
								return
							}
							wg.Go(func() {
								str.Write([]byte{'0' + byte(gen)})
								io.Copy(str, str)
								str.Close()
							})
						}
					})
				}
			})
		}
		stopped := false
		stop = func() {
			if !stopped {
				stopped = true
				for _, tr := range trs {
					tr.Close()
				}
				wg.Wait()
			}
		}
		t.Cleanup(stop)
		return stop
	}
	dial := func() *quic.Conn {
		ctx, cancel := context.WithTimeout(context.Background(), testutil.Scaled(5*time.Second))
		defer cancel()
		c, err := quic.DialAddr(ctx, conns[0].LocalAddr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{testALPN}}, &quic.Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.CloseWithError(0, "") })
		return c
	}
	// ask opens a stream and returns the generation that answered. The
	// message makes every packet longer than 42 bytes: quic-go answers
	// no shorter packet with a stateless reset.
	msg := bytes.Repeat([]byte("ping"), 25)
	ask := func(c *quic.Conn) (byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), testutil.Scaled(5*time.Second))
		defer cancel()
		str, err := c.OpenStreamSync(ctx)
		if err != nil {
			return 0, err
		}
		str.SetDeadline(time.Now().Add(testutil.Scaled(5 * time.Second)))
		if _, err := str.Write(msg); err != nil {
			return 0, err
		}
		str.Close()
		got, err := io.ReadAll(str)
		if err != nil {
			return 0, err
		}
		if len(got) != 1+len(msg) || !bytes.Equal(got[1:], msg) {
			return 0, fmt.Errorf("echo %q", got)
		}
		return got[0], nil
	}
	want := func(c *quic.Conn, gen byte, what string) {
		t.Helper()
		if got, err := ask(c); err != nil || got != gen {
			t.Fatalf("%s: answered by %q, %v; want %q", what, got, err, gen)
		}
	}

	stop0 := serve(0)
	if err := errors.Join(st.MarkServing(0), st.SetGeneration(0)); err != nil {
		t.Fatal(err)
	}
	old := dial()
	want(old, '0', "before the upgrade")

	// The new process: serve generation 1, then make it current.
	serve(1)
	if err := errors.Join(st.MarkServing(1), st.SetGeneration(1)); err != nil {
		t.Fatal(err)
	}
	var fresh []*quic.Conn
	for i := 0; i < 4; i++ {
		c := dial()
		want(c, '1', "a connection made after the flip")
		fresh = append(fresh, c)
		want(old, '0', "the connection made before the flip")
	}

	// The old process is done: its connection's packets now reach
	// generation 1.
	if err := st.MarkDone(0); err != nil {
		t.Fatal(err)
	}
	// Its Transports close without a word to their clients; the sockets
	// stay open, as the new process holds them.
	stop0()
	_, err = ask(old)
	var sr *quic.StatelessResetError
	if !errors.As(err, &sr) {
		t.Fatalf("the old connection after generation 0 is done: %v, want a stateless reset", err)
	}
	for _, c := range fresh {
		want(c, '1', "connections of generation 1 after generation 0 is done")
	}
	if k := st.Counters.ReadKinds(n); k.New == 0 || k.Orphaned == 0 {
		t.Errorf("kinds %+v: want new connections, and the old connection's packets orphaned", k)
	}
}
