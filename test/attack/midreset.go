package attack

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"
)

// MidResetOptions configures MidReset.
type MidResetOptions struct {
	// Target.Path must lead to a Backend's mid-response reset: any path
	// of a Backend with MidReset set, or "/midreset?bytes=K" of any.
	Target
	// HTTP2 speaks HTTP/2 to the proxy (ALPN h2 with TLS, prior knowledge
	// without) instead of HTTP/1.1.
	HTTP2 bool
}

// How a response ended, in MidResetResult.End, besides EndClosed,
// EndReset, EndTimeout and EndError.
const (
	// EndComplete: the body ended normally with every byte announced.
	EndComplete = "complete"
	// EndShort: the body ended normally (END_STREAM, or the last chunk)
	// short of the announced length: a truncation that a client may take
	// for a whole response.
	EndShort = "short"
)

// MidResetResult is what MidReset saw.
type MidResetResult struct {
	// Proto is the response's protocol ("HTTP/1.1", "HTTP/2.0").
	Proto string
	// Status is the status code; 0 when no response arrived (an empty
	// reply).
	Status int
	// Header holds the response's headers.
	Header http.Header
	// Announced is the body length the backend announced: the response's
	// Content-Length, or LengthHeader when the proxy dropped it; -1 when
	// neither arrived.
	Announced int64
	// Body is the number of body bytes received.
	Body int64
	// End is how the response ended: EndComplete, EndShort, EndClosed,
	// EndReset, EndTimeout or EndError; Err says more.
	End string
	Err error
	// StreamCode is the RST_STREAM error code when an HTTP/2 stream was
	// reset.
	StreamCode http2.ErrCode
}

func (r *MidResetResult) String() string {
	if r.Status == 0 {
		return fmt.Sprintf("midreset: no response (%s: %v)", r.End, r.Err)
	}
	s := fmt.Sprintf("midreset: %s %d, %d of %d announced body bytes, then %s", r.Proto, r.Status, r.Body, r.Announced, r.End)
	switch {
	case r.End == EndReset && r.Proto == "HTTP/2.0":
		s += fmt.Sprintf(" (RST_STREAM %v)", r.StreamCode)
	case r.Err != nil:
		s += fmt.Sprintf(" (%v)", r.Err)
	}
	return s
}

// MidReset fetches o.Path through the proxy from a backend server that
// answers 200 with a Content-Length larger than the body it sends, then
// resets the connection. A sound proxy passes on the status, the headers
// and the bytes it received, then cuts the response (closes an HTTP/1.1
// connection before the announced length; resets an HTTP/2 stream), so
// that the client sees a truncated response: not an empty reply, nor one
// that looks whole. Errors are part of the result; MidReset returns an
// error only for bad options.
func MidReset(ctx context.Context, o MidResetOptions) (*MidResetResult, error) {
	t, err := o.Target.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	res := &MidResetResult{Announced: -1}
	if o.HTTP2 {
		midResetH2(ctx, t, res)
	} else {
		midResetH1(ctx, t, res)
	}
	if res.End == EndComplete && res.Announced >= 0 && res.Body < res.Announced {
		res.End = EndShort
	}
	return res, nil
}

// midResetH1 is MidReset over HTTP/1.1, with net/http's client.
func midResetH1(ctx context.Context, t Target, res *MidResetResult) {
	tr := &http.Transport{DisableKeepAlives: true, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) { return t.dial(ctx, "http/1.1") }
	tr.DialTLSContext = tr.DialContext
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.scheme()+"://"+t.Addr+t.Path, nil)
	if err != nil {
		res.End, res.Err = EndError, err
		return
	}
	req.Host = t.Host
	resp, err := tr.RoundTrip(req)
	if err != nil {
		res.End, res.Err = endOfH1(err), err
		return
	}
	defer resp.Body.Close()
	res.Proto, res.Status, res.Header = resp.Proto, resp.StatusCode, resp.Header
	res.Announced = announced(resp.ContentLength, resp.Header)
	res.Body, err = io.Copy(io.Discard, resp.Body)
	res.End, res.Err = EndComplete, err
	if err != nil {
		res.End = endOfH1(err)
	}
}

// endOfH1 is endOf for the errors of net/http's client, which does not
// always wrap the network error.
func endOfH1(err error) string {
	switch s := err.Error(); {
	case strings.Contains(s, "connection reset by peer"):
		return EndReset
	case strings.Contains(s, "server closed") || strings.Contains(s, "EOF"):
		return EndClosed
	}
	return endOf(err)
}

// announced is the body length a response announces: contentLength, or
// LengthHeader when that is -1.
func announced(contentLength int64, h http.Header) int64 {
	if contentLength >= 0 {
		return contentLength
	}
	if n, err := strconv.ParseInt(h.Get(LengthHeader), 10, 64); err == nil {
		return n
	}
	return -1
}

// midResetH2 is MidReset over HTTP/2, frame by frame, so that it tells a
// reset stream from a short END_STREAM and from a closed connection.
func midResetH2(ctx context.Context, t Target, res *MidResetResult) {
	res.Proto = "HTTP/2.0"
	h, err := dialH2(ctx, t,
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 16 << 20},
		http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	if err != nil {
		res.End, res.Err = endOf(err), err
		return
	}
	defer h.c.Close()
	defer closeOnDone(ctx, h.c)()
	id, err := h.open(false)
	if err == nil {
		err = h.flush()
	}
	h.c.SetReadDeadline(time.Now().Add(t.Timeout))
	for err == nil {
		var f http2.Frame
		if f, err = h.fr.ReadFrame(); err != nil {
			break
		}
		if f.Header().StreamID == id {
			if done := midResetFrame(f, res); done {
				return
			}
		}
		err = h.answer(f, true)
	}
	res.End, res.Err = endOf(err), err
}

// midResetFrame records frame f of the stream in res; done is true when
// the stream has ended.
func midResetFrame(f http2.Frame, res *MidResetResult) (done bool) {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		if res.Status == 0 { // not trailers
			res.Status, _ = strconv.Atoi(f.PseudoValue("status"))
			res.Header = http.Header{}
			for _, hf := range f.RegularFields() {
				res.Header.Add(hf.Name, hf.Value)
			}
			cl, err := strconv.ParseInt(res.Header.Get("Content-Length"), 10, 64)
			if err != nil {
				cl = -1
			}
			res.Announced = announced(cl, res.Header)
		}
		done = f.StreamEnded()
	case *http2.DataFrame:
		res.Body += int64(len(f.Data()))
		done = f.StreamEnded()
	case *http2.RSTStreamFrame:
		res.End, res.StreamCode = EndReset, f.ErrCode
		return true
	}
	if done {
		res.End = EndComplete
	}
	return done
}
