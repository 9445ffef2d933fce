package h3

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portcullis/portcullis/internal/quiclb"
)

// ForwardConn is the net.PacketConn through which quic-go uses a bind's
// only UDP socket when no steering program separates the two processes of
// a binary upgrade (one socket, no second set: see docs/quic.md,
// "Without the steering program"). The kernel hands each datagram of that
// socket to whichever process reads first, so during an upgrade one
// process reads it and passes on what belongs to the other:
//
//   - the new process starts with Await: it reads nothing until the old
//     one says so, then reads every datagram and forwards those whose
//     connection ID names the other generation (quiclb.PacketGeneration) to the
//     old process, prefixed with the client's address, over a
//     SOCK_SEQPACKET socket pair; everything else, new connections
//     included, is its own;
//   - the old process, once the new one is ready, calls Release: it stops
//     reading the socket, reads only what is forwarded, and then tells the
//     new process to start. It still writes its replies on the socket
//     itself.
//
// When the old process exits (its end of the pair closes), the new one
// stops forwarding: packets of the old connections then reach its own
// quic-go, which answers them with a stateless reset (with a shared
// stateless_reset_key the clients recognize it). Forwarding drops a
// datagram when the pair is full; QUIC retransmits it.
//
// It hides the *net.UDPConn from quic-go, which then reads one datagram
// per call, without GSO, ECN or batches: the price of the unsteered mode.
// Use it only there.
type ForwardConn struct {
	udp *net.UDPConn
	f   quiclb.CIDFormat
	gen quiclb.Generation

	mode atomic.Int32
	// peer is the pair's end: where the new process forwards, and what
	// the old one reads.
	peer     atomic.Pointer[net.UnixConn]
	released chan struct{} // closed when Await's wait is over
	closed   chan struct{}
	wake     chan struct{} // a new read deadline, for a waiting ReadFrom

	mu sync.Mutex // mode changes, deadlines, closing
	// deadline is the read deadline quic-go asked for.
	deadline  atomic.Pointer[time.Time]
	closeOnce sync.Once
	rbuf      []byte // Release's side: one forwarded message

	forwarded, dropped atomic.Uint64
	// counters, when set, count the datagrams ReadFrom returns and
	// WriteTo sends.
	counters *shardCounters
}

// Modes of a ForwardConn.
const (
	modeDirect    = iota // read the socket, keep everything
	modeHold             // new process: read nothing until released
	modeForward          // new process: read the socket, forward the old generation's datagrams
	modeForwarded        // old process: read only what is forwarded
)

// forwardHeader is the length of the client address before each
// forwarded datagram: a flag (1: IPv4), the address as 16 bytes, the port.
const forwardHeader = 1 + 16 + 2

// NewForwardConn wraps udp, the bind's socket, for a process of
// generation gen whose connection IDs are in format f. It reads the
// socket directly until Await or Release.
func NewForwardConn(udp *net.UDPConn, f quiclb.CIDFormat, gen quiclb.Generation) *ForwardConn {
	return &ForwardConn{
		udp:      udp,
		f:        f,
		gen:      gen,
		released: make(chan struct{}),
		closed:   make(chan struct{}),
		wake:     make(chan struct{}, 1),
	}
}

// Generation is the generation whose connections this process keeps.
func (c *ForwardConn) Generation() quiclb.Generation { return c.gen }

// Forwarded counts the datagrams forwarded to the other process, and
// dropped those it could not take (its end full).
func (c *ForwardConn) Forwarded() (forwarded, dropped uint64) {
	return c.forwarded.Load(), c.dropped.Load()
}

// Await makes the new process of an upgrade wait before it reads the
// socket: until the old process at the other end of peer sends its
// go-ahead (Release), or is gone. From then on it forwards the old
// generation's datagrams to peer, until peer's other end closes or
// StopForwarding. c owns peer from now on.
func (c *ForwardConn) Await(peer *net.UnixConn) {
	c.mu.Lock()
	c.peer.Store(peer)
	c.mode.Store(modeHold)
	c.mu.Unlock()
	go func() {
		buf := make([]byte, 16)
		_, err := peer.Read(buf)
		c.mu.Lock()
		if err == nil && c.mode.Load() == modeHold {
			c.mode.Store(modeForward)
		} else if c.mode.Load() == modeHold {
			c.mode.Store(modeDirect)
		}
		c.mu.Unlock()
		close(c.released)
		if err == nil {
			// The old process sends nothing more: the read ends when it
			// exits and its end closes.
			peer.Read(buf)
		}
		c.StopForwarding()
	}()
}

