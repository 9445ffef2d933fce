package attack

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// ZeroWindowOptions configures ZeroWindow.
type ZeroWindowOptions struct {
	Target
	// Conns is the number of HTTP/2 connections, opened at once.
	// Default 10; at most 1000.
	Conns int
	// Streams is the number of GET streams each connection opens, all at
	// once, whatever the peer's SETTINGS_MAX_CONCURRENT_STREAMS.
	// Default 100; at most 10000.
	Streams int
	// Hold is how long each connection watches its streams after opening
	// them. Default 10s; at most 10m.
	Hold time.Duration
	// Ready, when not nil, is called once every connection has opened its
	// streams (or failed), as the holding begins.
	Ready func()
}

// How a stream ended, in StreamEnd.How.
const (
	// StreamHeld: still open when Hold ran out.
	StreamHeld = "held"
	// StreamRefused: RST_STREAM(REFUSED_STREAM), or a stream ID above the
	// last one of a GOAWAY: the proxy did not process it.
	StreamRefused = "refused"
	// StreamReset: RST_STREAM with another code.
	StreamReset = "reset"
	// StreamClosed: the proxy closed the connection with the stream open.
	StreamClosed = "closed"
	// StreamEnded: the proxy ended the response (END_STREAM), which
	// with a zero window only an empty body can end whole: otherwise the
	// proxy gave up on the stream and truncated its body.
	StreamEnded = "ended"
)

// StreamEnd is the fate of one stream.
type StreamEnd struct {
	// Conn is the index of the stream's connection, from 0.
	Conn int
	// ID is the stream ID.
	ID uint32
	// How is one of StreamHeld, StreamRefused, StreamReset, StreamClosed
	// or StreamEnded.
	How string
	// Code is the RST_STREAM or GOAWAY error code for StreamRefused and
	// StreamReset.
	Code http2.ErrCode
	// After is the time from the stream's HEADERS to its end.
	After time.Duration
	// Answered is true when response HEADERS arrived for the stream.
	Answered bool
}

// ZeroWindowResult is what ZeroWindow saw.
type ZeroWindowResult struct {
	// Conns is the number of connections that completed the HTTP/2
	// preface and SETTINGS exchange; ConnErrors those that did not, the
	// first of them with FirstErr.
	Conns, ConnErrors int
	FirstErr          error
	// MaxConcurrentStreams is the peer's SETTINGS_MAX_CONCURRENT_STREAMS
	// on the first connection; MaxConcurrentStreamsSet is false when the
	// peer sent none (no limit).
	MaxConcurrentStreams    uint32
	MaxConcurrentStreamsSet bool
	// Opened counts the streams whose HEADERS were sent, Answered those
	// that got response HEADERS.
	Opened, Answered int
	// GoAways counts connections that received a GOAWAY; ConnsClosed
	// those the proxy closed before Hold ran out.
	GoAways, ConnsClosed int
	// Streams holds every opened stream's end, by connection then ID.
	Streams []StreamEnd
}

// Count returns the number of streams that ended how (a Stream* constant).
func (r *ZeroWindowResult) Count(how string) int {
	n := 0
	for _, s := range r.Streams {
		if s.How == how {
			n++
		}
	}
	return n
}

// Accepted is the number of opened streams the proxy did not refuse.
func (r *ZeroWindowResult) Accepted() int { return r.Opened - r.Count(StreamRefused) }

func (r *ZeroWindowResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "zerowindow: %d connections (%d failed", r.Conns, r.ConnErrors)
	if r.FirstErr != nil {
		fmt.Fprintf(&b, ": %v", r.FirstErr)
	}
	b.WriteString("), peer SETTINGS_MAX_CONCURRENT_STREAMS ")
	if r.MaxConcurrentStreamsSet {
		fmt.Fprintf(&b, "%d", r.MaxConcurrentStreams)
	} else {
		b.WriteString("not set")
	}
	fmt.Fprintf(&b, "\n  streams: %d opened, %d accepted, %d refused, %d answered (response HEADERS)",
		r.Opened, r.Accepted(), r.Count(StreamRefused), r.Answered)
	fmt.Fprintf(&b, "\n  connections: %d got GOAWAY, %d closed by the proxy", r.GoAways, r.ConnsClosed)
	for _, how := range []string{StreamRefused, StreamReset, StreamClosed, StreamEnded, StreamHeld} {
		b.WriteString(summarizeEnds(r.Streams, how))
	}
	return b.String()
}

// summarizeEnds is a line about the streams that ended how: their number,
// codes, and the spread of their lifetimes.
func summarizeEnds(streams []StreamEnd, how string) string {
	var after []time.Duration
	codes := map[http2.ErrCode]int{}
	for _, s := range streams {
		if s.How == how {
			after = append(after, s.After)
			if how == StreamRefused || how == StreamReset {
				codes[s.Code]++
			}
		}
	}
	if len(after) == 0 {
		return ""
	}
	slices.Sort(after)
	var cs []string
	for c, n := range codes {
		cs = append(cs, fmt.Sprintf("%v %d", c, n))
	}
	slices.Sort(cs)
	code := ""
	if len(cs) > 0 {
		code = " (" + strings.Join(cs, ", ") + ")"
	}
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("\n  %s: %d%s after %v min, %v median, %v max", how, len(after), code,
		r(after[0]), r(after[len(after)/2]), r(after[len(after)-1]))
}

