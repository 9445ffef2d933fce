package runtime

import (
	"context"
	"fmt"
	"github.com/portcullis/portcullis/internal/accesslog"
	"net"
	"sync/atomic"

	"github.com/portcullis/portcullis/internal/compile"
	"github.com/portcullis/portcullis/internal/l4"
	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/upstream"
)

// relayUnit is the socket of a udp frontend's bind and its relay. The
// relay reads a duplicate of the socket (net.FilePacketConn), so that a
// replacement relay can read another duplicate while this one ends its
// flows.
type relayUnit struct {
	s     *serving
	us    atomic.Pointer[unitSpec]
	socks socketSet
	// cur is the relay whose backend new flows use.
	cur      atomic.Pointer[compile.Relay]
	pc       *net.UDPConn
	udp      *l4.UDP
	stopping atomic.Bool
}

// startRelay starts the relay of a "udp" unit on sock.
func (s *serving) startRelay(us unitSpec, sock *listen.Socket) (*relayUnit, error) {
	pc, err := net.FilePacketConn(sock.File)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", sock.Spec, err)
	}
	udp, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("%s: not a UDP socket", sock.Spec)
	}
	r := us.relay
	u := &relayUnit{s: s, pc: udp}
	u.us.Store(&us)
	u.socks.list = []*listen.Socket{sock}
	u.cur.Store(r)
	u.udp = &l4.UDP{
		Frontend: r.Spec.Frontend,
		Backend: func() (*upstream.Backend, string) {
			cur := u.cur.Load()
			if cur.Backend == nil {
				return nil, ""
			}
			return cur.Backend, cur.BackendName
		},
		IdleTimeout: r.IdleTimeout,
		Log:         s.log,
		AccessLog:   func() *accesslog.Logger { return u.cur.Load().Log },
		Gate:        r.Gate,
		Metrics:     s.metrics().Frontend(r.Spec.Frontend),
	}
	go func() {
		if err := u.udp.Serve(udp); err != nil && !u.stopping.Load() {
			s.fail(fmt.Errorf("%s: %w", sock.Spec, err))
		}
	}()
	return u, nil
}

func (u *relayUnit) spec() unitSpec            { return *u.us.Load() }
func (u *relayUnit) sockets() []*listen.Socket { return u.socks.sockets() }
func (u *relayUnit) release()                  { u.socks.release() }
func (u *relayUnit) settle(context.Context)    {}

func (u *relayUnit) update(us unitSpec) {
	u.us.Store(&us)
	u.socks.setSpecs(us.specs)
	u.cur.Store(us.relay)
}

// stopAccepting stops reading datagrams: the socket (unless a replacement
// took it) and the relay's duplicate are closed.
func (u *relayUnit) stopAccepting() {
	u.stopping.Store(true)
	u.socks.closeFiles()
	u.pc.Close()
}

// drain ends every flow (their replies could no longer reach the clients
// through the closed socket) and waits for the relay's goroutines.
func (u *relayUnit) drain(ctx context.Context) error {
	return u.udp.Shutdown(ctx)
}

func (u *relayUnit) close() {
	u.stopAccepting()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	go u.udp.Shutdown(ctx)
}