// StopForwarding makes the new process keep every datagram from now on,
// and closes the pair: the old process is gone.
func (c *ForwardConn) StopForwarding() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mode.Load() == modeForward {
		c.mode.Store(modeDirect)
	}
	if p := c.peer.Load(); p != nil && c.mode.Load() != modeForwarded {
		c.peer.Store(nil)
		p.Close()
	}
}

// Release makes the old process of an upgrade stop reading the socket
// and read what the new process at the other end of peer forwards; then
// it tells the new process to start reading. Datagrams that arrive
// meanwhile wait in the socket. c owns peer from now on. Should the new
// process go away, c reads the socket again.
func (c *ForwardConn) Release(peer *net.UnixConn) error {
	c.mu.Lock()
	c.peer.Store(peer)
	if d := c.deadline.Load(); d != nil {
		peer.SetReadDeadline(*d)
	}
	c.mode.Store(modeForwarded)
	// Wake a ReadFrom blocked on the socket; it then reads peer.
	c.udp.SetReadDeadline(time.Unix(1, 0))
	c.mu.Unlock()
	_, err := peer.Write([]byte("go"))
	return err
}

// ReadFrom reads the next datagram this process keeps.
func (c *ForwardConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := c.readFrom(p)
	if err == nil && c.counters != nil {
		c.counters.packets.Add(1)
	}
	return n, addr, err
}

func (c *ForwardConn) readFrom(p []byte) (int, net.Addr, error) {
	for {
		switch c.mode.Load() {
		case modeHold:
			if err := c.waitReleased(); err != nil {
				return 0, nil, err
			}
			continue
		case modeForwarded:
			n, addr, err := c.readForwarded(p)
			if err != nil && !isTimeout(err) && c.direct() {
				continue // the new process is gone: read the socket again
			}
			return n, addr, err
		}
		n, from, err := c.udp.ReadFromUDPAddrPort(p)
		if err != nil {
			if isTimeout(err) && c.mode.Load() == modeForwarded && !c.deadlinePassed() {
				continue // Release woke us
			}
			return 0, nil, err
		}
		if c.mode.Load() == modeHold {
			// Await came while this read was blocked: the datagram is
			// handled as the mode that follows says.
			if err := c.waitReleased(); err != nil {
				return 0, nil, err
			}
		}
		if c.mode.Load() == modeForward {
			if g, ok := quiclb.PacketGeneration(c.f, p[:n]); ok && g != c.gen && c.forward(p[:n], from) {
				continue
			}
		}
		return n, net.UDPAddrFromAddrPort(from), nil
	}
}

// direct goes back to reading the socket after Release, when the new
// process went away.
func (c *ForwardConn) direct() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.closed:
		return false
	default:
	}
	if c.mode.Load() != modeForwarded {
		return c.mode.Load() != modeHold
	}
	c.mode.Store(modeDirect)
	if p := c.peer.Swap(nil); p != nil {
		p.Close()
	}
	var d time.Time
	if dl := c.deadline.Load(); dl != nil {
		d = *dl
	}
	c.udp.SetReadDeadline(d)
	return true
}

func (c *ForwardConn) waitReleased() error {
	for {
		timeout := time.Duration(-1)
		if d := c.deadline.Load(); d != nil && !d.IsZero() {
			if timeout = time.Until(*d); timeout <= 0 {
				return os.ErrDeadlineExceeded
			}
		}
		if err := c.waitOnce(timeout); err != errWoken {
			return err
		}
	}
}

var errWoken = errors.New("woken")

// waitOnce waits for the release, a close, timeout (negative: none) or a
// new deadline (errWoken).
func (c *ForwardConn) waitOnce(timeout time.Duration) error {
	var expired <-chan time.Time
	if timeout >= 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-c.released:
		return nil
	case <-c.closed:
		return net.ErrClosed
	case <-expired:
		return os.ErrDeadlineExceeded
	case <-c.wake:
		return errWoken
	}
}

