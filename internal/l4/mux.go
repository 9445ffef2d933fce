package l4

import (
	"context"
	"net"
	"sync"
)

// Handoff is a net.Listener fed by a TCP proxy with the TLS connections
// that no route passed through, so that an http.Server can terminate them
// (ServeTLS) on the same port as the passthrough names. Each connection
// it returns replays the ClientHello the proxy already read, and reports
// the client's addresses from the PROXY header when there was one.
//
// The http.Server owns the connections it accepts; TCP.Shutdown does not
// wait for them. Closing the Handoff (http.Server.Shutdown or Close does)
// makes the proxy close the connections it would have handed off.
type Handoff struct {
	addr net.Addr
	ch   chan net.Conn

	closeOnce sync.Once
	done      chan struct{}
}

// NewHandoff returns an open Handoff whose Addr is addr (the bind's
// listening address).
func NewHandoff(addr net.Addr) *Handoff {
	return &Handoff{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// Accept waits for the next connection handed off, or for Close; then it
// returns net.ErrClosed.
func (h *Handoff) Accept() (net.Conn, error) {
	select {
	case <-h.done:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-h.ch:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

// Close makes Accept return net.ErrClosed. Connections handed off
// earlier stay open.
func (h *Handoff) Close() error {
	h.closeOnce.Do(func() { close(h.done) })
	return nil
}

// Addr returns the address given to NewHandoff.
func (h *Handoff) Addr() net.Addr { return h.addr }

// deliver hands c to the next Accept. It reports false, leaving c to the
// caller, when the Handoff is closed or ctx ends first.
func (h *Handoff) deliver(ctx context.Context, c net.Conn) bool {
	select {
	case h.ch <- c:
		return true
	case <-h.done:
		return false
	case <-ctx.Done():
		return false
	}
}

// replayConn is an accepted connection some of whose bytes were already
// read: Read returns them first, then reads the socket. Its addresses are
// the client's (from the PROXY header when there was one).
type replayConn struct {
	net.Conn      // the socket
	prefix        []byte
	remote, local net.Addr
}

func (c *replayConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

func (c *replayConn) RemoteAddr() net.Addr { return c.remote }
func (c *replayConn) LocalAddr() net.Addr  { return c.local }
