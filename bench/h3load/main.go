// Command h3load is an HTTP/3 load generator for the portcullis benchmarks
// (bench/run), on quic-go's HTTP/3 client.
//
// Usage:
//
//	h3load -url https://127.0.0.1:8443/ [-c 1] [-s 1] [-d 10s] [-n 0]
//	       [-handshake] [-insecure] [-body-size -1] [-timeout 10s]
//	       [-latency-file PATH]
//
// Without -handshake it opens -c QUIC connections, each from its own UDP
// socket, and keeps -s requests in flight on each (so c*s at once). With
// -handshake it runs -c clients that each open a new connection for every
// request (a full TLS 1.3 handshake: no session resumption, no 0-RTT) and
// close it once the response is read: the rate is handshakes per second.
//
// A run stops starting requests after -d, or once -n requests have been
// started (whichever comes first; -n 0 means no count limit); requests in
// flight then finish, each within -timeout. It prints one line:
//
//	requests=N failures=F elapsed_s=S req_per_s=R p50_ms=A p99_ms=B bytes_per_s=T
//
// requests counts the requests that completed with status 200 and, with
// -body-size, a body of exactly that many bytes; failures counts every
// other outcome (an error, another status, a short or long body). The
// latency is from the request's start (the dial, with -handshake) to the
// last byte of the body; bytes_per_s counts body bytes. The first few
// distinct errors go to stderr, and the exit status is 1 if any request
// failed or none succeeded, 2 on a usage error. -latency-file writes the
// latency of every successful request, in nanoseconds, one a line (for
// merging several runs).
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis/portcullis/bench/internal/loadstat"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

type options struct {
	url       *url.URL
	addr      *net.UDPAddr
	conns     int
	streams   int
	total     int64
	duration  time.Duration
	handshake bool
	bodySize  int64
	timeout   time.Duration
	tls       *tls.Config
}

func main() {
	rawURL := flag.String("url", "", "https URL to request (required)")
	conns := flag.Int("c", 1, "connections (with -handshake: concurrent clients)")
	streams := flag.Int("s", 1, "concurrent requests (streams) per connection; 1 with -handshake")
	total := flag.Int64("n", 0, "stop after starting this many requests (0: no count limit)")
	duration := flag.Duration("d", 10*time.Second, "stop starting requests after this long")
	handshake := flag.Bool("handshake", false, "a new connection (full handshake) for every request")
	insecure := flag.Bool("insecure", false, "do not verify the server's certificate")
	bodySize := flag.Int64("body-size", -1, "expected response body size in bytes; -1: any")
	timeout := flag.Duration("timeout", 10*time.Second, "limit for one request, dial included")
	latencyFile := flag.String("latency-file", "", "write every successful request's latency (ns), one a line, to this file")
	flag.Parse()

	usage := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "h3load: "+format+"\n", a...)
		os.Exit(2)
	}
	if flag.NArg() > 0 {
		usage("unexpected arguments: %v", flag.Args())
	}
	u, err := url.Parse(*rawURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		usage("-url wants an https URL, got %q", *rawURL)
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	addr, err := net.ResolveUDPAddr("udp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		usage("%v", err)
	}
	switch {
	case *conns < 1 || *conns > 10000:
		usage("-c wants 1 to 10000")
	case *streams < 1 || *streams > 1000:
		usage("-s wants 1 to 1000")
	case *handshake && *streams != 1:
		usage("-handshake opens one connection per request: -s must be 1")
	case *total < 0:
		usage("-n must not be negative")
	case *duration <= 0 || *duration > time.Hour:
		usage("-d wants a duration above 0 and at most 1h")
	case *timeout <= 0:
		usage("-timeout must be above 0")
	}
	opt := &options{
		url: u, addr: addr, conns: *conns, streams: *streams, total: *total,
		duration: *duration, handshake: *handshake, bodySize: *bodySize, timeout: *timeout,
		tls: &tls.Config{ServerName: u.Hostname(), InsecureSkipVerify: *insecure, NextProtos: []string{http3.NextProtoH3}},
	}
	res, err := run(opt)
	if err != nil {
		fmt.Fprintf(os.Stderr, "h3load: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(res.line())
	res.reportErrors(os.Stderr)
	if *latencyFile != "" {
		if err := loadstat.WriteLatencies(*latencyFile, res.latencies); err != nil {
			fmt.Fprintf(os.Stderr, "h3load: %v\n", err)
			os.Exit(1)
		}
	}
	if res.failures > 0 || res.requests == 0 {
		os.Exit(1)
	}
}

// result is what the workers found, merged.
type result struct {
	requests, failures int64
	bytes              int64
	elapsed            time.Duration
	latencies          []time.Duration
	errors             map[string]int
}

func (r *result) line() string {
	return fmt.Sprintf("%s bytes_per_s=%.0f", loadstat.Line(r.latencies, r.failures, r.elapsed), float64(r.bytes)/r.elapsed.Seconds())
}

func (r *result) reportErrors(w io.Writer) {
	type count struct {
		msg string
		n   int
	}
	var all []count
	for m, n := range r.errors {
		all = append(all, count{m, n})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].n > all[j].n })
	for i, c := range all {
		if i == 5 {
			fmt.Fprintf(w, "h3load: ... and %d more kinds of failure\n", len(all)-i)
			break
		}
		fmt.Fprintf(w, "h3load: %d failed: %s\n", c.n, c.msg)
	}
}

// worker is one request loop's own tally, merged at the end.
type worker struct {
	ok, failed, bytes int64
	latencies         []time.Duration
	errors            map[string]int
}

