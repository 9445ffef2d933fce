package h3

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlogwriter"

	"github.com/portcullis/portcullis/internal/testutil"
)

// TestMaxHandshakesWithQuicGo holds handshakes in progress on a real
// Transport (clients whose server's answers are lost) and checks that
// beyond max_handshakes a connection attempt is refused with
// CONNECTION_REFUSED before quic-go creates anything for it (its
// Config.Tracer, called for every connection it creates, is not called),
// and that the count ends when a handshake times out or completes.
func TestMaxHandshakesWithQuicGo(t *testing.T) {
	const most = 4
	var fired sync.Map // limit name → *atomic.Int64
	h, err := NewHandshakes(HandshakeLimits{Retry: RetryNever, RetryRate: 1, RetryInProgress: 1, MaxHandshakes: most}, func(l string) {
		n, _ := fired.LoadOrStore(l, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
	})
	if err != nil {
		t.Fatal(err)
	}
	var created atomic.Int64
	srv := startServer(t, serverOptions{
		transport: &quic.Transport{ConnContext: h.ConnContext},
		config: quic.Config{
			HandshakeIdleTimeout: testutil.Scaled(time.Second),
			Tracer: func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace {
				created.Add(1)
				return nil
			},
		},
		onAccept: func(c *quic.Conn) { HandshakeDone(c.Context()) },
	})
	hole := newBlackHole(t, srv.addr)

	// Six clients whose handshakes never complete: the server's
	// answers fall into the hole. Each retransmits its Initial.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	for range most + 2 {
		wg.Go(func() {
			udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				return
			}
			defer udp.Close()
			tr := &quic.Transport{Conn: udp}
			defer tr.Close()
			tr.Dial(ctx, hole, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{testALPN}}, &quic.Config{HandshakeIdleTimeout: time.Minute})
		})
	}
	waitFor(t, func() bool { return h.Stats().Refused >= 2 })
	if n := h.InProgress(); n != most {
		t.Fatalf("%d handshakes in progress, want max_handshakes (%d)", n, most)
	}
	if n := created.Load(); n != most {
		t.Fatalf("quic-go created %d connections, want %d: a refused attempt must not allocate one", n, most)
	}

	// A client that would complete its handshake is refused too.
	dctx, dcancel := context.WithTimeout(context.Background(), testutil.Scaled(5*time.Second))
	_, err = quic.DialAddr(dctx, srv.addr.String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{testALPN}}, nil)
	dcancel()
	var te *quic.TransportError
	if !errors.As(err, &te) || te.ErrorCode != quic.ConnectionRefused {
		t.Fatalf("dial at max_handshakes: %v, want CONNECTION_REFUSED", err)
	}
	if n := created.Load(); n != most {
		t.Fatalf("quic-go created %d connections, want %d", n, most)
	}
	if n, _ := fired.Load(LimitMaxHandshakes); n == nil || n.(*atomic.Int64).Load() != int64(h.Stats().Refused) {
		t.Errorf("max_handshakes fired %v times, want once per refusal (%d)", n, h.Stats().Refused)
	}

	// The stuck handshakes time out (handshake idle timeout, 1s): room
	// again. The clients' retransmissions may start new ones meanwhile:
	// stop them first.
	cancel()
	wg.Wait()
	waitFor(t, func() bool { return h.InProgress() == 0 })
	roundTrip(t, context.Background(), srv.addr)
	if n := h.InProgress(); n != 0 {
		t.Fatalf("%d handshakes in progress after a completed one, want 0 (HandshakeDone at accept)", n)
	}
}

// newBlackHole forwards datagrams from clients to server and drops what
// comes back: handshakes through it never complete. It returns its
// address.
func newBlackHole(t *testing.T, server *net.UDPAddr) *net.UDPAddr {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err == nil && from.AddrPort() != server.AddrPort() {
				c.WriteToUDP(buf[:n], server)
			}
		}
	}()
	return c.LocalAddr().(*net.UDPAddr)
}
