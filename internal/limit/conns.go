package limit

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Names of the connection limits, as the configuration spells them and
// as they are logged when they fire.
const (
	GlobalMaxConns    = "global.max_conns"
	MaxConns          = "max_conns"
	MaxConnsPerClient = "max_conns_per_client"
)

// Conns counts the open connections of one frontend (or, as the parent of
// the frontends, of the whole process), in total and per client address,
// against its limits. It is live state: the runtime keeps one per
// frontend name across reloads and sets the limits each reload compiles.
// Its methods are safe for concurrent use.
type Conns struct {
	parent *Conns
	// max and perClient are the limits; 0: none.
	max, perClient atomic.Int64
	open           atomic.Int64

	mu       sync.Mutex
	byClient map[netip.Addr]int32
}

// NewConns returns a counter whose connections also count against
// parent's max (nil: none).
func NewConns(parent *Conns) *Conns {
	return &Conns{parent: parent, byClient: map[netip.Addr]int32{}}
}

// SetLimits sets the total and per-client limits; 0 means no limit.
// Connections already open stay open.
func (c *Conns) SetLimits(max, perClient int) {
	c.max.Store(int64(max))
	c.perClient.Store(int64(perClient))
}

// Open is how many connections are counted now.
func (c *Conns) Open() int { return int(c.open.Load()) }

// Acquire counts a connection from client against c and its parent. It
// returns "" when the connection is admitted (then Release must follow),
// else the name of the limit that refused it. An invalid client address
// (a unix socket) is counted in the totals only.
func (c *Conns) Acquire(client netip.Addr) string {
	if c.parent != nil && !c.parent.reserve() {
		return GlobalMaxConns
	}
	if !c.reserve() {
		c.parent.unreserve()
		return MaxConns
	}
	if !client.IsValid() {
		return ""
	}
	client = client.Unmap()
	per := c.perClient.Load()
	c.mu.Lock()
	n := c.byClient[client]
	if per > 0 && int64(n) >= per {
		c.mu.Unlock()
		c.unreserve()
		c.parent.unreserve()
		return MaxConnsPerClient
	}
	c.byClient[client] = n + 1
	c.mu.Unlock()
	return ""
}

// Release ends a connection Acquire admitted, with the same client.
func (c *Conns) Release(client netip.Addr) {
	if client.IsValid() {
		client = client.Unmap()
		c.mu.Lock()
		if n := c.byClient[client]; n <= 1 {
			delete(c.byClient, client)
		} else {
			c.byClient[client] = n - 1
		}
		c.mu.Unlock()
	}
	c.unreserve()
	c.parent.unreserve()
}

// moveClient counts a connection of from (maybe invalid: not counted
// per client) as one of to, unless to is at the per-client limit.
func (c *Conns) moveClient(from, to netip.Addr) bool {
	per := c.perClient.Load()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.byClient[to]
	if per > 0 && int64(n) >= per {
		return false
	}
	c.byClient[to] = n + 1
	if from.IsValid() {
		if m := c.byClient[from]; m <= 1 {
			delete(c.byClient, from)
		} else {
			c.byClient[from] = m - 1
		}
	}
	return true
}

// reserve counts one connection in the total when there is room.
func (c *Conns) reserve() bool {
	m := c.max.Load()
	if n := c.open.Add(1); m > 0 && n > m {
		c.unreserve()
		return false
	}
	return true
}

func (c *Conns) unreserve() {
	if c == nil {
		return
	}
	c.open.Add(-1)
}

// AddrOf returns the IP address of a TCP or UDP address; the zero Addr
// for others.
func AddrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}
