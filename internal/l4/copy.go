package l4

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis/portcullis/internal/proxyproto"
)

// Relaying a TCP connection.
//
// Both directions are copied between the two *net.TCPConn sockets, so
// that on Linux the kernel moves the bytes with splice(2) and they never
// enter user space; a direction holds a splice pipe only while bytes are
// queued, so that an idle connection holds its two sockets and no other
// descriptor (copyStream). That leaves no per-chunk hook to notice
// traffic, so the idle timeout is measured by the kernel too: a timer per
// connection, firing every IdleTimeout/4, reads TCP_INFO of both sockets
// (tcpi_bytes_received + tcpi_bytes_acked, Linux ≥ 4.1) and closes the
// connection once the sum has not moved for IdleTimeout. The cost is two
// getsockopt calls per connection per IdleTimeout/4 and nothing per byte.
// Where TCP_INFO is not available (another OS, or a socket that is not
// TCP) the copy counts the bytes it writes instead, without splice.

// Why a relayed connection ended, for logs.
const (
	endDone     = "done"         // both directions reached EOF
	endIdle     = "idle timeout" // no byte moved for IdleTimeout
	endError    = "error"        // a read or write failed (reset, ...)
	endShutdown = "shutdown"     // closed by TCP.Shutdown
	endRefused  = "refused"      // a PROXY header from an untrusted address
)

// pipe relays bytes between a client and a server connection.
type pipe struct {
	// accepted is the client connection as accepted: the socket, or a
	// *proxyproto.Conn over it.
	accepted net.Conn
	// client is the client's socket, a *net.TCPConn in the fast path.
	client net.Conn
	// server is the server's socket.
	server net.Conn
	// idle is the idle timeout; ≤ 0: none.
	idle time.Duration

	// in and out count the bytes from the client to the server and back
	// (the access log's bytes in and out).
	in, out atomic.Int64

	// counted: the copy counts bytes in moved (no TCP_INFO here).
	counted bool
	moved   atomic.Uint64
	probe   progressProbe

	once   sync.Once
	reason string // why it ended; set once, by end
	err    error  // the error that ended it, if any
}

// clientSource prepares the copy from an accepted client connection: for
// a PROXY protocol connection it completes the check of an untrusted
// peer's first bytes (waiting for them) and takes the bytes the wrapper
// buffered, so that the rest can be read from the socket itself. It
// returns the bytes to write to the server first and the connection to
// copy from: the *net.TCPConn socket, so that io.Copy splices. err is the
// read error of the check, wrapping proxyproto.ErrUntrustedHeader for a
// header from an untrusted peer, or io.EOF when the client sent nothing.
func clientSource(c net.Conn) (first []byte, src net.Conn, err error) {
	pc, ok := c.(*proxyproto.Conn)
	if !ok {
		return nil, c, nil
	}
	if err := pc.Verify(); err != nil {
		return nil, nil, err
	}
	return pc.TakeBuffered(), pc.Raw(), nil
}

// newPipe prepares the relay of a client connection and server. client is
// the connection as accepted (the socket, or a *proxyproto.Conn over it);
// socket is the socket itself, which the server's bytes are written to.
func newPipe(client, socket, server net.Conn, idle time.Duration) *pipe {
	p := &pipe{accepted: client, client: socket, server: server, idle: idle}
	if idle > 0 {
		p.probe = newProgressProbe(p.client, p.server)
		p.counted = p.probe == nil
	}
	return p
}

// run relays until both directions end, closes both connections, and
// returns why it ended and the error that ended it, if any.
func (p *pipe) run() (reason string, err error) {
	var w *idleWatch
	if p.idle > 0 {
		w = startIdleWatch(p)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.direction(p.server, p.up)
	}()
	p.direction(p.client, func() error { return p.copy(p.client, p.server, &p.out) })
	wg.Wait()
	if w != nil {
		w.stop()
	}
	p.end(endDone, nil)
	p.client.Close()
	p.server.Close()
	return p.reason, p.err
}

