package accept

import (
	"context"
	"net"
	"sync"
)

// Listener is a net.Listener fed by the accept path instead of a socket:
// an http.Server serves on it the connections that the path leaves to
// HTTP (every connection of a plain HTTP bind, those of a bind with
// accept_proxy once their header is read, the TLS connections no sni
// route passes through). Each connection it returns closes with its
// Ticket released, so the Gate counts it until the http.Server closes it.
//
// The http.Server owns the connections it accepts. Closing the Listener
// (http.Server.Shutdown or Close does) makes the path close the
// connections it would have given it.
type Listener struct {
	addr net.Addr
	ch   chan net.Conn

	closeOnce sync.Once
	done      chan struct{}
}

// NewListener returns an open Listener whose Addr is addr (the bind's
// listening address).
func NewListener(addr net.Addr) *Listener {
	return &Listener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// Accept waits for the next connection, or for Close; then it returns
// net.ErrClosed.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case <-l.done:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close makes Accept return net.ErrClosed. Connections accepted earlier
// stay open.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

// Addr returns the address given to NewListener.
func (l *Listener) Addr() net.Addr { return l.addr }

// Forward gives c to the next Accept, as a net.Conn whose Close releases
// c.Ticket, and marks c Routed. It reports false, leaving c to the
// caller, when the Listener is closed or ctx ends first.
func (l *Listener) Forward(ctx context.Context, c *Conn) bool {
	var nc net.Conn = c.Conn
	if c.Ticket != nil {
		nc = c.Ticket.Wrap(nc)
	}
	select {
	case l.ch <- nc:
		c.Routed()
		return true
	case <-l.done:
		return false
	case <-ctx.Done():
		return false
	}
}

// ServeTCP forwards c (Forward), waiting for the next Accept; when the
// Listener is closed first, it closes c.
func (l *Listener) ServeTCP(c *Conn) {
	if !l.Forward(context.Background(), c) {
		c.Close()
	}
}
