package accept

import (
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/portcullis/portcullis/internal/limit"
)

// Backoff after an accept error, as net/http's: the first wait, doubled
// after each error in a row, up to the last.
const (
	FirstBackoff = 5 * time.Millisecond
	MaxBackoff   = time.Second
)

// Server accepts the connections of one bind and gives each to Handler.
// Set the fields before Serve and do not change them afterwards.
type Server struct {
	// Handler serves every accepted connection. Required.
	Handler Handler
	// Gate, when not nil, counts every accepted connection against its
	// frontend's connection limits (Gate.Hold) until it is closed: one
	// over a limit is closed at once, before Handler sees it. A Gate
	// with Trusted counts the connections of those peers in the totals
	// only, until ReadProxyHeader moves them to the client their header
	// names. Accept errors are summarized in Gate.Events, one line per
	// kind and second. Nil: no limits, and the summaries go to Log.
	Gate *limit.Gate
	// Log receives the summaries of accept errors when the Gate has no
	// Events. Nil: slog.Default().
	Log *slog.Logger

	// pending counts accepted connections not yet Routed.
	pending atomic.Int64
}

// Serve accepts connections on ln until ln is closed: then it returns
// nil. It does not close ln. An accept error that is temporary, or the
// process or system out of descriptors, memory or buffers, is summarized
// and waited out (FirstBackoff, doubling up to MaxBackoff); any other ends
// Serve with it. Serve may run on several listeners at once.
func (s *Server) Serve(ln net.Listener) error {
	failed := s.Gate
	if failed == nil || failed.Events == nil {
		log := s.Log
		if log == nil {
			log = slog.Default()
		}
		failed = &limit.Gate{Events: limit.NewEvents(log, 0), Address: ln.Addr().String()}
		if s.Gate != nil {
			failed.Frontend = s.Gate.Frontend
		}
	}
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			if !retryable(err) {
				return err
			}
			// Out of file descriptors, most likely: keep serving, and
			// say so once a second rather than once per error.
			delay = min(max(2*delay, FirstBackoff), MaxBackoff)
			failed.AcceptFailed(err)
			time.Sleep(delay)
			continue
		}
		delay = 0
		var ticket *limit.Ticket
		if s.Gate != nil {
			if ticket = s.Gate.Hold(c); ticket == nil {
				continue // over a limit: closed, and summarized by the Gate
			}
		}
		s.pending.Add(1)
		s.Handler.ServeTCP(&Conn{Conn: c, Ticket: ticket, pending: &s.pending})
	}
}

// Pending returns the number of accepted connections that have not left
// the accept path yet (Conn.Routed): still reading their PROXY header or
// ClientHello, or waiting for a Listener to accept them. Once it is zero
// after the listener closed and Serve returned, every connection Serve
// accepted is relayed, served as HTTP, or closed.
func (s *Server) Pending() int { return int(s.pending.Load()) }

// retryable reports whether an accept error passes: a temporary one, or
// the process or system out of descriptors, memory or buffers.
func retryable(err error) bool {
	te, ok := err.(interface{ Temporary() bool })
	return ok && te.Temporary() || limit.OutOfResources(err)
}