// direction runs one direction's copy into dst. At EOF it half-closes dst
// (FIN) so that its peer sees the end while the other direction goes on;
// on an error it ends the whole relay.
func (p *pipe) direction(dst net.Conn, copyFn func() error) {
	err := copyFn()
	if err == nil {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			err = cw.CloseWrite()
		}
	}
	if err != nil {
		reason := endError
		if errors.Is(err, proxyproto.ErrUntrustedHeader) {
			reason = endRefused
		}
		p.end(reason, err)
	}
}

// up copies the client to the server.
func (p *pipe) up() error {
	first, src, err := clientSource(p.accepted)
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(first) > 0 {
		if err := p.write(p.server, first); err != nil {
			return err
		}
	}
	return p.copy(p.server, src, &p.in)
}

// write writes b to dst, counting it when the pipe counts.
func (p *pipe) write(dst net.Conn, b []byte) error {
	n, err := dst.Write(b)
	p.in.Add(int64(n))
	if p.counted {
		p.moved.Add(uint64(n))
	}
	return err
}

// copy copies src to dst, adding to dir what it moves, until EOF (nil)
// or an error. Uncounted, it
// copies between the sockets themselves, which splices on Linux
// (copyStream).
func (p *pipe) copy(dst, src net.Conn, dir *atomic.Int64) error {
	if p.counted {
		n, err := io.Copy(countingWriter{dst, &p.moved}, src)
		dir.Add(n)
		return err
	}
	return copyStream(dst, src, dir)
}

// end records why the relay ends (the first reason wins) and, for any
// reason but endDone, closes both connections so that both copies return.
func (p *pipe) end(reason string, err error) {
	p.once.Do(func() {
		p.reason, p.err = reason, err
		if reason == endDone {
			return
		}
		if reason == endError {
			// A reset or failure on one side: reset the other too, so
			// that its peer does not take the cut for a clean end.
			setLinger0(p.client)
			setLinger0(p.server)
		}
		p.client.Close()
		p.server.Close()
	})
}

func setLinger0(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
}

// countingWriter adds the bytes written to n.
type countingWriter struct {
	w net.Conn
	n *atomic.Uint64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(uint64(n))
	return n, err
}

// progressProbe returns a number that grows whenever a byte moves in
// either direction, and false when it cannot tell.
type progressProbe func() (uint64, bool)

// progress returns the pipe's activity counter (see progressProbe).
func (p *pipe) progress() (uint64, bool) {
	if p.counted {
		return p.moved.Load(), true
	}
	return p.probe()
}

// idleWatch closes a pipe that moved no byte for its idle timeout. It
// checks every idle/4, so a connection is closed between idle and 1.25 ×
// idle after its last byte.
type idleWatch struct {
	p      *pipe
	period time.Duration

	mu      sync.Mutex
	timer   *time.Timer
	stopped bool
	last    uint64
	active  time.Time // when last changed
}

// startIdleWatch starts watching p, before its copies start: if TCP_INFO
// cannot be read, it makes the copies count bytes instead.
func startIdleWatch(p *pipe) *idleWatch {
	w := &idleWatch{p: p, period: max(p.idle/4, time.Millisecond), active: time.Now()}
	var ok bool
	if w.last, ok = p.progress(); !ok {
		p.counted = true
		w.last = 0
	}
	w.mu.Lock()
	w.timer = time.AfterFunc(w.period, w.check)
	w.mu.Unlock()
	return w
}

func (w *idleWatch) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	now := time.Now()
	n, ok := w.p.progress()
	switch {
	case !ok:
		// The sockets are closing (TCP_INFO fails on a closed socket):
		// the relay is ending anyway.
	case n != w.last:
		w.last, w.active = n, now
	case now.Sub(w.active) >= w.p.idle:
		w.stopped = true
		w.p.end(endIdle, nil)
		return
	}
	w.timer.Reset(w.period)
}

func (w *idleWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.timer.Stop()
}
