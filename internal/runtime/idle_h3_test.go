package runtime

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/portcullis/portcullis/internal/compile"
	"github.com/portcullis/portcullis/internal/h3"
	"github.com/portcullis/portcullis/internal/proxy"
	"github.com/portcullis/portcullis/internal/quiclb"
	"github.com/portcullis/portcullis/internal/tickets"
)

var (
	idleH3Quic      = flag.String("idleh3quic", "", "BenchmarkIdleHTTP3ConnTuned: quic.Config fields to set, as `Field=value,...` (integers, durations, booleans), e.g. MaxIncomingStreams=10,KeepAlivePeriod=15s")
	idleH3StaticTLS = flag.Bool("idleh3statictls", false, "BenchmarkIdleHTTP3ConnTuned: hand quic-go the bind's tls.Config itself instead of one with GetConfigForClient")
	idleH3KeepAlive = flag.Duration("idleh3keepalive", 0, "BenchmarkIdleHTTP3Conn*: the clients' QUIC keep-alive `period` (0: none, the connections are silent; bench/idle sends a PING every 10s)")
	idleH3Requests  = flag.Int("idleh3requests", 1, "BenchmarkIdleHTTP3Conn*: GETs each client makes, one after the other, before it holds its connection (bench/idle: 1)")
)

// idleH3ClientIdleTimeout is the max_idle_timeout the clients offer, as
// bench/idle does. The server's is limits.idle_timeout (120 s), the smaller of the
// two applies; the http3.Server also closes a connection idle_timeout after
// its last request, keep-alive PINGs or not. So a run must take its
// readings within idle_timeout of the first connection's request.
const idleH3ClientIdleTimeout = 5 * time.Minute

// BenchmarkIdleHTTP3Conn measures what an idle HTTP/3 connection costs the
// serving process, the way bench/run compare's "idle HTTP/3" scenario
// measures it (RSS growth / connections), with the readings and flags of
// BenchmarkIdleTLSConn.
//
// The server is portcullis's own (serve: the bind's TLS listener and, on
// the same port, its QUIC transport and http3.Server, one shard, retry
// never, as bench/run compare configures it). The clients, in another
// process, do what bench/idle -h3 does: open -idleconns QUIC connections,
// 64 at a time, each from its own UDP socket, with one HTTP/3 GET whose
// response they read to its end; then they hold them. They send no
// keep-alive PINGs unless -idleh3keepalive says so (bench/idle: 10s).
//
// Besides the readings of BenchmarkIdleTLSConn, the log holds the
// goroutines the open connections added, aggregated by stack (a goroutine
// profile, debug=1); with -idleprofile, the whole goroutine profile is
// written to FILE.goroutine.
//
// The connections must still be open when the last reading is taken:
// portcullis closes an HTTP/3 connection 120 s after its last request
// whatever the client sends, so with 10,000 connections on a slow machine
// the run fails if opening them takes too long (lower -idleconns, or
// -idlesettle). Run it like BenchmarkIdleTLSConn:
//
//	go test ./internal/runtime -run '^$' -bench '^BenchmarkIdleHTTP3Conn$' -benchtime 1x -cpu 1 -v -idleconns 10000
func BenchmarkIdleHTTP3Conn(b *testing.B) {
	n := idleCount(b)
	client := startIdleH3Client(b, n)
	s, addr := serveIdle(b, client.backend)
	measureIdleH3(b, n, client, addr)
	s.close()
}

