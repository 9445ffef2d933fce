package proxy

import (
	"context"
	"net/http"
	"sync/atomic"

	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/metrics"
)

// Cancelled requests on one client connection.
//
// A client that opens requests and cancels them at once (HTTP/2 rapid
// reset, CVE-2023-44487; the same with HTTP/3 streams) makes the proxy
// start work upstream for every one of them while it costs the client
// nothing. A connection whose client has cancelled at least MaxResets
// requests, more than half of those it made, is answered no more: its
// next request gets 429 with "Connection: close", which makes net/http
// send GOAWAY on HTTP/2 and close HTTP/1.1 after the response, and an
// HTTP/3 connection is closed with H3_EXCESSIVE_LOAD. Browsers and gRPC
// clients cancel requests too, but not most of them.
const MaxResets = 100

// ConnGuard counts the requests of one client connection and those its
// client cancelled. The runtime makes one per connection (WithConnGuard).
type ConnGuard struct {
	// Close, when set, closes the connection at once (HTTP/3). Nil: the
	// next response says Connection: close.
	Close func()
	// Events, Frontend and Address report the connection when it trips.
	Events            *limit.Events
	Frontend, Address string
	// Metrics, when set, counts the connection, as accepted and open,
	// under the protocol of its first request, until Closed (HTTP/1.1
	// and HTTP/2: the protocol is known then, h2c included). Nil: not
	// counted.
	Metrics *metrics.Frontend

	requests, resets atomic.Int64
	// proto is 0 before the first request, the metrics.Protocol + 1 of
	// the connection after it, -1 once Closed.
	proto   atomic.Int32
	tripped atomic.Bool
}

// Requests is how many requests the connection has made.
func (g *ConnGuard) Requests() int64 { return g.requests.Load() }

type guardKey struct{}

// WithConnGuard returns ctx carrying g, for the requests of its
// connection.
func WithConnGuard(ctx context.Context, g *ConnGuard) context.Context {
	return context.WithValue(ctx, guardKey{}, g)
}

func guardFrom(ctx context.Context) *ConnGuard {
	g, _ := ctx.Value(guardKey{}).(*ConnGuard)
	return g
}

// admit counts a request; false when the connection has tripped and the
// request was answered here.
func (g *ConnGuard) admit(w http.ResponseWriter, r *http.Request) bool {
	if !g.tripped.Load() {
		if g.requests.Add(1) == 1 && g.Metrics != nil {
			p := metrics.ProtocolOf(r.ProtoMajor)
			if g.proto.CompareAndSwap(0, int32(p)+1) {
				g.Metrics.Open(p)
			}
		}
		return true
	}
	if g.Close != nil {
		g.Close()
		return false
	}
	w.Header().Set("Connection", "close")
	Error(w, http.StatusTooManyRequests)
	return false
}

// Closed ends the count of the connection as open (Metrics): its server
// closed or hijacked it.
func (g *ConnGuard) Closed() {
	if p := g.proto.Swap(-1); p > 0 && g.Metrics != nil {
		g.Metrics.Closed(metrics.Protocol(p - 1))
	}
}

// done ends a request admitted, cancelled or not by its client.
func (g *ConnGuard) done(r *http.Request) {
	if r.Context().Err() == nil {
		return
	}
	n := g.resets.Add(1)
	if n >= MaxResets && 2*n > g.requests.Load() && !g.tripped.Swap(true) {
		if g.Events != nil {
			g.Events.Note("limit reached, connection closed", nil, "limit", "cancelled_requests", "frontend", g.Frontend, "address", g.Address)
		}
		if g.Close != nil {
			g.Close()
		}
	}
}
