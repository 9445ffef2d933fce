package proxyproto

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	pp "github.com/pires/go-proxyproto"
)

// Conn is an accepted connection after its PROXY header (from a trusted
// peer), or with the check that none is sent still to come (from an
// untrusted peer). It is a net.Conn: Write, Close and the deadlines are the
// underlying connection's.
//
// Read returns the bytes the peer sent after the header, starting with those
// Accept read past it (Buffered). To copy the stream without the wrapper in
// the way, io.Copy(dst, c) uses WriteTo, which hands the underlying
// connection to dst's ReadFrom (a *net.TCPConn to *net.TCPConn copy splices);
// io.Copy(c, src) likewise uses ReadFrom. Raw gives the underlying connection
// to a caller that wants it directly.
//
// Read, Verify, TakeBuffered, Raw and WriteTo share one lock: while one of
// them waits for an untrusted peer's first bytes, the others wait too.
type Conn struct {
	conn          net.Conn
	header        *pp.Header
	remote, local net.Addr // from the header; nil: the connection's own

	mu      sync.Mutex
	pending bool     // untrusted peer: first bytes not checked yet
	first   [12]byte // untrusted peer: bytes read while checking
	nfirst  int
	buf     []byte // read from the connection, not returned by Read yet
	err     error  // sticky: the untrusted peer sent a PROXY signature
}

// Header returns the PROXY header the peer sent, or nil when none was sent
// (the peer is not trusted).
func (c *Conn) Header() *pp.Header { return c.header }

// RemoteAddr returns the client address from the PROXY header, or the
// connection's own peer address when there is none (untrusted peer, LOCAL
// command, or a transport other than TCP over IPv4 or IPv6).
func (c *Conn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.conn.RemoteAddr()
}

// LocalAddr returns the destination address from the PROXY header (the
// address the client connected to at the load balancer), or the
// connection's own local address when there is none, as RemoteAddr.
func (c *Conn) LocalAddr() net.Addr {
	if c.local != nil {
		return c.local
	}
	return c.conn.LocalAddr()
}

// Write writes to the connection.
func (c *Conn) Write(p []byte) (int, error) { return c.conn.Write(p) }

// Close closes the connection.
func (c *Conn) Close() error { return c.conn.Close() }

// SetDeadline sets the connection's read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }

// SetReadDeadline sets the connection's read deadline; it also bounds the
// untrusted first-bytes check done by Read, Verify and WriteTo.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetWriteDeadline sets the connection's write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// Peer returns the address of the connection's own peer: the load balancer
// that sent the header, or the client itself when there was none.
func (c *Conn) Peer() net.Addr { return c.conn.RemoteAddr() }

// Read reads the bytes that follow the header. For an untrusted peer, the
// first call waits until the first bytes can be told apart from a PROXY
// signature: at most 12 bytes, and no longer than the peer keeps sending a
// prefix of one ("P", "PRO", "\r\n"). Data that is not a signature is
// returned unchanged as soon as that is known. A signature makes Read (and
// every later call) return an error wrapping ErrUntrustedHeader.
func (c *Conn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if len(p) == 0 {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	if err := c.verifyLocked(); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		if len(c.buf) == 0 {
			c.buf = nil
		}
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	return c.conn.Read(p)
}

// Verify completes the check of an untrusted peer's first bytes, reading
// from the connection until it can decide (see Read), and returns an error
// wrapping ErrUntrustedHeader if they start a PROXY signature, or the read
// error that stopped it (io.EOF when the peer closed without sending
// anything). The bytes it read stay Buffered. For a trusted peer it returns
// nil at once: Accept already read the header.
func (c *Conn) Verify() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.verifyLocked()
}

// Buffered returns how many bytes were read from the connection past the
// header (or, for an untrusted peer, during the completed check) that Read
// has not returned yet.
func (c *Conn) Buffered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.buf)
}

// TakeBuffered returns the Buffered bytes and forgets them: Read no longer
// returns them, and the caller must deliver them before anything read from
// Raw. It returns nil when there are none, and also for an untrusted peer
// whose first bytes are not checked yet (call Verify or Read first).
func (c *Conn) TakeBuffered() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending || c.err != nil {
		return nil
	}
	b := c.buf
	c.buf = nil
	return b
}

// Raw returns the underlying connection once reading from it directly loses
// nothing: no bytes are Buffered (Read consumed them or TakeBuffered took
// them) and, for an untrusted peer, the first bytes passed the check (after
// a successful Verify or Read). Until then it returns c itself, which is
// always correct to read from but keeps the wrapper in the copy path (no
// splice). The underlying connection's addresses are the socket's, not the
// header's.
func (c *Conn) Raw() net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending || c.err != nil || len(c.buf) > 0 {
		return c
	}
	return c.conn
}

// WriteTo copies the rest of the stream to w until EOF: the first-bytes
// check of an untrusted peer (Verify), the Buffered bytes, then the
// underlying connection through w's ReadFrom when w has one, so that
// io.Copy(backend, c) splices between two TCP connections. It returns nil at
// EOF, like io.Copy.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	c.mu.Lock()
	if err := c.verifyLocked(); err != nil {
		c.mu.Unlock()
		if err == io.EOF {
			err = nil
		}
		return 0, err
	}
	b := c.buf
	c.buf = nil
	c.mu.Unlock()

	var total int64
	if len(b) > 0 {
		n, err := w.Write(b)
		total += int64(n)
		if err == nil && n < len(b) {
			err = io.ErrShortWrite
		}
		if err != nil {
			return total, err
		}
	}
	var n int64
	var err error
	if rf, ok := w.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(c.conn)
	} else {
		n, err = io.Copy(w, c.conn)
	}
	return total + n, err
}

// ReadFrom copies r to the connection until EOF, through the underlying
// connection's ReadFrom when it has one, so that io.Copy(c, backend)
// splices between two TCP connections. Writes do not depend on the header.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	// The wrapper hides any ReadFrom, so io.Copy cannot come back here.
	return io.Copy(struct{ io.Writer }{c.conn}, r)
}

// verifyLocked runs the untrusted first-bytes check until it decides; c.mu
// is held. A timeout, or any read error other than EOF, leaves the check
// pending: bytes that may begin a signature are never handed out while more
// may follow. After EOF they are data, since nothing can complete them.
func (c *Conn) verifyLocked() error {
	if c.err != nil {
		return c.err
	}
	for c.pending {
		switch classify(c.first[:c.nfirst]) {
		case sigV1Kind, sigV2Kind:
			c.pending = false
			c.err = fmt.Errorf("proxyproto: peer %s: %w: it starts with %q but is not in trusted_proxies; if it is a load balancer of yours, add its network to trusted_proxies, otherwise turn off its send-proxy",
				c.conn.RemoteAddr(), ErrUntrustedHeader, c.first[:c.nfirst])
			return c.err
		case sigNone:
			c.pending = false
			c.buf = c.first[:c.nfirst]
			return nil
		}
		n, err := c.conn.Read(c.first[c.nfirst:])
		c.nfirst += n
		if err != nil {
			if n > 0 && classify(c.first[:c.nfirst]) != sigUndecided {
				continue // decide on what arrived; the error recurs on the next read
			}
			if errors.Is(err, io.EOF) && c.nfirst > 0 {
				c.pending = false
				c.buf = c.first[:c.nfirst]
				return nil
			}
			return err
		}
	}
	return nil
}
