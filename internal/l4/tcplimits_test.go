package l4

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/accept"
	"github.com/portcullis/portcullis/internal/hostname"
	"github.com/portcullis/portcullis/internal/limit"
)

// newGate returns a Gate over a new counter with limits max and
// perClient (0: none), logging to log.
func newGate(log *slog.Logger, max, perClient int) *limit.Gate {
	c := limit.NewConns(nil)
	c.SetLimits(max, perClient)
	return &limit.Gate{Conns: c, Events: limit.NewEvents(log, 0), Frontend: "limited", Address: "test"}
}

// echoed checks that c is relayed: a byte sent comes back.
func echoed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	if _, err := io.WriteString(c, "x"); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("%s: not relayed: %v", what, err)
	}
}

// refused checks that the proxy closes c without relaying anything.
func refused(t *testing.T, c net.Conn, what string) {
	t.Helper()
	io.WriteString(c, "x") // may fail: the proxy may have closed it already
	c.SetReadDeadline(time.Now().Add(bound()))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || (err != io.EOF && !isReset(err)) {
		t.Fatalf("%s: read %d bytes, %v; want the connection closed unrelayed", what, n, err)
	}
}

func TestTCPGateMaxConns(t *testing.T) {
	b := newFakeBackend(serve(t, echo))
	log, logs := testLog()
	gate := newGate(log, 2, 0)
	addr := startTCPGate(t, &TCP{Frontend: "limited", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: singleTable(b), Log: log}, gate)

	c1 := dial(t, addr)
	echoed(t, c1, "connection 1")
	c2 := dial(t, addr)
	echoed(t, c2, "connection 2")
	refused(t, dial(t, addr), "connection 3, over max_conns 2")
	if n := gate.Conns.Open(); n != 2 {
		t.Errorf("%d connections counted, want 2", n)
	}

	// Once one closes, another is admitted.
	c1.Close()
	waitFor(t, "the closed connection's count released", func() bool { return gate.Conns.Open() == 1 })
	echoed(t, dial(t, addr), "connection 4, after one closed")
	echoed(t, c2, "connection 2, still open")

	waitFor(t, "the refusal summarized", func() bool {
		return len(logLines(logs, `msg="limit reached, connection closed"`, "limit=max_conns", "frontend=limited", "count=1")) == 1
	})
	if got := logLines(logs, "limit reached"); len(got) != 1 {
		t.Errorf("want one summary line, got:\n%s", strings.Join(got, ""))
	}
}

func TestTCPGatePerClientAfterProxyHeader(t *testing.T) {
	b := newFakeBackend(serve(t, echo))
	log, logs := testLog()
	gate := newGate(log, 0, 1)
	// As the runtime sets it for an accept_proxy bind: the trusted proxy
	// itself is not a client.
	gate.Trusted = func(ip netip.Addr) bool {
		return loopback.Contains(net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	}
	addr := startTCPGate(t, &TCP{Frontend: "limited", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: singleTable(b), Log: log, AcceptProxy: true, Trusted: loopback}, gate)

	client := func(ip string, port int) *net.TCPConn {
		c := dial(t, addr)
		src := &net.TCPAddr{IP: net.ParseIP(ip).To4(), Port: port}
		if _, err := c.Write(mustHeader(t, 2, src, headerDst)); err != nil {
			t.Fatal(err)
		}
		return c
	}
	// Two clients behind the one trusted proxy: one connection each.
	a1 := client("192.0.2.1", 1001)
	echoed(t, a1, "client A, connection 1")
	echoed(t, client("192.0.2.2", 2001), "client B, connection 1")
	// A second connection of A is over max_conns_per_client 1.
	refused(t, client("192.0.2.1", 1002), "client A, connection 2")
	// Once A's first closes, A may connect again.
	a1.Close()
	waitFor(t, "client A's count released", func() bool { return gate.Conns.Open() == 1 })
	echoed(t, client("192.0.2.1", 1003), "client A, connection 3")

	waitFor(t, "the refusal summarized", func() bool {
		return len(logLines(logs, `msg="limit reached, connection closed"`, "limit=max_conns_per_client", "count=1")) == 1
	})
}

// TestTCPGateToHTTP checks that a connection given to ToHTTP stays
// counted until the http.Server's side closes it.
func TestTCPGateToHTTP(t *testing.T) {
	log, _ := testLog()
	gate := newGate(log, 0, 0)
	ln := listen(t)
	h := accept.NewListener(ln.Addr())
	tab := NewTable([]Route{{SNI: hostname.MustParsePattern("pass.test"), Backend: newFakeBackend(deadAddr(t)).Backend, BackendName: "pass"}})
	p := &TCP{Frontend: "limited", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: func() *Table { return tab }, Log: log, ToHTTP: h}
	loop := acceptLoop(p, gate)
	go loop.Serve(ln)
	t.Cleanup(func() { ln.Close(); p.Shutdown(context.Background()) })

	raw := dial(t, ln.Addr().String())
	go tls.Client(raw, &tls.Config{ServerName: "term.test", InsecureSkipVerify: true}).Handshake()
	c, err := h.Accept()
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the proxy done with the connection", func() bool { return loop.Pending() == 0 })
	if n := gate.Conns.Open(); n != 1 {
		t.Fatalf("%d connections counted once given to ToHTTP, want 1", n)
	}
	c.Close()
	if n := gate.Conns.Open(); n != 0 {
		t.Errorf("%d connections counted once the one given to ToHTTP closed, want 0", n)
	}
}
