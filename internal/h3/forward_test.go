package h3

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/portcullis/portcullis/internal/quiclb"
	"github.com/portcullis/portcullis/internal/testutil"
)

// forwardPair is one UDP socket shared by an old (generation 0) and a new
// (generation 1) process, each reading through a ForwardConn, and the
// socket pair between them.
type forwardPair struct {
	addr           *net.UDPAddr
	old, new       *ForwardConn
	oldEnd, newEnd *net.UnixConn
}

func newForwardPair(t *testing.T, f quiclb.CIDFormat) *forwardPair {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	file, err := udp.File()
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.FilePacketConn(file)
	file.Close()
	if err != nil {
		t.Fatal(err)
	}
	a, b, err := SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	oldEnd, err := PeerConn(a)
	if err != nil {
		t.Fatal(err)
	}
	newEnd, err := PeerConn(b)
	if err != nil {
		t.Fatal(err)
	}
	h := &forwardPair{
		addr:   udp.LocalAddr().(*net.UDPAddr),
		old:    NewForwardConn(udp, f, 0),
		new:    NewForwardConn(pc.(*net.UDPConn), f, 1),
		oldEnd: oldEnd, newEnd: newEnd,
	}
	t.Cleanup(func() {
		h.old.Close()
		h.new.Close()
	})
	return h
}

type datagram struct {
	data string
	from string
}

// reads reads c until it is closed.
func reads(c net.PacketConn) <-chan datagram {
	ch := make(chan datagram, 64)
	go func() {
		defer close(ch)
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				if isTimeout(err) {
					continue
				}
				return
			}
			ch <- datagram{string(buf[:n]), from.String()}
		}
	}()
	return ch
}

// expect checks that want arrives on ch, from the client, and nothing
// else arrives on other.
func expect(t *testing.T, who string, ch, other <-chan datagram, want string, client net.Addr) {
	t.Helper()
	select {
	case d := <-ch:
		if d.data != want || d.from != client.String() {
			t.Errorf("%s read %q from %s, want %q from %s", who, d.data, d.from, want, client)
		}
	case d := <-other:
		t.Errorf("%q reached the other process (from %s), want %s", d.data, d.from, who)
	case <-time.After(testutil.Scaled(2 * time.Second)):
		t.Errorf("%q did not reach %s", want, who)
	}
}

