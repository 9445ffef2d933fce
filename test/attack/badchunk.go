package attack

import (
	"bufio"
	"context"
	"fmt"
	"strings"
)

// BadChunkOptions configures BadChunk.
type BadChunkOptions struct {
	Target
	// Requests is the number of requests, each on its own connection.
	// Default 3 (passive health checks commonly mark a server down after
	// three failures); at most 1000.
	Requests int
}

// BadChunkResult is what BadChunk saw.
type BadChunkResult struct {
	// Replies holds one Reply per request, in order.
	Replies []Reply
}

// Count returns the number of replies with status (0: with no status).
func (r *BadChunkResult) Count(status int) int {
	n := 0
	for _, rep := range r.Replies {
		if rep.Status == status {
			n++
		}
	}
	return n
}

func (r *BadChunkResult) String() string {
	s := make([]string, len(r.Replies))
	for i, rep := range r.Replies {
		s[i] = rep.String()
	}
	return fmt.Sprintf("badchunk: %d requests: %s", len(r.Replies), strings.Join(s, " "))
}

// badChunkBody is a chunked body whose first chunk-size line is not
// hexadecimal (RFC 9112 section 7.1): the request is malformed, a fault of
// the client, which a proxy answers with 400 and does not hold against the
// backend server.
const badChunkBody = "zz\r\nhello\r\n0\r\n\r\n"

// BadChunk sends o.Requests POST requests over HTTP/1.1 with
// "Transfer-Encoding: chunked" and an invalid chunk size line, each on a
// new connection, and records each reply. A sound proxy answers 400 without
// involving a backend server. It returns an error for bad options or when
// a connection cannot be opened, with the replies so far.
func BadChunk(ctx context.Context, o BadChunkOptions) (*BadChunkResult, error) {
	t, err := o.Target.withDefaults()
	if err != nil {
		return nil, err
	}
	n := bound(o.Requests, 3, 1000)
	req := "POST " + t.Path + " HTTP/1.1\r\nHost: " + t.Host +
		"\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n" + badChunkBody
	res := &BadChunkResult{}
	for range n {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		c, err := t.dial(ctx, "http/1.1")
		if err != nil {
			return res, err
		}
		stop := closeOnDone(ctx, c)
		var rep Reply
		if _, err := c.Write([]byte(req)); err != nil {
			rep = Reply{End: endOf(err)}
		} else {
			rep = readReply(c, bufio.NewReader(c), t.Timeout, nil)
		}
		stop()
		c.Close()
		res.Replies = append(res.Replies, rep)
	}
	return res, nil
}
