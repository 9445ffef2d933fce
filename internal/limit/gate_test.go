package limit

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
)

func TestGateListener(t *testing.T) {
	var logs testutil.Buffer
	ev := NewEvents(slog.New(slog.NewTextHandler(&logs, nil)), 50*time.Millisecond)
	conns := NewConns(NewConns(nil))
	conns.SetLimits(2, 0)
	g := &Gate{Conns: conns, Events: ev, Frontend: "web", Address: "127.0.0.1:0"}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := g.Listener(raw)
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial()
	dial()
	s1, s2 := <-accepted, <-accepted
	third := dial()
	// The third is closed at once by the proxy: its client reads EOF.
	third.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := third.Read(make([]byte, 1)); err == nil {
		t.Fatalf("a connection over max_conns was served (read %d bytes)", n)
	}
	if conns.Open() != 2 {
		t.Fatalf("open = %d, want 2", conns.Open())
	}
	s1.Close()
	s1.Close() // a second Close releases nothing more
	if conns.Open() != 1 {
		t.Fatalf("after a close: open = %d, want 1", conns.Open())
	}
	dial()
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("a connection was not admitted once there was room")
	}
	s2.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "limit=max_conns") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if l := logs.String(); !strings.Contains(l, `msg="limit reached, connection closed" limit=max_conns frontend=web address=127.0.0.1:0 count=1`) {
		t.Errorf("the refusal is not logged with the limit's name:\n%s", l)
	}
}

func TestTicketMove(t *testing.T) {
	conns := NewConns(nil)
	conns.SetLimits(0, 1)
	proxyIP := netip.MustParseAddr("10.0.0.1")
	g := &Gate{Conns: conns, Trusted: func(a netip.Addr) bool { return a == proxyIP }}
	hold := func() *Ticket {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return g.Hold(addrConn{a, &net.TCPAddr{IP: proxyIP.AsSlice(), Port: 1234}})
	}
	// A trusted proxy's connections are not counted against it...
	t1, t2 := hold(), hold()
	if t1 == nil || t2 == nil {
		t.Fatal("a trusted proxy's second connection was refused by max_conns_per_client")
	}
	// ...but against the client its PROXY header names.
	client := &net.TCPAddr{IP: net.ParseIP("192.0.2.9"), Port: 5}
	if !t1.Move(client) {
		t.Fatal("the client's first connection was refused")
	}
	if t2.Move(client) {
		t.Fatal("the client's second connection was admitted over max_conns_per_client 1")
	}
	if conns.Open() != 1 {
		t.Fatalf("open = %d, want 1 (the refused move is released)", conns.Open())
	}
	t2.Release() // already released: nothing happens
	t1.Release()
	if conns.Open() != 0 || len(conns.byClient) != 0 {
		t.Fatalf("after release: open %d, clients %v", conns.Open(), conns.byClient)
	}
}

type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

func TestEventsSummarize(t *testing.T) {
	var logs testutil.Buffer
	ev := NewEvents(slog.New(slog.NewTextHandler(&logs, nil)), 100*time.Millisecond)
	emfile := fmt.Errorf("accept tcp: %w", syscall.EMFILE)
	for i := 0; i < 1000; i++ {
		ev.Note("accept failed", emfile, "frontend", "web")
	}
	ev.Note("limit reached", nil, "limit", "max_conns")
	time.Sleep(300 * time.Millisecond)
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 summary lines, got %d:\n%s", len(lines), logs.String())
	}
	if !strings.Contains(lines[0], "count=1000") || !strings.Contains(lines[0], "too many open files") {
		t.Errorf("summary lacks the count or the error: %s", lines[0])
	}
	if !OutOfResources(emfile) || OutOfResources(syscall.ECONNREFUSED) {
		t.Error("OutOfResources misclassifies EMFILE or ECONNREFUSED")
	}
}
