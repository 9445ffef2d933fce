package l4

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/accept"
	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/internal/upstream"
)

// Helpers shared by the tests of the TCP proxy.

// bound is how long a test waits for something that should happen soon;
// it only turns a hang into a failure.
func bound() time.Duration { return testutil.Scaled(10 * time.Second) }

// testBackend is a real upstream.Backend over fixed server addresses
// whose servers' passive health verdicts are recorded (the observer
// stands in for the health monitor of a running configuration): no
// server goes down unless downOnFailure is set.
type testBackend struct {
	*upstream.Backend
	members []*balance.Member

	mu       sync.Mutex
	observed map[string][2]int // by address: failures, successes
}

// backendOptions are a test backend's settings: upstream.Options (round
// robin, no retries by default), each server's send_proxy and max_conns,
// whether a failure takes a server down, and what each server's ID (its
// address) starts with.
type backendOptions struct {
	upstream.Options
	sendProxy     int
	maxConns      int
	downOnFailure bool
	idPrefix      string
}

// newFakeBackend is a round-robin backend of addrs with a connect timeout
// of a second.
func newFakeBackend(addrs ...string) *testBackend {
	return newBackend(backendOptions{}, addrs...)
}

// newBackend is a backend of addrs with o; a zero ConnectTimeout is a
// second.
func newBackend(o backendOptions, addrs ...string) *testBackend {
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = time.Second
	}
	b := &testBackend{observed: map[string][2]int{}}
	servers := make([]*upstream.Server, len(addrs))
	for i, a := range addrs {
		m := &balance.Member{State: balance.NewState(a), Weight: 1, MaxConns: o.maxConns, ID: o.idPrefix + a}
		b.members = append(b.members, m)
		servers[i] = upstream.NewServer(m, o.sendProxy, func(ok bool) { b.observe(m, ok, o.downOnFailure) })
	}
	up, err := upstream.NewBackend("test", servers, o.Options)
	if err != nil {
		panic(err)
	}
	b.Backend = up
	return b
}

func (b *testBackend) observe(m *balance.Member, ok, down bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	o := b.observed[m.State.Address]
	if ok {
		o[1]++
	} else {
		o[0]++
		if down {
			m.State.SetHealthy(false)
		}
	}
	b.observed[m.State.Address] = o
}

// observations returns the failures and successes observed at a server.
func (b *testBackend) observations(addr string) (failures, successes int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	o := b.observed[addr]
	return o[0], o[1]
}

// successes is the number of successes observed at every server.
func (b *testBackend) successes() (n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, o := range b.observed {
		n += o[1]
	}
	return n
}

// picked reports whether a server was picked: every pick is followed by
// a connect, whose outcome is observed (unless it failed for the proxy's
// own lack of descriptors).
func (b *testBackend) picked() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.observed) > 0
}

// inflight is the number of connections or flows the servers count.
func (b *testBackend) inflight() (n int64) {
	for _, m := range b.members {
		n += m.State.InFlight()
	}
	return n
}

// member returns the member at addr.
func (b *testBackend) member(addr string) *balance.Member {
	for _, m := range b.members {
		if m.State.Address == addr {
			return m
		}
	}
	return nil
}

// waitInflight fails unless every acquired server is released soon.
func (b *testBackend) waitInflight(t *testing.T) {
	t.Helper()
	waitFor(t, "every server connection released", func() bool { return b.inflight() == 0 })
}

