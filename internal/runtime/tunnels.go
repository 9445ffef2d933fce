package runtime

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"time"
)

// tunnelSet tracks the connections an http.Server handed over to a
// handler (Hijack: WebSocket and other upgrades). net/http forgets them, so
// its Shutdown neither waits for them nor closes them; a unit that drains
// must do both.
type tunnelSet struct {
	mu    sync.Mutex
	conns map[*tunnelConn]struct{}
}

// add records c, a connection the http.Server reported hijacked: the
// accepted *tunnelConn, or a *tls.Conn over one.
func (t *tunnelSet) add(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	tc, ok := c.(*tunnelConn)
	if !ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if tc.closed {
		return
	}
	if t.conns == nil {
		t.conns = map[*tunnelConn]struct{}{}
	}
	t.conns[tc] = struct{}{}
}

func (t *tunnelSet) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// tunnelPoll is how often wait looks whether the tunnels have ended.
const tunnelPoll = 50 * time.Millisecond

// wait returns when every tunnel has closed, or closes those left when ctx
// ends and returns ctx.Err().
func (t *tunnelSet) wait(ctx context.Context) error {
	tick := time.NewTicker(tunnelPoll)
	defer tick.Stop()
	for t.len() > 0 {
		select {
		case <-ctx.Done():
			t.closeAll()
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// closeAll closes every tunnel.
func (t *tunnelSet) closeAll() {
	t.mu.Lock()
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

// tunnelListener wraps each accepted connection so that the set learns
// when a hijacked one closes.
type tunnelListener struct {
	net.Listener
	set *tunnelSet
}

func (l *tunnelListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &tunnelConn{Conn: c, set: l.set}, nil
}

// tunnelConn removes itself from its set when closed.
type tunnelConn struct {
	net.Conn
	set    *tunnelSet
	closed bool // under set.mu
}

func (c *tunnelConn) Close() error {
	c.set.mu.Lock()
	c.closed = true
	delete(c.set.conns, c)
	c.set.mu.Unlock()
	return c.Conn.Close()
}