// TestForwardConnDatagrams sends datagrams of both generations and of a
// new connection to a socket shared by two processes, before, during and
// after the old process releases the socket.
func TestForwardConnDatagrams(t *testing.T) {
	f, _ := quiclb.NewCIDFormat(nil)
	h := newForwardPair(t, f)
	client, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	short := func(gen quiclb.Generation, tag string) string {
		b := make([]byte, f.Len())
		fillCID(quiclb.NewGenCIDGenerator(f, gen, 0), b)
		return string(append(append([]byte{0x40}, b...), tag...))
	}
	initial := string(append([]byte{0xc0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8}, "new connection"...))
	send := func(p string) {
		if _, err := client.WriteToUDP([]byte(p), h.addr); err != nil {
			t.Fatal(err)
		}
	}

	h.new.Await(h.newEnd)
	oldCh, newCh := reads(h.old), reads(h.new)
	// Before the release, the new process reads nothing.
	p := short(0, "before")
	send(p)
	expect(t, "the old process", oldCh, newCh, p, client.LocalAddr())

	if err := h.old.Release(h.oldEnd); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{short(0, "forwarded"), short(0, "forwarded again")} {
		send(p)
		expect(t, "the old process", oldCh, newCh, p, client.LocalAddr())
	}
	for _, p := range []string{short(1, "mine"), initial} {
		send(p)
		expect(t, "the new process", newCh, oldCh, p, client.LocalAddr())
	}
	// The old process answers on the socket itself.
	if _, err := h.old.WriteTo([]byte("reply"), client.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	client.SetReadDeadline(time.Now().Add(testutil.Scaled(2 * time.Second)))
	buf := make([]byte, 64)
	if n, from, err := client.ReadFromUDP(buf); err != nil || string(buf[:n]) != "reply" || from.String() != h.addr.String() {
		t.Errorf("the client read %q from %v (%v), want the reply from %s", buf[:n], from, err, h.addr)
	}
	if fw, dropped := h.new.Forwarded(); fw != 2 || dropped != 0 {
		t.Errorf("forwarded %d, dropped %d; want 2, 0", fw, dropped)
	}

	// The old process exits: the new one keeps everything.
	h.old.Close()
	deadline := time.Now().Add(testutil.Scaled(2 * time.Second))
	for h.new.mode.Load() != modeDirect && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	p = short(0, "after the old process exited")
	send(p)
	expect(t, "the new process", newCh, nil, p, client.LocalAddr())
}

// TestForwardConnOldProcessGone: a new process whose predecessor exits
// before releasing the socket reads it itself.
func TestForwardConnOldProcessGone(t *testing.T) {
	f, _ := quiclb.NewCIDFormat(nil)
	h := newForwardPair(t, f)
	h.new.Await(h.newEnd)
	ch := reads(h.new)
	h.oldEnd.Close()
	client, err := net.DialUDP("udp", nil, h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	client.Write([]byte("x"))
	expect(t, "the new process", ch, nil, "x", client.LocalAddr())
}

// TestForwardConnDeadline: quic-go's Transport.Close unblocks a read
// with a deadline, whatever the mode.
func TestForwardConnDeadline(t *testing.T) {
	f, _ := quiclb.NewCIDFormat(nil)
	for _, mode := range []string{"direct", "held", "released"} {
		h := newForwardPair(t, f)
		c := h.new
		switch mode {
		case "held":
			c.Await(h.newEnd)
		case "released":
			c = h.old
			if err := c.Release(h.oldEnd); err != nil {
				t.Fatal(err)
			}
		}
		done := make(chan error, 1)
		go func() {
			_, _, err := c.ReadFrom(make([]byte, 10))
			done <- err
		}()
		time.Sleep(20 * time.Millisecond)
		c.SetReadDeadline(time.Now())
		select {
		case err := <-done:
			if !isTimeout(err) {
				t.Errorf("%s: ReadFrom returned %v after the deadline, want a timeout", mode, err)
			}
		case <-time.After(testutil.Scaled(2 * time.Second)):
			t.Errorf("%s: ReadFrom still blocked after its deadline", mode)
		}
	}
}

// echoServer serves one quic-go Transport on c: every stream is echoed.
// It returns the number of connections accepted so far.
func echoServer(t *testing.T, c net.PacketConn, gen quiclb.Generation, f quiclb.CIDFormat, key *quic.StatelessResetKey) *atomic.Int32 {
	t.Helper()
	tr := &quic.Transport{Conn: c, ConnectionIDGenerator: quiclb.NewGenCIDGenerator(f, gen, 0), StatelessResetKey: key}
	ln, err := tr.Listen(serverTLS(t), &quic.Config{MaxIdleTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int32
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		tr.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			accepted.Add(1)
			wg.Go(func() {
				for {
					str, err := conn.AcceptStream(context.Background())
					if err != nil {
						return
					}
					io.Copy(str, str)
					str.Close()
				}
			})
		}
	})
	return &accepted
}

func echo(ctx context.Context, conn *quic.Conn, msg string) error {
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	str.SetDeadline(time.Now().Add(testutil.Scaled(5 * time.Second)))
	if _, err := str.Write([]byte(msg)); err != nil {
		return err
	}
	str.Close()
	got, err := io.ReadAll(str)
	if err == nil && string(got) != msg {
		err = errors.New("wrong echo: " + string(got))
	}
	return err
}

// TestForwardConnQUIC: a QUIC connection of the old process goes on
// after the release, through the new process; a new connection reaches
// the new process; once the old process is gone, the old connection gets
// a stateless reset from the new one (both have the same key).
func TestForwardConnQUIC(t *testing.T) {
	f, _ := quiclb.NewCIDFormat(nil)
	h := newForwardPair(t, f)
	var key quic.StatelessResetKey
	copy(key[:], "a shared stateless reset key....")
	oldAccepted := echoServer(t, h.old, 0, f, &key)
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Scaled(20*time.Second))
	defer cancel()
	clientTLS := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{testALPN}}
	conn, err := quic.DialAddr(ctx, h.addr.String(), clientTLS, &quic.Config{MaxIdleTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	if err := echo(ctx, conn, "before"); err != nil {
		t.Fatal(err)
	}

	h.new.Await(h.newEnd)
	newAccepted := echoServer(t, h.new, 1, f, &key)
	if err := h.old.Release(h.oldEnd); err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{"during 1", "during 2", "during 3"} {
		if err := echo(ctx, conn, msg); err != nil {
			t.Fatalf("the old process's connection after the release: %v", err)
		}
	}
	conn2, err := quic.DialAddr(ctx, h.addr.String(), clientTLS, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := echo(ctx, conn2, "new"); err != nil {
		t.Fatal(err)
	}
	conn2.CloseWithError(0, "")
	if o, n := oldAccepted.Load(), newAccepted.Load(); o != 1 || n != 1 {
		t.Errorf("accepted: old process %d, new process %d; want 1 each", o, n)
	}
	if fw, _ := h.new.Forwarded(); fw == 0 {
		t.Error("nothing was forwarded to the old process")
	}

	h.old.Close() // the old process is gone, without closing its connection
	deadline := time.Now().Add(testutil.Scaled(2 * time.Second))
	for h.new.mode.Load() != modeDirect && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	// quic-go resets only packets longer than 42 bytes: send more.
	err = echo(ctx, conn, strings.Repeat("after the old process exited ", 4))
	var reset *quic.StatelessResetError
	if !errors.As(err, &reset) {
		t.Errorf("the old connection after the old process exited: %v, want a stateless reset", err)
	}
}
