package runtime

import (
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/proxy"
)

// httpLimits are the limits a bind's HTTP servers hold from their start
// (http.Server, quic.Config): a reload that changes one gets new servers
// on the same socket (tcpKind), which loses no connection.
type httpLimits struct {
	headerTimeout  time.Duration
	idleTimeout    time.Duration
	maxHeaderBytes int
	h2MaxStreams   int
}

func compileHTTPLimits(l config.Limits) httpLimits {
	return httpLimits{
		headerTimeout:  l.HeaderTimeout,
		idleTimeout:    l.IdleTimeout,
		maxHeaderBytes: l.MaxHeaderBytes,
		h2MaxStreams:   l.H2MaxStreams,
	}
}

func (l httpLimits) String() string {
	return fmt.Sprintf("header_timeout %s, idle_timeout %s, max_header_bytes %d, h2_max_streams %d",
		l.headerTimeout, l.idleTimeout, l.maxHeaderBytes, l.h2MaxStreams)
}

// requestLimits are the per-request limits of an http frontend.
func requestLimits(l config.Limits) proxy.RequestLimits {
	return proxy.RequestLimits{MaxBodyBytes: int64(l.MaxBodyBytes), BodyTimeout: l.BodyTimeout, SendTimeout: l.SendTimeout, MaxHeaderBytes: l.MaxHeaderBytes}
}

// connPlan is what a graph wants for the connection limits of one
// frontend once it is live: the frontend's counter (kept across reloads
// by name) and its limits.
type connPlan struct {
	conns          *limit.Conns
	max, perClient int
}

// descriptorReserve is how many descriptors global.max_conns leaves for
// everything but client connections and their server connections:
// listening sockets, health checks, log files, the steering program.
const descriptorReserve = 256

// maxConnsFor returns global.max_conns: the configured value, or one
// derived from the open-files limit (each client connection may hold a
// server connection), and a warning when the configured value would let
// the process run out of descriptors.
func maxConnsFor(cfg *config.Config) (n int, warning string) {
	derived := 0
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < 1<<31 {
		derived = max(int(rl.Cur)-descriptorReserve, 2) / 2
	}
	n = cfg.Global.MaxConns
	switch {
	case n == 0:
		n = derived
	case derived > 0 && n > derived:
		warning = fmt.Sprintf("global max_conns %d is more than the open-files limit allows (%d: each client connection may hold a server connection, and %d descriptors are kept for the rest): raise LimitNOFILE= (ulimit -n) or lower max_conns, or the process may run out of descriptors under load", n, derived, descriptorReserve)
	}
	return n, warning
}

// gateFor returns the Gate of a bind of frontend fe.
func gateFor(conns *limit.Conns, ev *limit.Events, fe, address string) *limit.Gate {
	return &limit.Gate{Conns: conns, Events: ev, Frontend: fe, Address: address}
}

// newConnGuard returns the guard of a client connection of bind b
// (proxy.ConnGuard); closeConn closes it at once, nil for HTTP/1.1 and
// HTTP/2.
func newConnGuard(b *Bind, closeConn func()) *proxy.ConnGuard {
	g := &proxy.ConnGuard{Close: closeConn, Frontend: b.TCP.Frontend, Address: b.TCP.Address}
	if b.Gate != nil {
		g.Events = b.Gate.Events
	}
	return g
}

// h2Errors returns the HTTP/2 server's error counter for bind b: a
// client over h2_max_streams, or resetting streams faster than they can
// be served, is a limit firing; any other error type is a protocol error
// of the client. Both are summarized in the log.
func h2Errors(b *Bind) func(errType string) {
	if b.Gate == nil || b.Gate.Events == nil {
		return nil
	}
	ev, fe, addr := b.Gate.Events, b.TCP.Frontend, b.TCP.Address
	return func(errType string) {
		// errType is the name net/http gives the error, prefixed with
		// the stream or connection error's code ("stream_PROTOCOL_ERROR_over_max_streams").
		switch {
		case strings.Contains(errType, "over_max_streams"):
			ev.Note("limit reached, stream refused", nil, "limit", "h2_max_streams", "frontend", fe, "address", addr)
		case strings.Contains(errType, "too_many_early_resets"):
			ev.Note("limit reached, connection closed", nil, "limit", "cancelled_requests", "frontend", fe, "address", addr)
		default:
			ev.Note("HTTP/2 protocol error", nil, "type", errType, "frontend", fe, "address", addr)
		}
	}
}

// noteHeadLimit tells, for a connection of bind b that closed without
// making a request, whether header_timeout or max_header_bytes ended it
// (net/http closes such connections, with a 431 for the latter, without
// a hook), and notes it as the other limits are.
func noteHeadLimit(c net.Conn, g *proxy.ConnGuard, b *Bind) {
	if g.Requests() > 0 || g.Events == nil {
		return
	}
	read, timedOut, ok := limit.HeadStats(c)
	var name string
	switch {
	case !ok:
		return
	case timedOut:
		name = "header_timeout"
	case read > int64(b.Limits.maxHeaderBytes):
		name = "max_header_bytes"
	default:
		return
	}
	g.Events.Note("limit reached, connection closed", nil, "limit", name, "frontend", g.Frontend, "address", g.Address)
}
