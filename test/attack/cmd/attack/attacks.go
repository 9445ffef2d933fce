package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/portcullis/portcullis/test/attack"
)

func runBadChunk(ctx context.Context, args []string) error {
	var c common
	fs := c.flags("badchunk", false)
	n := fs.Int("n", 3, "requests, each on its own connection")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	w := c.watch(ctx)
	res, err := attack.BadChunk(ctx, attack.BadChunkOptions{Target: c.target, Requests: *n})
	return finish(res, w, err)
}

func runBigHeader(ctx context.Context, args []string) error {
	var c common
	fs := c.flags("bigheader", false)
	size := fs.Int("size", 1<<20, "bytes in the big header line and in the big request line")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	w := c.watch(ctx)
	res, err := attack.BigHeader(ctx, attack.BigHeaderOptions{Target: c.target, Size: *size})
	return finish(res, w, err)
}

func runZeroWindow(ctx context.Context, args []string) error {
	var c common
	fs := c.flags("zerowindow", false)
	o := attack.ZeroWindowOptions{}
	fs.IntVar(&o.Conns, "conns", 10, "HTTP/2 connections")
	fs.IntVar(&o.Streams, "streams", 100, "streams opened on each connection")
	fs.DurationVar(&o.Hold, "hold", 10*time.Second, "how long to hold the streams")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	w := c.watch(ctx)
	o.Target = c.target
	o.Ready = func() { w.mark("all streams opened") }
	res, err := attack.ZeroWindow(ctx, o)
	return finish(res, w, err)
}

func runRapidReset(ctx context.Context, args []string) error {
	var c common
	fs := c.flags("rapidreset", false)
	o := attack.RapidResetOptions{}
	fs.IntVar(&o.Rate, "rate", 100, "streams opened and cancelled per second")
	fs.DurationVar(&o.Duration, "for", 5*time.Second, "how long to send")
	fs.IntVar(&o.Streams, "streams", 0, "at most this many streams (0: rate × duration)")
	fs.DurationVar(&o.ResetAfter, "reset-after", 0, "time between a stream's HEADERS and its RST_STREAM (0: same write)")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	w := c.watch(ctx)
	o.Target = c.target
	res, err := attack.RapidReset(ctx, o)
	return finish(res, w, err)
}

func runL4Idle(ctx context.Context, args []string) error {
	var c common
	fs := c.flags("l4idle", true)
	o := attack.L4IdleOptions{}
	fs.IntVar(&o.Conns, "conns", 100, "TCP connections")
	fs.DurationVar(&o.Hold, "hold", 10*time.Second, "how long to hold them once open")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	w := c.watch(ctx)
	o.Addr, o.Timeout = c.target.Addr, c.target.Timeout
	o.Ready = func(n int) { w.perConn(n) }
	res, err := attack.L4Idle(ctx, o)
	return finish(res, w, err)
}

func runMidReset(ctx context.Context, args []string) error {
	var c common
	fs := c.flags("midreset", false)
	h2 := fs.Bool("h2", false, "HTTP/2 (ALPN h2 with -tls, prior knowledge without)")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	w := c.watch(ctx)
	res, err := attack.MidReset(ctx, attack.MidResetOptions{Target: c.target, HTTP2: *h2})
	return finish(res, w, err)
}

func runQUICFlood(ctx context.Context, args []string) error {
	var c common
	fs := c.flags("quicflood", true)
	o := attack.QUICFloodOptions{}
	fs.IntVar(&o.Count, "n", 1000, "connection attempts (Initials), each from a source address of its own")
	fs.IntVar(&o.Rate, "rate", 5000, "Initials per second")
	sources := fs.String("sources", "127.1.0.0/16", "source addresses, a `PREFIX` inside 127.0.0.0/8")
	fs.StringVar(&c.target.Host, "host", "localhost", "TLS server name of the ClientHello")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	p, err := netip.ParsePrefix(*sources)
	if err != nil {
		return fmt.Errorf("-sources: %w", err)
	}
	o.Sources, o.Target = p, c.target
	w := c.watch(ctx)
	res, err := attack.QUICFlood(ctx, o)
	return finish(res, w, err)
}

// finish reports res and the measurements of w, unless the attack failed.
func finish[T any, P interface {
	*T
	fmt.Stringer
}](res P, w *watcher, err error) error {
	if res == nil || (err != nil && !errors.Is(err, context.Canceled)) {
		w.stop()
		return err
	}
	report(res, w)
	return err
}
