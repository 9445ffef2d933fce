package attack

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Reply is what came back for one HTTP/1.1 request.
type Reply struct {
	// Status is the response's status code; 0 when none arrived.
	Status int
	// End says, when no status arrived, how the connection ended:
	// EndClosed, EndReset, EndTimeout or EndError.
	End string
	// FromBackend is true when the response carries BackendHeader: the
	// request reached a Backend, which answered it.
	FromBackend bool
}

// String is the status code, or how the connection ended without one;
// "(backend)" marks a response that came from a Backend.
func (r Reply) String() string {
	if r.Status == 0 {
		return r.End
	}
	if r.FromBackend {
		return strconv.Itoa(r.Status) + "(backend)"
	}
	return strconv.Itoa(r.Status)
}

// readReply reads one response from br within timeout and discards up to
// 1 MiB of its body. atHead, when not nil, runs when the status line and
// headers have arrived, or the connection ended without them.
func readReply(c net.Conn, br *bufio.Reader, timeout time.Duration, atHead func()) Reply {
	c.SetReadDeadline(time.Now().Add(timeout))
	resp, err := http.ReadResponse(br, nil)
	if atHead != nil {
		atHead()
	}
	if err != nil {
		return Reply{End: endOf(err)}
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return Reply{Status: resp.StatusCode, FromBackend: resp.Header.Get(BackendHeader) != ""}
}

// closeOnDone closes c when ctx ends; the returned stop undoes that.
func closeOnDone(ctx context.Context, c net.Conn) (stop func() bool) {
	return context.AfterFunc(ctx, func() { c.Close() })
}