// BenchmarkIdleHTTP3ConnTuned is BenchmarkIdleHTTP3Conn with the HTTP/3
// side served by serveIdleH3Tuned, a copy of h3.Server.Start (one shard) whose
// quic.Config -idleh3quic changes, to measure what each setting is worth
// per idle connection. Without flags it serves as h3.Server does: compare
// a setting's run with runs without flags (RSS varies by a few KB from run
// to run; live heap and stacks by less than 1%). Run it like
// BenchmarkIdleHTTP3Conn:
//
//	go test ./internal/runtime -run '^$' -bench '^BenchmarkIdleHTTP3ConnTuned$' -benchtime 1x -cpu 1 -v -idleconns 10000 -idleh3quic MaxIncomingStreams=10
func BenchmarkIdleHTTP3ConnTuned(b *testing.B) {
	n := idleCount(b)
	client := startIdleH3Client(b, n)
	addr := freeIdleAddr(b)
	bind := compileIdle(b, addr, client.backend).BindAt[addr]
	conf := &quic.Config{
		HandshakeIdleTimeout: bind.QUIC.HandshakeTimeout,
		MaxIdleTimeout:       bind.H3IdleTimeout(),
		Allow0RTT:            false,
	}
	if err := setQUICConfig(conf, *idleH3Quic); err != nil {
		b.Fatalf("-idleh3quic: %v", err)
	}
	b.Logf("quic.Config %+v; static tls.Config %v", *conf, *idleH3StaticTLS)
	serveIdleH3Tuned(b, addr, bind, conf, *idleH3StaticTLS)
	measureIdleH3(b, n, client, addr)
}

// serveIdleH3Tuned serves HTTP/3 for bind at addr the way h3.Server does
// on one shard without steering (retry never, the socket read through a
// ForwardConn, a fresh process's generation), with conf as the
// listener's quic.Config (its Tracer set as h3.Server sets it). With
// staticTLS, quic-go gets bind.TLS (with h3 offered) instead of a
// tls.Config that looks the bind up for each handshake, which saves it a
// clone per connection.
func serveIdleH3Tuned(b *testing.B, addr string, bind *compile.Bind, conf *quic.Config, staticTLS bool) {
	var cur atomic.Pointer[compile.Bind]
	cur.Store(bind)
	srv := &http3.Server{
		Handler:     handler(&cur),
		IdleTimeout: bind.H3IdleTimeout(),
		Logger:      slog.New(slog.DiscardHandler),
		ConnContext: func(ctx context.Context, c *quic.Conn) context.Context {
			h3.HandshakeDone(ctx)
			cc := &proxy.ClientConn{Remote: c.RemoteAddr(), Local: c.LocalAddr()}
			context.AfterFunc(ctx, cc.Close)
			return proxy.WithClientConn(ctx, cc)
		},
	}
	var tlsConf *tls.Config
	if staticTLS {
		tlsConf = http3.ConfigureTLSConfig(bind.TLS.Clone())
	} else {
		tlsConf = http3.ConfigureTLSConfig(tlsConfig(&cur))
	}
	tickets.New(nil).Use(tlsConf)
	q := bind.QUIC
	metrics := h3.NewMetrics(q.Format, 1)
	udpAddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		b.Fatal(err)
	}
	udp, err := net.ListenUDP("udp", udpAddr)
	if err != nil {
		b.Fatal(err)
	}
	hs, err := h3.NewHandshakes(q.Handshakes, nil)
	if err != nil {
		b.Fatal(err)
	}
	var gen quiclb.Generation
	conn := h3.NewForwardConn(udp, q.Format, gen)
	tr := &quic.Transport{
		Conn:                  conn,
		ConnectionIDGenerator: quiclb.NewGenCIDGenerator(q.Format, gen, 0),
		StatelessResetKey:     q.ResetKey,
		TokenGeneratorKey:     q.TokenKey,
		VerifySourceAddress:   hs.VerifySourceAddress,
		ConnContext:           hs.ConnContext,
		Tracer:                metrics.TransportTracer(0, nil),
	}
	conf.Tracer = metrics.ConnTracer(0, nil)
	ln, err := tr.Listen(tlsConf, conf)
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeListener(ln)
	}()
	b.Cleanup(func() {
		srv.Close()
		ln.Close()
		<-done
		tr.Close()
		conn.Close()
	})
}

