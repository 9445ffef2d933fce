package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/upstream"
)

// Who gets the blame, and which status, for each kind of failure.
func TestAttribution(t *testing.T) {
	emfile := &dialError{err: &net.OpError{Op: "dial", Err: errEMFILE}}
	timeout := &net.OpError{Op: "dial", Err: errTimeout{}}
	late := newDialError(timeout, time.Now().Add(-10*time.Second), 5*time.Second)
	onTime := newDialError(timeout, time.Now().Add(-5*time.Second), 5*time.Second)
	for _, tc := range []struct {
		name   string
		err    error
		status int
		server bool // counts against the server
		reason string
	}{
		{"malformed body", &clientBodyError{bodyMalformed, errors.New("bad chunk")}, 400, false, "malformed request body"},
		{"body too large", &clientBodyError{bodyTooLarge, errBodyTooLarge}, 413, false, "request body too large"},
		{"body timeout", &clientBodyError{bodyTimeout, timeout}, 408, false, "request body timeout"},
		{"body aborted", &clientBodyError{bodyAborted, io.ErrUnexpectedEOF}, 400, false, "client aborted the request body"},
		{"out of descriptors", emfile, 503, false, "proxy out of resources"},
		{"connect timeout noticed late", late, 503, false, "proxy overloaded"},
		{"connect timeout", onTime, 504, true, "connect timeout"},
		{"connect refused", &dialError{err: errors.New("connection refused")}, 502, true, "connect failed"},
		{"server timeout", fmt.Errorf("read: %w", context.DeadlineExceeded), 504, true, "server timeout"},
		{"server reset", errors.New("connection reset by peer"), 502, true, "server error"},
		{"client connection", &clientConnError{errClientClosed}, 502, false, "no private connection for the client (send_proxy)"},
		{"no server", upstream.ErrNoServer, 503, true, "no server up"},
		{"queue timeout", upstream.ErrQueueTimeout, 503, true, "queue timeout"},
	} {
		if got := statusFor(tc.err); got != tc.status {
			t.Errorf("%s: status %d, want %d", tc.name, got, tc.status)
		}
		if got := serverFault(tc.err); got != tc.server {
			t.Errorf("%s: counts against the server: %v, want %v", tc.name, got, tc.server)
		}
		if got := reason(tc.err); got != tc.reason {
			t.Errorf("%s: reason %q, want %q", tc.name, got, tc.reason)
		}
	}
}

var errEMFILE = syscall.EMFILE
