// Package accept is the one accept path of TCP binds. One loop per
// listening socket (Server.Serve) accepts connections with one backoff
// rule for accept errors, counts each against the bind's limit.Gate, and
// gives it to one Handler, the bind's switch point. The steps after it
// are Handlers too: ProxyHeader reads a PROXY header, the layer-4 relay
// (l4.TCP) peeks the TLS ClientHello and routes, and a Listener feeds the
// connections left to HTTP to an http.Server.
//
//	socket ─ Server.Serve ─ Gate ─┬─ l4.TCP ─┬─ relay to a backend server
//	                              │          └─ Listener ─ http.Server
//	                              ├─ ProxyHeader ─ Listener ─ http.Server
//	                              └─ Listener ─ http.Server
package accept

import (
	"net"
	"sync/atomic"

	"github.com/portcullis/portcullis/internal/limit"
)

// Conn is an accepted connection on its way through the accept path.
type Conn struct {
	// Conn is what to read from: the socket as accepted, until a step
	// that has read some of it puts a wrapper in its place.
	net.Conn
	// Ticket is the connection's count of the Server's Gate, nil without
	// a Gate: closing the connection (Close) releases it.
	Ticket *limit.Ticket

	// pending is the Server's count of connections not yet routed; nil
	// for a Conn made outside a Server.
	pending *atomic.Int64
	routed  atomic.Bool
}

// Routed says that the connection has left the accept path: a relay took
// it, a Listener's Accept did, or it is closed. Server.Pending counts it
// until then. Later calls do nothing.
func (c *Conn) Routed() {
	if c.pending != nil && !c.routed.Swap(true) {
		c.pending.Add(-1)
	}
}

// Close closes the connection, releases its Ticket and marks it Routed.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.Ticket.Release()
	c.Routed()
	return err
}

// Handler serves the connections of a bind: from then on it owns each,
// and closes it (Conn.Close) or gives it on. ServeTCP is called by the
// accept loop itself, one connection after the other, so that a
// connection is in a Handler's hands before the loop returns (a drain
// that waits for the loop then sees every connection): it must not
// block, and does what waits for the client (a PROXY header, a
// ClientHello, a relay) in a goroutine of its own.
type Handler interface {
	ServeTCP(c *Conn)
}

// HandlerFunc is a function as a Handler.
type HandlerFunc func(c *Conn)

// ServeTCP calls f(c).
func (f HandlerFunc) ServeTCP(c *Conn) { f(c) }
