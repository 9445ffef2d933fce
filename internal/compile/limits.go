package compile

import (
	"fmt"
	"syscall"

	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/httpserver"
	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/proxy"
)

// httpLimits are the limits a bind's HTTP servers hold from their start
// (http.Server, quic.Config): a reload that changes one gets new servers
// on the same socket, which loses no connection.
func httpLimits(l config.Limits) httpserver.Limits {
	return httpserver.Limits{
		HeaderTimeout:  l.HeaderTimeout,
		IdleTimeout:    l.IdleTimeout,
		MaxHeaderBytes: l.MaxHeaderBytes,
		H2MaxStreams:   l.H2MaxStreams,
	}
}

// requestLimits are the per-request limits of an http frontend.
func requestLimits(l config.Limits) proxy.RequestLimits {
	return proxy.RequestLimits{MaxBodyBytes: int64(l.MaxBodyBytes), BodyTimeout: l.BodyTimeout, SendTimeout: l.SendTimeout, MaxHeaderBytes: l.MaxHeaderBytes}
}

// ConnPlan is what a graph wants for the connection limits of one
// frontend once it is live: the frontend's counter (kept across reloads
// by name) and its limits.
type ConnPlan struct {
	// Conns is the frontend's counter, kept across reloads by name.
	Conns *limit.Conns
	// Max is limits.max_conns; PerClient is limits.max_conns_per_client.
	Max, PerClient int
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
