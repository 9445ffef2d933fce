// Command tcpload is the layer-4 load generator of the portcullis
// benchmarks (bench/run compare): plain TCP against bench/backend's byte
// source (backend -tcp ADDR), directly or through a proxy relaying TCP.
//
// Usage:
//
//	tcpload -addr 127.0.0.1:9000 [-mode stream] [-size 1048576] [-c 4]
//	        [-d 10s] [-reuse] [-timeout 60s] [-latency-file PATH]
//
// The protocol: the client sends an 8-byte big-endian length N, the
// server answers with exactly N bytes and waits for the next length or
// EOF.
//
// -mode stream (the default): each of -c workers loops over transfers of
// -size bytes. A transfer dials a new connection, asks for -size bytes,
// reads them and closes the connection; with -reuse each worker dials one
// connection before the clock starts and asks for every transfer on it
// (a connection that fails is replaced for the next transfer).
//
// -mode connect: each worker loops over dial, one request for 1 byte (8
// bytes out, 1 back), and close: the rate is connections per second.
// -size and -reuse do not apply.
//
// Workers stop starting transfers after -d; those in flight finish, each
// within -timeout (dial included). It prints one line in the format of
// bench/h3load and bench/tlsload:
//
//	requests=N failures=F elapsed_s=S req_per_s=R p50_ms=A p99_ms=B bytes=T bytes_per_s=U mib_per_s=M
//
// requests counts the transfers (connections, with -mode connect) that
// read every byte asked for; failures counts the others. The latency of a
// transfer is from the dial (from the request, with -reuse) to its last
// byte; bytes counts the payload bytes of the successful transfers (the
// 8-byte requests aside), bytes_per_s and mib_per_s the same over the
// whole run. The first error goes to stderr, and the
// exit status is 1 if any transfer failed or none succeeded, 2 on a usage
// error. -latency-file writes every successful transfer's latency, in
// nanoseconds, one a line.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/portcullis/portcullis/bench/internal/loadstat"
)

// options are the flags of a run.
type options struct {
	addr    string
	size    int64
	reuse   bool
	timeout time.Duration
}

// worker is one client's loop and results.
type worker struct {
	opt  *options
	buf  []byte
	conn net.Conn // the kept connection with -reuse; nil otherwise

	lat      []time.Duration
	bytes    int64
	failures int
	firstErr error
}

func main() {
	addr := flag.String("addr", "", "TCP address of the byte source or of the proxy in front of it (required)")
	mode := flag.String("mode", "stream", "stream (transfers of -size bytes) or connect (connections per second)")
	size := flag.Int64("size", 1<<20, "bytes per transfer, -mode stream")
	clients := flag.Int("c", 4, "concurrent workers, each with one connection at a time")
	dur := flag.Duration("d", 10*time.Second, "stop starting transfers after this long")
	reuse := flag.Bool("reuse", false, "-mode stream: every transfer of a worker on one kept connection")
	timeout := flag.Duration("timeout", 60*time.Second, "limit for one transfer, dial included")
	latFile := flag.String("latency-file", "", "write every successful transfer's latency (ns), one a line, to this file")
	flag.Parse()

	opt := &options{addr: *addr, size: *size, reuse: *reuse, timeout: *timeout}
	switch {
	case *addr == "" || *clients < 1 || *dur <= 0 || *timeout <= 0 || flag.NArg() > 0:
		usage("-addr HOST:PORT, -c >= 1, -d > 0 and -timeout > 0")
	case *mode == "connect":
		if *reuse {
			usage("-reuse is for -mode stream")
		}
		opt.size = 1
	case *mode == "stream":
		if *size < 1 {
			usage("-size: at least 1 byte")
		}
	default:
		usage(fmt.Sprintf("-mode %q: want stream or connect", *mode))
	}

	workers := make([]*worker, *clients)
	for i := range workers {
		workers[i] = &worker{opt: opt, buf: make([]byte, min(opt.size, 256<<10))}
	}
	// With -reuse the connections are made before the clock starts.
	if opt.reuse {
		for _, w := range workers {
			c, err := net.DialTimeout("tcp", opt.addr, opt.timeout)
			if err != nil {
				fmt.Fprintf(os.Stderr, "tcpload: %v\n", err)
				os.Exit(1)
			}
			w.conn = c
		}
	}

	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(*dur)
	for _, w := range workers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				w.transfer()
			}
			if w.conn != nil {
				w.conn.Close()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	var (
		lat      []time.Duration
		bytes    int64
		failures int
		firstErr error
	)
	for _, w := range workers {
		lat = append(lat, w.lat...)
		bytes += w.bytes
		failures += w.failures
		if firstErr == nil {
			firstErr = w.firstErr
		}
	}
	if *latFile != "" {
		if err := loadstat.WriteLatencies(*latFile, lat); err != nil {
			fmt.Fprintln(os.Stderr, "tcpload:", err)
			os.Exit(1)
		}
	}
	secs := elapsed.Seconds()
	fmt.Printf("%s bytes=%d bytes_per_s=%.0f mib_per_s=%.1f\n", loadstat.Line(lat, int64(failures), elapsed),
		bytes, float64(bytes)/secs, float64(bytes)/secs/(1<<20))
	if firstErr != nil || len(lat) == 0 {
		fmt.Fprintf(os.Stderr, "tcpload: %d failed: %v\n", failures, firstErr)
		os.Exit(1)
	}
}

func usage(msg string) {
	fmt.Fprintf(os.Stderr, "tcpload: %s\n", msg)
	flag.Usage()
	os.Exit(2)
}

// transfer makes one transfer and records its outcome.
func (w *worker) transfer() {
	t0 := time.Now()
	if err := w.one(t0); err != nil {
		w.failures++
		if w.firstErr == nil {
			w.firstErr = err
		}
		if w.conn != nil {
			w.conn.Close()
			w.conn = nil
		}
		return
	}
	w.lat = append(w.lat, time.Since(t0))
	w.bytes += w.opt.size
}

// one asks for w.opt.size bytes and reads them, on the kept connection or
// a new one (closed at the end).
func (w *worker) one(t0 time.Time) error {
	c := w.conn
	if c == nil {
		var err error
		c, err = net.DialTimeout("tcp", w.opt.addr, w.opt.timeout)
		if err != nil {
			return err
		}
		if w.opt.reuse {
			w.conn = c
		} else {
			defer c.Close()
		}
	}
	c.SetDeadline(t0.Add(w.opt.timeout))
	var req [8]byte
	binary.BigEndian.PutUint64(req[:], uint64(w.opt.size))
	if _, err := c.Write(req[:]); err != nil {
		return err
	}
	left := w.opt.size
	for left > 0 {
		n, err := c.Read(w.buf[:min(left, int64(len(w.buf)))])
		left -= int64(n)
		if err != nil && left > 0 {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("connection closed with %d of %d bytes unread", left, w.opt.size)
			}
			return err
		}
	}
	return nil
}