// ZeroWindow opens o.Conns HTTP/2 connections with
// SETTINGS_INITIAL_WINDOW_SIZE 0 and never sends WINDOW_UPDATE, so that no
// response body can flow. Each opens o.Streams GET streams and holds them
// for o.Hold, answering SETTINGS and PING like a live client. A sound proxy
// caps the streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS, then
// REFUSED_STREAM), does not hold a backend connection per stalled stream,
// and releases stalled streams after a timeout.
func ZeroWindow(ctx context.Context, o ZeroWindowOptions) (*ZeroWindowResult, error) {
	t, err := o.Target.withDefaults()
	if err != nil {
		return nil, err
	}
	conns := bound(o.Conns, 10, 1000)
	streams := bound(o.Streams, 100, 10000)
	hold := bound(o.Hold, 10*time.Second, maxHold)
	out := make([]zeroWindowConn, conns)
	var opened, done sync.WaitGroup
	for i := range out {
		opened.Add(1)
		done.Go(func() {
			out[i] = holdZeroWindow(ctx, t, i, streams, hold, opened.Done)
		})
	}
	opened.Wait()
	if o.Ready != nil {
		o.Ready()
	}
	done.Wait()
	res := &ZeroWindowResult{}
	for i, c := range out {
		if c.err != nil {
			res.ConnErrors++
			if res.FirstErr == nil {
				res.FirstErr = c.err
			}
			continue
		}
		if res.Conns == 0 || i == 0 {
			res.MaxConcurrentStreams, res.MaxConcurrentStreamsSet = c.maxStreams, c.maxStreamsSet
		}
		res.Conns++
		if c.goAway {
			res.GoAways++
		}
		if c.closed {
			res.ConnsClosed++
		}
		for _, s := range c.streams {
			res.Opened++
			if s.Answered {
				res.Answered++
			}
		}
		res.Streams = append(res.Streams, c.streams...)
	}
	return res, ctx.Err()
}

// zeroWindowConn is what one connection of ZeroWindow saw.
type zeroWindowConn struct {
	err           error
	maxStreams    uint32
	maxStreamsSet bool
	goAway        bool
	closed        bool
	streams       []StreamEnd
}

// holdZeroWindow runs one connection of ZeroWindow. It calls opened once
// its streams are sent, or it failed.
func holdZeroWindow(ctx context.Context, t Target, idx, n int, hold time.Duration, opened func()) (out zeroWindowConn) {
	h, err := dialH2(ctx, t,
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0},
		http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	if err != nil {
		opened()
		return zeroWindowConn{err: err}
	}
	defer h.c.Close()
	defer closeOnDone(ctx, h.c)()
	out.maxStreams, out.maxStreamsSet = h.maxStreams, h.maxStreamsSet
	sentAt := make(map[uint32]time.Time, n)
	open := map[uint32]*StreamEnd{}
	for range n {
		id, err := h.open(false)
		if err != nil {
			break
		}
		sentAt[id] = time.Now()
		out.streams = append(out.streams, StreamEnd{Conn: idx, ID: id})
	}
	h.flush()
	opened()
	for i := range out.streams {
		open[out.streams[i].ID] = &out.streams[i]
	}
	end := func(id uint32, how string, code http2.ErrCode) {
		if s := open[id]; s != nil {
			s.How, s.Code, s.After = how, code, time.Since(sentAt[id])
			delete(open, id)
		}
	}
	h.c.SetReadDeadline(time.Now().Add(hold))
	for len(open) > 0 || !out.goAway {
		f, err := h.fr.ReadFrame()
		if err != nil {
			how := StreamHeld
			if endOf(err) != EndTimeout && ctx.Err() == nil {
				how, out.closed = StreamClosed, true
			}
			for id := range open {
				end(id, how, 0)
			}
			break
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if s := open[f.StreamID]; s != nil {
				s.Answered = true
			}
			if f.StreamEnded() {
				end(f.StreamID, StreamEnded, 0)
			}
		case *http2.DataFrame:
			if f.StreamEnded() {
				end(f.StreamID, StreamEnded, 0)
			}
		case *http2.RSTStreamFrame:
			if f.ErrCode == http2.ErrCodeRefusedStream {
				end(f.StreamID, StreamRefused, f.ErrCode)
			} else {
				end(f.StreamID, StreamReset, f.ErrCode)
			}
		case *http2.GoAwayFrame:
			out.goAway = true
			for id := range open {
				if id > f.LastStreamID {
					end(id, StreamRefused, f.ErrCode)
				}
			}
		}
		h.answer(f, false)
	}
	return out
}
