package attack

import (
	"bufio"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// BigHeaderOptions configures BigHeader.
type BigHeaderOptions struct {
	Target
	// Size is the length in bytes of the big line (CRLF excluded): the
	// header line of the first request, the request line of the second.
	// Default 1 MiB; at most 64 MiB.
	Size int
}

// BigRequest is what happened to one request with a big line.
type BigRequest struct {
	Reply
	// Sent is the number of bytes of the request written before the
	// answer arrived or the connection ended: what the proxy read, plus
	// what the kernel's socket buffers held (some hundreds of KiB on
	// loopback).
	Sent int64
	// Total is the size of the whole request.
	Total int64
}

func (b BigRequest) String() string {
	return fmt.Sprintf("%s after %d of %d bytes", b.Reply, b.Sent, b.Total)
}

// BigHeaderResult is what BigHeader saw.
type BigHeaderResult struct {
	// Header is the request with one big header line.
	Header BigRequest
	// RequestLine is the request with a big request line (a long path).
	RequestLine BigRequest
}

func (r *BigHeaderResult) String() string {
	return fmt.Sprintf("bigheader: header line: %s; request line: %s", r.Header, r.RequestLine)
}

// BigHeader sends two HTTP/1.1 GET requests, each on a new connection: one
// with a header line of o.Size bytes ("X-Big: aaa..."), one with a request
// line of o.Size bytes (o.Path followed by "?big=aaa..."). It writes while
// it reads, so an early answer is seen as soon as it comes. A sound proxy
// stops reading after a bound of some tens of KiB and answers 431 (header)
// or 414 or 400 (request line), then closes; it does not forward either.
func BigHeader(ctx context.Context, o BigHeaderOptions) (*BigHeaderResult, error) {
	t, err := o.Target.withDefaults()
	if err != nil {
		return nil, err
	}
	size := bound(o.Size, 1<<20, 64<<20)
	const name = "X-Big: "
	header := "GET " + t.Path + " HTTP/1.1\r\nHost: " + t.Host + "\r\n" +
		name + strings.Repeat("a", max(size-len(name), 1)) + "\r\n\r\n"
	head, tail := "GET "+t.Path+"?big=", " HTTP/1.1\r\nHost: "+t.Host+"\r\n\r\n"
	line := head + strings.Repeat("a", max(size-len(head)-len(" HTTP/1.1"), 1)) + tail
	res := &BigHeaderResult{}
	if res.Header, err = sendBig(ctx, t, header); err != nil {
		return res, err
	}
	res.RequestLine, err = sendBig(ctx, t, line)
	return res, err
}

// sendBig writes req on a new connection while it waits for the reply.
func sendBig(ctx context.Context, t Target, req string) (BigRequest, error) {
	out := BigRequest{Total: int64(len(req))}
	c, err := t.dial(ctx, "http/1.1")
	if err != nil {
		return out, err
	}
	defer c.Close()
	defer closeOnDone(ctx, c)()
	var sent atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		const chunk = 4 << 10
		for off := 0; off < len(req); off += chunk {
			c.SetWriteDeadline(time.Now().Add(t.Timeout))
			n, err := c.Write([]byte(req[off:min(off+chunk, len(req))]))
			sent.Add(int64(n))
			if err != nil {
				return
			}
		}
	})
	// The reply may only come once everything is written: allow for it.
	out.Reply = readReply(c, bufio.NewReader(c), 2*t.Timeout, func() { out.Sent = sent.Load() })
	c.Close()
	wg.Wait()
	return out, nil
}