// setQUICConfig sets the fields of c that spec names, as
// Field=value[,Field=value...]: integers, durations and booleans.
func setQUICConfig(c *quic.Config, spec string) error {
	v := reflect.ValueOf(c).Elem()
	for kv := range strings.SplitSeq(spec, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		name, val, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("%q: want Field=value", kv)
		}
		f := v.FieldByName(name)
		if !f.IsValid() || !f.CanSet() {
			return fmt.Errorf("%q: quic.Config has no field %s", kv, name)
		}
		switch {
		case f.Type() == reflect.TypeFor[time.Duration]():
			d, err := time.ParseDuration(val)
			if err != nil {
				return err
			}
			f.SetInt(int64(d))
		case f.Kind() == reflect.Bool:
			x, err := strconv.ParseBool(val)
			if err != nil {
				return err
			}
			f.SetBool(x)
		case f.CanInt():
			x, err := strconv.ParseInt(val, 0, 64)
			if err != nil {
				return err
			}
			f.SetInt(x)
		case f.CanUint():
			x, err := strconv.ParseUint(val, 0, 64)
			if err != nil {
				return err
			}
			f.SetUint(x)
		default:
			return fmt.Errorf("%q: field %s is a %s", kv, name, f.Type())
		}
	}
	return nil
}

// startIdleH3Client starts the client process of the HTTP/3 idle
// benchmarks.
func startIdleH3Client(b *testing.B, n int) *idleClient {
	return startIdleProcess(b, n, "TestIdleHTTP3ConnClient", "-idleh3keepalive="+idleH3KeepAlive.String(), "-idleh3requests="+strconv.Itoa(*idleH3Requests))
}

// measureIdleH3 is measureIdle for HTTP/3 connections to addr: it checks
// that every connection is still open after the last reading and logs the
// goroutines they added.
func measureIdleH3(b *testing.B, n int, client *idleClient, addr string) {
	baseline := goroutineStacks(b, ".base")
	start, cpu := time.Now(), processCPU()
	measureIdle(b, n, client, "https://"+addr+"/", func(before, open *idleSnap) {
		b.Logf("connections opened and read in %v; the server process used %v of CPU for the whole run (handshakes, requests, GCs, the readings' forced GCs)",
			time.Since(start).Round(time.Second), (processCPU() - cpu).Round(time.Millisecond))
		now := runtime.NumGoroutine()
		if got := open.goroutines - before.goroutines; got < n {
			b.Errorf("%d more goroutines with %d connections open: some closed early?", got, n)
		}
		if now < open.goroutines-n/100 {
			b.Errorf("%d goroutines after the last reading, %d at the first: connections closed during the run (the idle timeout?); the readings are not per connection", now, open.goroutines)
		}
		b.Log(goroutineGrowth(b, baseline, n))
	})
}

// processCPU is the user and system CPU time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// goroutineStack is one stack of a goroutine profile (debug=1) and how
// many goroutines are there.
type goroutineStack struct {
	count  int
	frames []string // function and file:line, innermost first
}

