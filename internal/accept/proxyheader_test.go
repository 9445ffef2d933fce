package accept

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/proxyproto"
	"github.com/portcullis/portcullis/internal/testutil"
)

// startProxyHeader serves a loopback listener through a ProxyHeader step
// trusting trusted, into a Listener, with a Gate that counts clients the
// way the runtime's does (peers in trusted count in the totals only).
func startProxyHeader(t *testing.T, trusted proxyproto.Trusted) (addr string, fwd *Listener, s *Server, gate *limit.Gate, logs *testutil.Buffer) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs = &testutil.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	fwd = NewListener(ln.Addr())
	gate = &limit.Gate{Conns: limit.NewConns(nil), Events: limit.NewEvents(log, 0), Frontend: "web", Address: "test",
		Trusted: func(ip netip.Addr) bool { return trusted.Contains(net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, 0))) }}
	timeout := testutil.Scaled(200 * time.Millisecond)
	s = &Server{Gate: gate, Handler: &ProxyHeader{Trusted: trusted, Timeout: timeout, Log: log, Next: fwd}}
	go s.Serve(ln)
	t.Cleanup(func() { ln.Close(); fwd.Close() })
	return ln.Addr().String(), fwd, s, gate, logs
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(testutil.Scaled(5 * time.Second)))
	return c
}

func TestProxyHeaderTrusted(t *testing.T) {
	addr, fwd, s, gate, _ := startProxyHeader(t, proxyproto.Trusted{netip.MustParsePrefix("127.0.0.0/8")})
	c := dial(t, addr)
	io.WriteString(c, "PROXY TCP4 192.0.2.1 192.0.2.2 1234 80\r\nhello")
	got, err := fwd.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if a := got.RemoteAddr().String(); a != "192.0.2.1:1234" {
		t.Errorf("RemoteAddr %s, want the header's 192.0.2.1:1234", a)
	}
	b := make([]byte, 5)
	if _, err := io.ReadFull(got, b); err != nil || string(b) != "hello" {
		t.Errorf("read %q, %v; want hello", b, err)
	}
	noPending(t, s)
	if n := gate.Conns.Open(); n != 1 {
		t.Errorf("%d connections counted, want 1", n)
	}
	got.Close()
	if n := gate.Conns.Open(); n != 0 {
		t.Errorf("%d connections counted once closed, want 0", n)
	}
}

func TestProxyHeaderUntrusted(t *testing.T) {
	addr, fwd, s, _, logs := startProxyHeader(t, nil)

	// A PROXY header from a peer outside trusted_proxies is refused.
	c := dial(t, addr)
	io.WriteString(c, "PROXY TCP4 192.0.2.1 192.0.2.2 1234 80\r\n")
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("read %d bytes, %v; want the connection closed", n, err)
	}
	if l := logs.Lines("outside trusted_proxies"); len(l) != 1 {
		t.Errorf("log lines about the untrusted header: %q, want one", l)
	}

	// A peer that sends nothing at first is served; its bytes follow.
	c = dial(t, addr)
	got, err := fwd.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\n")
	b := make([]byte, 3)
	if _, err := io.ReadFull(got, b); err != nil || string(b) != "GET" {
		t.Errorf("read %q, %v; want GET", b, err)
	}
	noPending(t, s)
}

// noPending waits until s counts no connection on the accept path: one
// that a Listener's Accept returned leaves it as soon as Forward returns
// (a moment after Accept does).
func noPending(t *testing.T, s *Server) {
	t.Helper()
	deadline := time.Now().Add(testutil.Scaled(time.Second))
	for s.Pending() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("Pending() = %d once the Listener accepted the connection", s.Pending())
		}
		time.Sleep(time.Millisecond)
	}
}
