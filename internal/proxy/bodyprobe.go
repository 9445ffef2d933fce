package proxy

import (
	"io"
	"net/http"
	"time"
)

// bodyProbeWait is how long probeBody waits for the first read of a body,
// as long as http.Transport waits for the same read.
const bodyProbeWait = 200 * time.Millisecond

// probeBody finds out whether the body of a request whose method usually
// has none (GET, HEAD, DELETE, OPTIONS) but whose length is unknown is in
// fact empty, and then drops it. An HTTP/3 request always has such a body
// (HTTP/3 has no "end of stream" flag on the headers), and so has an
// HTTP/2 request whose HEADERS frame does not end the stream. Without
// this, such a GET counts as a request with a body: neither the transport
// (on a keep-alive connection the server closed) nor the round trip (on
// another server) could retry it after a failure that a bodiless GET
// survives.
//
// It also reads the first byte of a chunked HTTP/1.1 body, whatever the
// method, so that a body whose first chunk does not parse (an invalid
// chunk size) is refused with 400 before any server hears of the request.
//
// It reads one byte the way http.Transport does before sending such a
// request: when the read does not finish within bodyProbeWait, the
// request goes on with the read pending.
func probeBody(r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength != -1 {
		return
	}
	bodiless := false
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodDelete, http.MethodOptions:
		bodiless = true
	}
	if !bodiless && r.ProtoMajor != 1 {
		return
	}
	done := make(chan firstRead, 1)
	go func(body io.Reader) {
		var b [1]byte
		n, err := body.Read(b[:])
		done <- firstRead{b: b[0], n: n, err: err}
	}(r.Body)
	t := time.NewTimer(bodyProbeWait)
	defer t.Stop()
	select {
	case f := <-done:
		if bodiless && f.n == 0 && f.err == io.EOF {
			r.Body, r.ContentLength = http.NoBody, 0
			return
		}
		done <- f
	case <-t.C:
	}
	r.Body = &probedBody{rc: r.Body, first: done}
}

type firstRead struct {
	b   byte
	n   int
	err error
}

// probedBody is a body whose first read probeBody made.
type probedBody struct {
	rc    io.ReadCloser
	first chan firstRead // the first read, until taken
	f     firstRead
}

func (p *probedBody) Read(b []byte) (int, error) {
	if p.first != nil {
		p.f = <-p.first
		p.first = nil
	}
	if p.f.n > 0 {
		if len(b) == 0 {
			return 0, nil
		}
		b[0] = p.f.b
		p.f.n = 0
		return 1, nil
	}
	if p.f.err != nil {
		return 0, p.f.err
	}
	return p.rc.Read(b)
}

func (p *probedBody) Close() error { return p.rc.Close() }
