package runtime

import (
	"fmt"
	"syscall"
	"time"

	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/httpserver"
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

// server returns the limits as the bind's httpserver.Server holds them.
func (l httpLimits) server() httpserver.Limits {
	return httpserver.Limits{HeaderTimeout: l.headerTimeout, IdleTimeout: l.idleTimeout, MaxHeaderBytes: l.maxHeaderBytes, H2MaxStreams: l.h2MaxStreams}
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

// newConnGuard returns the guard of an HTTP/3 client connection of bind b
// (proxy.ConnGuard); closeConn closes it at once. HTTP/1.1 and HTTP/2
// connections get theirs from the httpserver.Server.
func newConnGuard(b *Bind, closeConn func()) *proxy.ConnGuard {
	g := &proxy.ConnGuard{Close: closeConn, Frontend: b.TCP.Frontend, Address: b.TCP.Address}
	if b.Gate != nil {
		g.Events = b.Gate.Events
	}
	return g
}
