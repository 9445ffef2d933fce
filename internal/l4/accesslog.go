package l4

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis/portcullis/internal/accesslog"
	"github.com/portcullis/portcullis/internal/metrics"
	"github.com/portcullis/portcullis/internal/upstream"
)

// connLog is the access-log line of one tcp connection, written when it
// closes. A nil *connLog logs nothing.
type connLog struct {
	l     *accesslog.Logger
	e     accesslog.Entry
	start time.Time
}

// startLog begins the line of a connection accepted now, nil when the
// frontend has no access log.
func (t *TCP) startLog(tc *tcpConn) *connLog {
	if t.AccessLog == nil {
		return nil
	}
	l := t.AccessLog()
	if l == nil {
		return nil
	}
	now := time.Now()
	lg := &connLog{l: l, start: now}
	lg.e = accesslog.Entry{Time: now, Frontend: t.Frontend, Protocol: "tcp", Client: tc.client.RemoteAddr().String(), State: accesslog.Refused}
	return lg
}

// set changes the line (nil-safe).
func (lg *connLog) set(f func(*accesslog.Entry)) {
	if lg != nil {
		f(&lg.e)
	}
}

// drop forgets the line: the connection is logged elsewhere (HTTP).
func (lg *connLog) drop() *connLog {
	if lg != nil {
		lg.l = nil
	}
	return nil
}

// write writes the line, with the connection's total time.
func (lg *connLog) write() {
	if lg == nil || lg.l == nil {
		return
	}
	lg.e.Total = time.Since(lg.start)
	lg.l.Log(&lg.e)
}

// connectState is the termination state of a connection that got no
// server.
func connectState(err error) accesslog.State {
	switch {
	case errors.Is(err, upstream.ErrQueueTimeout):
		return accesslog.QueueTimeout
	case errors.Is(err, upstream.ErrNoServer):
		return accesslog.NoServer
	case errors.Is(err, net.ErrClosed):
		return accesslog.Killed
	case ownFailure(err):
		return accesslog.Resource
	}
	return accesslog.ConnectFailed
}

// relayState is the termination state of a relayed connection that
// ended for reason (an end* constant) with err. A failed read or write
// is the server's when the error names the server's address, else the
// client's (spliced copies report errors without an address: CD).
func relayState(reason string, err error, server net.Conn) accesslog.State {
	switch reason {
	case endDone:
		return accesslog.Normal
	case endIdle:
		return accesslog.IdleData
	case endShutdown:
		return accesslog.Killed
	case endRefused:
		return accesslog.Refused
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Addr != nil && op.Addr.String() == server.RemoteAddr().String() {
		return accesslog.ServerData
	}
	return accesslog.ClientData
}

// flowLog is the access-log line of one udp flow, written when it ends,
// and its byte counts (for the metrics too: then l may be nil). A nil
// *flowLog logs nothing.
type flowLog struct {
	l       *accesslog.Logger
	e       accesslog.Entry
	start   time.Time
	in, out atomic.Int64
	mu      sync.Mutex // guards e's backend and server
}

// newFlowLog begins the line of a flow starting now; nil when the
// frontend logs nothing.
func newFlowLog(r *udpRelay, key udpFlowKey) *flowLog {
	var l *accesslog.Logger
	if r.accessLog != nil {
		l = r.accessLog()
	}
	if l == nil && r.metrics == nil {
		return nil
	}
	now := time.Now()
	return &flowLog{l: l, start: now, e: accesslog.Entry{Time: now, Frontend: r.frontend, Protocol: "udp", Client: key.client.String()}}
}

func (lg *flowLog) setBackend(name string) {
	if lg != nil {
		lg.mu.Lock()
		lg.e.Backend = name
		lg.mu.Unlock()
	}
}

func (lg *flowLog) setServer(addr string) {
	if lg != nil {
		lg.mu.Lock()
		lg.e.Server, lg.e.Connect = addr, time.Since(lg.start)
		lg.mu.Unlock()
	}
}

func (lg *flowLog) addIn(n int) {
	if lg != nil {
		lg.in.Add(int64(n))
	}
}

func (lg *flowLog) addOut(n int) {
	if lg != nil {
		lg.out.Add(int64(n))
	}
}

// write writes the line with state st (once: the flow's close calls it).
func (lg *flowLog) write(st accesslog.State) {
	if lg == nil || lg.l == nil {
		return
	}
	lg.mu.Lock()
	defer lg.mu.Unlock()
	lg.e.BytesIn, lg.e.BytesOut = lg.in.Load(), lg.out.Load()
	lg.e.Total, lg.e.State = time.Since(lg.start), st
	lg.l.Log(&lg.e)
}

// count ends the flow's count in m (opened by newUDPFlow) with its bytes.
func (lg *flowLog) count(m *metrics.Frontend) {
	if lg != nil && m != nil {
		m.Bytes(metrics.UDP, lg.in.Load(), lg.out.Load())
		m.Closed(metrics.UDP)
	}
}