// waitFor polls cond until it holds, failing after bound().
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound())
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// listen listens on 127.0.0.1:0 until the test ends.
func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serve runs handle for every connection accepted on a new listener, and
// closes the connection when handle returns. It returns the address.
func serve(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln := listen(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// echo copies what it reads back, half-closing after EOF.
func echo(c net.Conn) {
	io.Copy(c, c)
	c.(*net.TCPConn).CloseWrite()
}

// deadAddr returns an address where nothing listens.
func deadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// testLog returns a logger at debug level and the buffer it writes to.
func testLog() (*slog.Logger, *testutil.Buffer) {
	buf := &testutil.Buffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// logLines returns the lines of log that contain every one of parts.
func logLines(log *testutil.Buffer, parts ...string) []string {
	var out []string
	for line := range strings.Lines(log.String()) {
		ok := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// acceptLoop returns the accept loop of p with gate (nil: none), as the
// runtime makes it: p's own failures are summarized with the Gate's.
func acceptLoop(p *TCP, gate *limit.Gate) *accept.Server {
	if gate != nil {
		p.Events = gate.Events
	}
	return &accept.Server{Handler: p, Gate: gate, Log: p.Log}
}

// startTCP serves p on a new listener until the test ends, and returns the
// listener's address. At the end the listener is closed and p shut down.
func startTCP(t testing.TB, p *TCP) string { return startTCPGate(t, p, nil) }

// startTCPGate is startTCP with the connections counted by gate.
func startTCPGate(t testing.TB, p *TCP, gate *limit.Gate) string {
	t.Helper()
	ln := listen(t)
	done := make(chan error, 1)
	loop := acceptLoop(p, gate)
	go func() { done <- loop.Serve(ln) }()
	t.Cleanup(func() {
		ln.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), bound())
		defer cancel()
		p.Shutdown(ctx)
	})
	return ln.Addr().String()
}

// singleTable routes every connection to b.
func singleTable(b *testBackend) func() *Table {
	tab := NewTable([]Route{{Backend: b.Backend, BackendName: "test"}})
	return func() *Table { return tab }
}

// dial connects to addr, with a deadline of bound() for the whole test.
func dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(bound()))
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// selfSigned returns a certificate for names, valid as its own root.
func selfSigned(t testing.TB, names ...string) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: names[0]},
		DNSNames:              names,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf
}

// tlsServer is a TLS server with its own certificate that answers each
// connection with its name and the negotiated protocol, then echoes. A
// connection that does not start with a TLS handshake record is answered
// with its name and "plain", then echoed.
type tlsServer struct {
	name string
	addr string
	cert *x509.Certificate
}

func startTLSServer(t testing.TB, name string, alpn []string, dnsNames ...string) *tlsServer {
	t.Helper()
	cert, leaf := selfSigned(t, dnsNames...)
	ln := listen(t)
	config := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: alpn}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(bound()))
				first := make([]byte, 1)
				if _, err := io.ReadFull(c, first); err != nil {
					return
				}
				if first[0] != 22 {
					// Not TLS: say so, then echo.
					io.WriteString(c, name+" plain\n")
					c.Write(first)
					io.Copy(c, c)
					return
				}
				tc := tls.Server(&replayConn{Conn: c, prefix: first, remote: c.RemoteAddr(), local: c.LocalAddr()}, config)
				if err := tc.Handshake(); err != nil {
					return
				}
				io.WriteString(tc, name+" "+tc.ConnectionState().NegotiatedProtocol+"\n")
				io.Copy(tc, tc)
			}()
		}
	}()
	return &tlsServer{name: name, addr: ln.Addr().String(), cert: leaf}
}

// tlsDial connects through the proxy at addr with serverName and alpn,
// trusting only want's certificate, and returns the connection and the
// first line the server sent.
func tlsDial(t testing.TB, addr, serverName string, alpn []string, want *x509.Certificate) (*tls.Conn, string, error) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(want)
	raw, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	raw.SetDeadline(time.Now().Add(bound()))
	c := tls.Client(raw, &tls.Config{ServerName: serverName, RootCAs: roots, NextProtos: alpn})
	if err := c.Handshake(); err != nil {
		return nil, "", err
	}
	if !c.ConnectionState().PeerCertificates[0].Equal(want) {
		t.Fatalf("%s: not the pinned certificate", serverName)
	}
	line := make([]byte, 0, 64)
	b := make([]byte, 1)
	for {
		if _, err := c.Read(b); err != nil {
			return nil, "", err
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
	}
	return c, string(line), nil
}
