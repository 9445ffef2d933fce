package httpserver

import (
	"context"
	"net"
	"net/http"
	"strings"

	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/proxy"
)

// connContext gives a new connection its context: the Server's tunnels,
// its guard, and, with send_proxy, its ClientConn (http.Server.ConnContext).
func (s *Server) connContext(ctx context.Context, c net.Conn) context.Context {
	ctx = proxy.WithTunnels(ctx, &s.tunnels)
	g := &proxy.ConnGuard{Frontend: s.config.Frontend, Address: s.config.Address, Events: s.config.Events, Metrics: s.config.Metrics}
	s.guards.Store(c, g)
	ctx, cc := proxy.ForConn(ctx, g, c.RemoteAddr(), c.LocalAddr(), s.config.SendProxy != nil && s.config.SendProxy())
	if cc != nil {
		s.clients.Store(c, cc)
	}
	return ctx
}

// connState counts the fresh connections and, once a connection is gone,
// closes its ClientConn and notes a head limit that ended it
// (http.Server.ConnState).
func (s *Server) connState(c net.Conn, st http.ConnState) {
	if st == http.StateNew {
		s.freshConns.Store(c, struct{}{})
		s.fresh.Add(1)
	} else if _, ok := s.freshConns.LoadAndDelete(c); ok {
		s.fresh.Add(-1)
	}
	if st == http.StateClosed || st == http.StateHijacked {
		if cc, ok := s.clients.LoadAndDelete(c); ok {
			cc.(*proxy.ClientConn).Close()
		}
		if g, ok := s.guards.LoadAndDelete(c); ok {
			g := g.(*proxy.ConnGuard)
			g.Closed()
			if st == http.StateClosed {
				noteHeadLimit(c, g, s.config.Limits.MaxHeaderBytes)
			}
		}
	}
}

// noteHeadLimit tells, for a connection that closed without making a
// request, whether header_timeout or max_header_bytes (maxHeaderBytes)
// ended it (net/http closes such connections, with a 431 for the latter,
// without a hook), and notes it as the other limits are. It needs the
// connection as a Gate's ticket wraps it (limit.HeadStats).
func noteHeadLimit(c net.Conn, g *proxy.ConnGuard, maxHeaderBytes int) {
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
	case read > int64(maxHeaderBytes):
		name = "max_header_bytes"
	default:
		return
	}
	g.Events.Note("limit reached, connection closed", nil, "limit", name, "frontend", g.Frontend, "address", g.Address)
}

// h2Errors returns the HTTP/2 server's error counter for the bind fe at
// addr: a client over h2_max_streams, or resetting streams faster than
// they can be served, is a limit firing; any other error type is a
// protocol error of the client. Both are summarized in ev; nil for a nil
// ev.
func h2Errors(ev *limit.Events, fe, addr string) func(errType string) {
	if ev == nil {
		return nil
	}
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