func (w *worker) fail(err error) {
	w.failed++
	if w.errors == nil {
		w.errors = map[string]int{}
	}
	w.errors[err.Error()]++
}

func run(opt *options) (*result, error) {
	quicConf := &quic.Config{
		HandshakeIdleTimeout: opt.timeout,
		MaxIdleTimeout:       30 * time.Second,
		KeepAlivePeriod:      10 * time.Second,
	}
	h3 := &http3.Transport{}
	var started atomic.Int64
	deadline := time.Now().Add(opt.duration)
	// next reports whether another request may start.
	next := func() bool {
		if time.Now().After(deadline) {
			return false
		}
		return opt.total == 0 || started.Add(1) <= opt.total
	}

	// Every connection (or, with -handshake, every client) sends from its
	// own UDP socket, as separate clients would.
	var transports []*quic.Transport
	defer func() {
		for _, tr := range transports {
			tr.Close()
		}
	}()
	for range opt.conns {
		udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: localFor(opt.addr.IP)})
		if err != nil {
			return nil, err
		}
		transports = append(transports, &quic.Transport{Conn: udp})
	}

	var workers []*worker
	var wg sync.WaitGroup
	start := time.Now()
	if opt.handshake {
		for _, tr := range transports {
			w := &worker{}
			workers = append(workers, w)
			wg.Go(func() {
				for next() {
					t0 := time.Now()
					n, err := handshakeRequest(opt, tr, h3, quicConf)
					w.record(opt, t0, n, err)
				}
			})
		}
	} else {
		// Connect every connection before the clock starts, so that
		// the rate is of requests on established connections.
		conns := make([]*conn, len(transports))
		for i, tr := range transports {
			conns[i] = &conn{opt: opt, tr: tr, h3: h3, conf: quicConf}
			if _, err := conns[i].get(); err != nil {
				return nil, fmt.Errorf("connecting to %s: %w", opt.addr, err)
			}
		}
		deadline = time.Now().Add(opt.duration)
		start = time.Now()
		for _, c := range conns {
			for range opt.streams {
				w := &worker{}
				workers = append(workers, w)
				wg.Go(func() {
					for next() {
						t0 := time.Now()
						n, err := c.request()
						w.record(opt, t0, n, err)
					}
				})
			}
		}
		defer func() {
			for _, c := range conns {
				c.close()
			}
		}()
	}
	wg.Wait()

	res := &result{elapsed: time.Since(start), errors: map[string]int{}}
	for _, w := range workers {
		res.requests += w.ok
		res.failures += w.failed
		res.bytes += w.bytes
		res.latencies = append(res.latencies, w.latencies...)
		for m, n := range w.errors {
			res.errors[m] += n
		}
	}
	return res, nil
}

func (w *worker) record(opt *options, t0 time.Time, n int64, err error) {
	if err == nil && opt.bodySize >= 0 && n != opt.bodySize {
		err = fmt.Errorf("body of %d bytes, want %d", n, opt.bodySize)
	}
	if err != nil {
		w.fail(err)
		return
	}
	w.ok++
	w.bytes += n
	w.latencies = append(w.latencies, time.Since(t0))
}

// localFor is the unspecified address of the server address's family.
func localFor(ip net.IP) net.IP {
	if ip.To4() != nil {
		return net.IPv4zero
	}
	return net.IPv6unspecified
}

// conn is one long-lived HTTP/3 connection shared by -s request loops. A
// connection that ends is dialed again by the next request.
type conn struct {
	opt  *options
	tr   *quic.Transport
	h3   *http3.Transport
	conf *quic.Config

	mu sync.Mutex
	cc *http3.ClientConn
}

func (c *conn) get() (*http3.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cc != nil && c.cc.Context().Err() == nil {
		return c.cc, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.opt.timeout)
	defer cancel()
	qc, err := c.tr.Dial(ctx, c.opt.addr, c.opt.tls, c.conf)
	if err != nil {
		return nil, dialError(c.opt, err)
	}
	c.cc = c.h3.NewClientConn(qc)
	return c.cc, nil
}

func (c *conn) request() (int64, error) {
	cc, err := c.get()
	if err != nil {
		return 0, err
	}
	return do(c.opt, cc)
}

func (c *conn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cc != nil {
		c.cc.CloseWithError(0, "")
	}
}

// handshakeRequest dials a new connection, sends one request on it, reads
// the response and closes the connection.
func handshakeRequest(opt *options, tr *quic.Transport, h3 *http3.Transport, conf *quic.Config) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opt.timeout)
	defer cancel()
	qc, err := tr.Dial(ctx, opt.addr, opt.tls, conf)
	if err != nil {
		return 0, dialError(opt, err)
	}
	defer qc.CloseWithError(0, "")
	return do(opt, h3.NewClientConn(qc))
}

func dialError(opt *options, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("dial %s: no handshake within %v", opt.addr, opt.timeout)
	}
	return fmt.Errorf("dial %s: %w", opt.addr, err)
}

// do sends one GET and reads the whole body; it returns the body's size.
func do(opt *options, cc *http3.ClientConn) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opt.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, opt.url.String(), nil)
	if err != nil {
		return 0, err
	}
	resp, err := cc.RoundTrip(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return 0, fmt.Errorf("no response within %v", opt.timeout)
		}
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return n, fmt.Errorf("reading the body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return n, fmt.Errorf("status %d", resp.StatusCode)
	}
	return n, nil
}
