package l4

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/portcullis/portcullis/internal/accept"
)

// tcpConn is one connection of a TCP proxy, from accept to close.
type tcpConn struct {
	ac     *accept.Conn // as the accept loop gave it
	client net.Conn     // the socket as accepted: ac.Conn at first

	mu     sync.Mutex
	server net.Conn // once connected
	closed bool     // by Shutdown
}

// setServer records the server connection, so that Shutdown closes it
// too. It reports false when Shutdown closed the connection already.
func (c *tcpConn) setServer(s net.Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.server = s
	return true
}

func (c *tcpConn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *tcpConn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.client.Close()
	if c.server != nil {
		c.server.Close()
	}
}

// connSet tracks the live connections of a TCP proxy for Shutdown.
type connSet struct {
	mu        sync.Mutex
	conns     map[*tcpConn]struct{}
	shutdown  bool          // no new connections
	drained   chan struct{} // made by wait, closed when conns is empty after shutdown
	isDrained bool
}

// add tracks a newly accepted connection; nil once shutting down.
func (s *connSet) add(c *accept.Conn) *tcpConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return nil
	}
	if s.conns == nil {
		s.conns = make(map[*tcpConn]struct{})
	}
	tc := &tcpConn{ac: c, client: c.Conn}
	s.conns[tc] = struct{}{}
	return tc
}

// remove stops tracking c (closed, or given to ToHTTP).
func (s *connSet) remove(c *tcpConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	s.signalLocked()
}

func (s *connSet) signalLocked() {
	if s.drained != nil && !s.isDrained && len(s.conns) == 0 {
		s.isDrained = true
		close(s.drained)
	}
}

// wait refuses new connections and waits until none is left or ctx ends;
// then it calls stop, closes every connection left, gives their
// goroutines up to unwindTimeout to finish, and returns ctx.Err().
func (s *connSet) wait(ctx context.Context, stop func()) error {
	s.mu.Lock()
	s.shutdown = true
	if s.drained == nil {
		s.drained = make(chan struct{})
		s.signalLocked()
	}
	drained := s.drained
	s.mu.Unlock()

	select {
	case <-drained:
		return nil
	case <-ctx.Done():
	}
	stop()
	s.mu.Lock()
	left := make([]*tcpConn, 0, len(s.conns))
	for c := range s.conns {
		left = append(left, c)
	}
	s.mu.Unlock()
	for _, c := range left {
		c.close()
	}
	select {
	case <-drained:
	case <-time.After(unwindTimeout):
	}
	return ctx.Err()
}

// unwindTimeout bounds the wait for connections closed by Shutdown to
// finish: closing their sockets ends their reads and writes at once, so
// it only matters if a Backend does not honor its context.
const unwindTimeout = time.Second
