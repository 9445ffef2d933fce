package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/portcullis/portcullis/test/attack"
)

// runBackend serves an attack.Backend until a signal or -for runs out.
func runBackend(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("attack backend", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to serve HTTP/1.1 on")
	name := fs.String("name", "backend", "name in the X-Attack-Backend header and the body")
	stats := fs.String("stats", "", "also serve the counters as JSON on this `HOST:PORT` (\"\": no)")
	midReset := fs.Int("midreset", 0, "answer every request with `K` bytes of body, then a reset (0: answer normally)")
	lifetime := fs.Duration("for", 0, "stop after this long (0: at SIGINT or SIGTERM)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	if *lifetime > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *lifetime)
		defer cancel()
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	b := &attack.Backend{Name: *name, MidReset: *midReset, Log: os.Stdout}
	if *stats != "" {
		sl, err := net.Listen("tcp", *stats)
		if err != nil {
			l.Close()
			return err
		}
		srv := &http.Server{Handler: b.StatsHandler(), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(sl)
		defer srv.Close()
		fmt.Printf("stats %s\n", sl.Addr())
	}
	fmt.Printf("ready %s\n", l.Addr())
	context.AfterFunc(ctx, func() { b.Close() })
	if err := b.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	fmt.Printf("%s %s\n", *name, b.Stats())
	return nil
}