// readForwarded reads one datagram the new process forwarded.
func (c *ForwardConn) readForwarded(p []byte) (int, net.Addr, error) {
	peer := c.peer.Load()
	if peer == nil {
		return 0, nil, net.ErrClosed
	}
	if c.rbuf == nil {
		c.rbuf = make([]byte, forwardHeader+65536)
	}
	for {
		n, err := peer.Read(c.rbuf)
		if err != nil {
			return 0, nil, err
		}
		if n < forwardHeader {
			continue
		}
		addr := netip.AddrFrom16([16]byte(c.rbuf[1:17]))
		if c.rbuf[0] == 1 {
			addr = addr.Unmap()
		}
		port := binary.BigEndian.Uint16(c.rbuf[17:19])
		return copy(p, c.rbuf[forwardHeader:n]), net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, port)), nil
	}
}

// forward passes a datagram of the other generation to the old process.
// It reports false when there is nobody to forward to: the datagram is
// then this process's.
func (c *ForwardConn) forward(b []byte, from netip.AddrPort) bool {
	peer := c.peer.Load()
	if peer == nil {
		return false
	}
	var hdr [forwardHeader]byte
	if from.Addr().Is4() {
		hdr[0] = 1
	}
	a := from.Addr().As16()
	copy(hdr[1:17], a[:])
	binary.BigEndian.PutUint16(hdr[17:], from.Port())
	rc, err := peer.SyscallConn()
	if err != nil {
		c.StopForwarding()
		return false
	}
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		_, serr = unix.SendmsgBuffers(int(fd), [][]byte{hdr[:], b}, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		return true
	})
	switch {
	case err == nil && serr == nil:
		c.forwarded.Add(1)
	case errors.Is(serr, unix.EAGAIN), errors.Is(serr, unix.ENOBUFS):
		c.dropped.Add(1)
	default:
		c.StopForwarding()
		return false
	}
	return true
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (c *ForwardConn) deadlinePassed() bool {
	d := c.deadline.Load()
	return d != nil && !d.IsZero() && !time.Now().Before(*d)
}

// WriteTo writes on the socket, whichever process reads it.
func (c *ForwardConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	n, err := c.udp.WriteTo(p, addr)
	if err == nil && c.counters != nil {
		c.counters.sent.Add(1)
	}
	return n, err
}

// Close closes this process's descriptor of the socket and its end of
// the pair.
func (c *ForwardConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	c.mu.Lock()
	p := c.peer.Swap(nil)
	c.mu.Unlock()
	if p != nil {
		p.Close()
	}
	return c.udp.Close()
}

// LocalAddr is the socket's address.
func (c *ForwardConn) LocalAddr() net.Addr { return c.udp.LocalAddr() }

// SetDeadline sets the read and write deadlines.
func (c *ForwardConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.udp.SetWriteDeadline(t)
}

// SetReadDeadline applies to whatever ReadFrom reads: the socket, the
// pair, or the wait before either.
func (c *ForwardConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline.Store(&t)
	select {
	case c.wake <- struct{}{}:
	default:
	}
	if c.mode.Load() == modeForwarded {
		if p := c.peer.Load(); p != nil {
			return p.SetReadDeadline(t)
		}
		return nil
	}
	return c.udp.SetReadDeadline(t)
}

// SetWriteDeadline sets the socket's write deadline.
func (c *ForwardConn) SetWriteDeadline(t time.Time) error { return c.udp.SetWriteDeadline(t) }

// SetReadBuffer does nothing: the socket's buffers were sized when it was
// bound (rcvbuf, sndbuf), and quic-go would otherwise set them to its own
// default.
func (c *ForwardConn) SetReadBuffer(int) error { return nil }

// SetWriteBuffer does nothing, as SetReadBuffer.
func (c *ForwardConn) SetWriteBuffer(int) error { return nil }

// SocketPair returns the two ends of a SOCK_SEQPACKET socket pair for
// Await and Release: unlike a datagram pair, its queue is bounded by the
// socket buffers, not by net.unix.max_dgram_qlen (10 in a new network
// namespace). Both ends are close-on-exec.
func SocketPair() (*os.File, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	for _, fd := range fds {
		// Room for a burst of forwarded datagrams; the kernel caps it at
		// net.core.wmem_max.
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
	}
	return os.NewFile(uintptr(fds[0]), "forward"), os.NewFile(uintptr(fds[1]), "forward"), nil
}

// PeerConn turns an end of SocketPair (or one passed in the handoff) into the
// connection Await and Release take. The file is closed: the connection
// has its own descriptor.
func PeerConn(f *os.File) (*net.UnixConn, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, &net.OpError{Op: "forward", Net: "unixpacket", Err: syscall.EPROTOTYPE}
	}
	return uc, nil
}
