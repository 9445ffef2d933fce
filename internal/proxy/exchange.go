package proxy

import (
	"context"
	"io"
	"time"
)

// An attempt at a server for an HTTP/2 or HTTP/3 request, or for a
// request with a body, runs in a context of its own, which does not end when the client goes away: it
// ends cancelGrace later, or when the attempt is done. A request whose client cancels it (an HTTP/2 or HTTP/3
// stream reset, a closed connection) after it was sent may still get its
// response in that time; the response is then read and dropped, up to
// maxDrain bytes, so that the server connection goes back to the pool
// instead of being closed. Over HTTP/1.1 a cancelled request can only be
// abandoned by closing its connection: without this, every stream reset
// by a client would cost the server a new TCP connection (HTTP/2 rapid
// reset, CVE-2023-44487, drove thousands per second). An HTTP/1.1
// request is cancelled only when its client closes its connection,
// which bounds the cost to one server connection per client connection;
// it keeps its client's context and saves the allocations of this one.
const (
	// cancelGrace is how long an attempt goes on after its client left.
	cancelGrace = time.Second
	// maxDrain is how much of a response nobody will read is read to
	// keep its connection.
	maxDrain = 64 << 10
)

// exchange ends the context of one attempt.
type exchange struct {
	cancel context.CancelFunc
	stop   func() bool
}

// detach returns the context of an attempt made for a client whose
// request context is client, and the exchange that ends it.
func detach(client context.Context) (context.Context, *exchange) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(client))
	x := &exchange{cancel: cancel}
	x.stop = context.AfterFunc(client, func() { time.AfterFunc(cancelGrace, cancel) })
	return ctx, x
}

// end ends the attempt's context. Nil-safe.
func (x *exchange) end() {
	if x != nil {
		x.stop()
		x.cancel()
	}
}

// drain reads and drops what is left of a response body nobody will
// read, up to maxDrain bytes and until the attempt's context ends, so
// that its connection can be reused, then closes it.
func drain(body io.ReadCloser) {
	io.CopyN(io.Discard, body, maxDrain+1)
	body.Close()
}
