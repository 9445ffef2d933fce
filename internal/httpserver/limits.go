package httpserver

import (
	"fmt"
	"time"
)

// Limits are the limits a Server holds from its start (the frontend's
// `limits:`); a reload that changes one gets a new Server on the same
// socket, which loses no connection. A zero field is net/http's default.
type Limits struct {
	// HeaderTimeout bounds the wait for a request's head
	// (limits.header_timeout; http.Server.ReadHeaderTimeout).
	HeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle for this long
	// (limits.idle_timeout).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's head, in bytes
	// (limits.max_header_bytes).
	MaxHeaderBytes int
	// H2MaxStreams bounds the concurrent streams of an HTTP/2
	// connection (limits.h2_max_streams).
	H2MaxStreams int
}

// String names the limits with their settings, for messages and for
// telling whether a reload changes them.
func (l Limits) String() string {
	return fmt.Sprintf("header_timeout %s, idle_timeout %s, max_header_bytes %d, h2_max_streams %d",
		l.HeaderTimeout, l.IdleTimeout, l.MaxHeaderBytes, l.H2MaxStreams)
}
