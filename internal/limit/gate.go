package limit

import (
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// Gate admits the connections accepted on one bind of a frontend:
// each is counted against the frontend's Conns (and the process's, its
// parent) until it closes; one over a limit is closed at once, and the
// refusals are summarized in Events ("limit reached", with the limit's
// name). A connection over a limit is closed rather than left in the
// kernel's backlog, so that its client learns at once and the process
// never holds more descriptors than its limits allow.
type Gate struct {
	Conns  *Conns
	Events *Events
	// Frontend and Address name the bind in log lines.
	Frontend, Address string
	// Trusted, when set, reports the peers whose connections carry the
	// client's address in a PROXY header: they are counted in the totals
	// at accept, and against their client once Ticket.Move names it.
	Trusted func(netip.Addr) bool
}

// Ticket is the count of one admitted connection.
type Ticket struct {
	g      *Gate
	client netip.Addr
	done   atomic.Bool
}

// Hold admits c: it returns its ticket, or nil when a limit refused it
// (c is then closed). It leaves c as it is, for the layer-4 relay, which
// needs the socket itself; Release must follow.
func (g *Gate) Hold(c net.Conn) *Ticket {
	client := AddrOf(c.RemoteAddr())
	if g.Trusted != nil && client.IsValid() && g.Trusted(client) {
		client = netip.Addr{}
	}
	t := g.HoldAddr(client)
	if t == nil {
		c.Close()
	}
	return t
}

// HoldAddr admits one connection of client that is not a net.Conn (a UDP
// flow of the layer-4 relay): it returns its ticket, or nil when a limit
// refused it. Trusted is not consulted. Release must follow.
func (g *Gate) HoldAddr(client netip.Addr) *Ticket {
	if refused := g.Conns.Acquire(client); refused != "" {
		g.refused(refused)
		return nil
	}
	return &Ticket{g: g, client: client}
}

// Admit admits c and returns it wrapped so that closing it releases its
// count, or nil when a limit refused it (c is then closed).
func (g *Gate) Admit(c net.Conn) net.Conn {
	t := g.Hold(c)
	if t == nil {
		return nil
	}
	return t.Wrap(c)
}

func (g *Gate) refused(limit string) {
	if g.Events != nil {
		g.Events.Note("limit reached, connection closed", nil, "limit", limit, "frontend", g.Frontend, "address", g.Address)
	}
}

// Release ends the count; later calls do nothing. Nil-safe.
func (t *Ticket) Release() {
	if t != nil && !t.done.Swap(true) {
		t.g.Conns.Release(t.client)
	}
}

// Move counts the connection against client instead: the address a
// trusted PROXY header names. It reports false, and releases the ticket,
// when client is at max_conns_per_client; the caller closes the
// connection.
func (t *Ticket) Move(client net.Addr) bool {
	ip := AddrOf(client)
	if t == nil || !ip.IsValid() || ip == t.client || t.done.Load() {
		return true
	}
	c := t.g.Conns
	// Count the new client before releasing the old one, so the totals
	// never dip: a plain Acquire would count the connection twice in the
	// totals for a moment and could refuse it at max_conns.
	if !c.moveClient(t.client, ip) {
		t.done.Store(true)
		c.Release(t.client)
		t.g.refused(MaxConnsPerClient)
		return false
	}
	t.client = ip
	return true
}

// Wrap returns c with a Close that also releases t.
func (t *Ticket) Wrap(c net.Conn) net.Conn { return &conn{Conn: c, t: t} }

// conn releases its ticket when closed.
type conn struct {
	net.Conn
	t *Ticket
	// read counts the bytes read; timedOut is set when a read ended at
	// a deadline that was not moved into the past to interrupt it (a
	// server's own timeout); interrupt says the last read deadline was
	// in the past. See HeadStats.
	read      atomic.Int64
	timedOut  atomic.Bool
	interrupt atomic.Bool
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && !c.interrupt.Load() {
		c.timedOut.Store(true)
	}
	return n, err
}

func (c *conn) SetReadDeadline(t time.Time) error {
	c.interrupt.Store(!t.IsZero() && t.Before(time.Now()))
	return c.Conn.SetReadDeadline(t)
}

func (c *conn) SetDeadline(t time.Time) error {
	c.interrupt.Store(!t.IsZero() && t.Before(time.Now()))
	return c.Conn.SetDeadline(t)
}

// HeadStats returns, for a connection a Gate admitted (or a *tls.Conn
// over one), how many bytes it read and whether a read of it timed out
// at a server's own deadline; ok is false for other connections. For a
// connection that served no request, they tell its end: a request head
// not read in time (header_timeout), or too long (max_header_bytes).
func HeadStats(c net.Conn) (read int64, timedOut, ok bool) {
	if tc, isTLS := c.(*tls.Conn); isTLS {
		c = tc.NetConn()
	}
	lc, ok := c.(*conn)
	if !ok {
		return 0, false, false
	}
	return lc.read.Load(), lc.timedOut.Load(), true
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.t.Release()
	return err
}

// NetConn returns the wrapped connection, as tls.Conn's does.
func (c *conn) NetConn() net.Conn { return c.Conn }

// Listener returns ln with every accepted connection admitted by g; a
// refused one is skipped. Accept errors are summarized in g.Events
// ("accept failed"), running out of descriptors above all, which would
// otherwise be invisible or flood the log.
func (g *Gate) Listener(ln net.Listener) net.Listener { return &listener{Listener: ln, g: g} }

type listener struct {
	net.Listener
	g *Gate
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				l.g.AcceptFailed(err)
			}
			return nil, err
		}
		if c = l.g.Admit(c); c != nil {
			return c, nil
		}
	}
}

// AcceptFailed notes an accept error of the bind. Running out of
// descriptors is named as such: "out of file descriptors".
func (g *Gate) AcceptFailed(err error) {
	if g.Events == nil {
		return
	}
	msg := "accept failed"
	if OutOfResources(err) {
		msg = "accept failed: out of file descriptors or memory"
	}
	g.Events.Note(msg, err, "frontend", g.Frontend, "address", g.Address)
}

// OutOfResources reports whether err is the process or the system
// running out of descriptors, memory or socket buffers: a failure of this
// process, never evidence against a peer.
func OutOfResources(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.EADDRNOTAVAIL} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