// goroutineStacks reads the goroutine profile, by stack. With -idleprofile
// FILE, the profile is also written to FILE.goroutine plus suffix.
func goroutineStacks(b *testing.B, suffix string) map[string]*goroutineStack {
	var buf bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&buf, 1); err != nil {
		b.Fatal(err)
	}
	if *idleProfile != "" {
		if err := os.WriteFile(*idleProfile+".goroutine"+suffix, buf.Bytes(), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	out := map[string]*goroutineStack{}
	var cur *goroutineStack
	flush := func() {
		if cur != nil {
			key := strings.Join(cur.frames, "\n")
			if old := out[key]; old != nil {
				old.count += cur.count
			} else {
				out[key] = cur
			}
		}
		cur = nil
	}
	for l := range strings.Lines(buf.String()) {
		l = strings.TrimSpace(l)
		switch {
		case l == "":
			flush()
		case strings.HasPrefix(l, "#"):
			// #	0x4b2c4f	pkg.f+0x2f	/path/file.go:12
			f := strings.Fields(l)
			if cur != nil && len(f) >= 4 {
				fn := f[2]
				if i := strings.LastIndex(fn, "+0x"); i > 0 {
					fn = fn[:i]
				}
				cur.frames = append(cur.frames, fn+" "+shortPath(f[3]))
			}
		default:
			// 10000 @ 0x47b8ee 0x...
			if c, _, ok := strings.Cut(l, " @ "); ok {
				flush()
				count, err := strconv.Atoi(c)
				if err == nil {
					cur = &goroutineStack{count: count}
				}
			}
		}
	}
	flush()
	return out
}

// shortPath keeps the last two elements of a file path.
func shortPath(p string) string {
	parts := strings.Split(p, "/")
	if len(parts) > 2 {
		parts = parts[len(parts)-2:]
	}
	return strings.Join(parts, "/")
}

// goroutineGrowth describes the stacks with at least n/10 more goroutines
// than in baseline, the most numerous first, with their number per
// connection.
func goroutineGrowth(b *testing.B, baseline map[string]*goroutineStack, n int) string {
	type grown struct {
		key   string
		delta int
		s     *goroutineStack
	}
	var gs []grown
	total := 0
	for key, s := range goroutineStacks(b, "") {
		d := s.count
		if old := baseline[key]; old != nil {
			d -= old.count
		}
		total += d
		if d >= n/10 {
			gs = append(gs, grown{key, d, s})
		}
	}
	slices.SortFunc(gs, func(x, y grown) int { return cmp.Or(y.delta-x.delta, strings.Compare(x.key, y.key)) })
	var sb strings.Builder
	fmt.Fprintf(&sb, "goroutines added by the open connections: %.2f per connection; by stack (at least 0.1 per connection):\n", float64(total)/float64(n))
	for _, g := range gs {
		fmt.Fprintf(&sb, "%.2f per connection:\n", float64(g.delta)/float64(n))
		for _, f := range g.s.frames {
			fmt.Fprintf(&sb, "\t%s\n", f)
		}
	}
	return sb.String()
}

// TestIdleHTTP3ConnClient is the client process of the HTTP/3 idle
// benchmarks; it skips unless one of them started it (see
// idleClientMain).
func TestIdleHTTP3ConnClient(t *testing.T) {
	idleClientMain(t, func(rawURL string) (io.Closer, error) { return openIdleH3(rawURL, *idleH3KeepAlive, *idleH3Requests) })
}

// closerFunc is an io.Closer.
type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// openIdleH3 opens a connection as bench/idle -h3 does (QUIC from a UDP
// socket of its own, HTTP/3 GETs read to their end, one unless requests
// says more) and returns its closer. keepAlive is the QUIC keep-alive
// period, 0 for none.
//
// A connection the server refuses (CONNECTION_REFUSED: quic-go queues at
// most 32 handshaken connections that its http3.Server has not accepted
// yet, which a busy GOMAXPROCS=1 server can fill) is opened again, a few
// times at most; the retries are counted on stderr.
func openIdleH3(rawURL string, keepAlive time.Duration, requests int) (io.Closer, error) {
	for try := 1; ; try++ {
		c, err := openIdleH3Once(rawURL, keepAlive, requests)
		var te *quic.TransportError
		if err == nil || try == 5 || !errors.As(err, &te) || te.ErrorCode != quic.ConnectionRefused {
			return c, err
		}
		fmt.Fprintf(os.Stderr, "idle client: refused (%v), try %d\n", err, try+1)
	}
}

// openIdleH3Once is one attempt of openIdleH3.
func openIdleH3Once(rawURL string, keepAlive time.Duration, requests int) (io.Closer, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	addr, err := net.ResolveUDPAddr("udp", u.Host)
	if err != nil {
		return nil, err
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	tr := &quic.Transport{Conn: udp}
	timeout := scaledTimeout()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	qc, err := tr.Dial(ctx, addr, &tls.Config{InsecureSkipVerify: true, ServerName: u.Hostname(), NextProtos: []string{http3.NextProtoH3}},
		&quic.Config{HandshakeIdleTimeout: timeout, MaxIdleTimeout: idleH3ClientIdleTimeout, KeepAlivePeriod: keepAlive})
	if err != nil {
		tr.Close()
		return nil, err
	}
	closer := closerFunc(func() error { return errors.Join(qc.CloseWithError(0, ""), tr.Close()) })
	cc := (&http3.Transport{}).NewClientConn(qc)
	for range max(requests, 1) {
		if err := getH3(ctx, cc, rawURL); err != nil {
			closer()
			return nil, err
		}
	}
	return closer, nil
}

// getH3 sends one GET on cc and reads the response to its end.
func getH3(ctx context.Context, cc *http3.ClientConn, rawURL string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return err
	}
	resp, err := cc.RoundTrip(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != http.StatusOK {
		err = errors.New("status " + resp.Status)
	}
	return err
}
