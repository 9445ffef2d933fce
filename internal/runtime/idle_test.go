package runtime

import (
	"bufio"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/compile"
	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/testutil"
)

var (
	idleConns   = flag.Int("idleconns", 2000, "BenchmarkIdleTLSConn*: idle connections to open (bench/run compare uses 10000)")
	idleProfile = flag.String("idleprofile", "", "BenchmarkIdleTLSConn*: write a heap profile to `FILE` while the connections are open, after a GC, and one of before they opened to FILE.base")
	idleSettle  = flag.Duration("idlesettle", 2*time.Second, "BenchmarkIdleTLSConn*: wait before each unforced reading, as bench/run compare does")
)

// idleClientEnv selects the client process of BenchmarkIdleTLSConn: the
// test binary run again with TestIdleTLSConnClient. Its value is the
// number of connections.
const idleClientEnv = "PORTCULLIS_IDLE_CLIENT"

// idleRuns counts the measurements this process has made.
var idleRuns int

// idleParallel is how many connections the client opens at once, as
// bench/idle does.
const idleParallel = 64

// BenchmarkIdleTLSConn measures what an idle HTTP/1.1-over-TLS keep-alive
// connection costs the serving process, the way bench/run compare's "idle
// HTTP/1.1 TLS" scenario measures it (RSS growth / connections) and broken
// down by the Go runtime's memory classes.
//
// The server is portcullis's own: a graph compiled from a configuration
// file, served by serve on bound sockets, proxying to an httptest backend.
// The backend and the clients run in another process (the test binary
// again, in TestIdleTLSConnClient), so that only the proxy's memory is
// counted. The clients do what bench/idle does: open -idleconns
// connections, 64 at a time, each with a TLS 1.3 handshake offering only
// http/1.1 and one GET whose response they read, then hold them.
//
// Readings of the server process: before the connections open (after a GC
// and -idlesettle, so that the handshakes' garbage is the connections');
// -idlesettle after they are open, without forcing a GC (comparable to
// bench/run compare); after one forced GC; after a second one (a GC halves
// at most once the stack of a goroutine using less than a quarter of it);
// and after debug.FreeOSMemory (the floor: what is live, and its
// fragmentation). The metrics are the growth per connection of each
// reading; the log holds the whole table.
//
// One run opens the connections once, whatever b.N is; run it with
// -benchtime 1x, with -cpu 1 as portcullis runs in bench/run compare
// (GOMAXPROCS=1), alone in its process (a previous benchmark's heap would
// blur RSS), and with -v for the whole table:
//
//	go test ./internal/runtime -run '^$' -bench '^BenchmarkIdleTLSConn$' -benchtime 1x -cpu 1 -v -idleconns 10000
//
// GOGC and GOMEMLIMIT in the environment apply to the measured process.
func BenchmarkIdleTLSConn(b *testing.B) {
	n := idleCount(b)
	client := startIdleClient(b, n)
	s, addr := serveIdle(b, client.backend)
	measureIdle(b, n, client, "https://"+addr+"/", func(before, open *idleSnap) {
		if got := open.goroutines - before.goroutines; got < n {
			b.Errorf("%d more goroutines with %d connections open: some closed early?", got, n)
		}
	})
	s.close()
}

// idleCount is -idleconns, once the open-files limit allows it.
func idleCount(b *testing.B) int {
	n := *idleConns
	if n < 1 {
		b.Fatalf("-idleconns %d", n)
	}
	raiseOpenFiles(b, n)
	return n
}

// measureIdle takes the readings around the client's opening of n
// connections to url, hands check the ones before and with the connections
// open, reports them all and closes the client.
func measureIdle(b *testing.B, n int, client *idleClient, url string, check func(before, open *idleSnap)) {
	if idleRuns++; idleRuns > 1 {
		b.Log("not the first idle benchmark of this process: RSS and Sys grow from a heap the previous one left; for comparable figures, run one per process")
	}
	var base *os.File
	if *idleProfile != "" {
		// Every allocation of 4 KiB or more is recorded, and smaller ones
		// often enough to attribute a few bytes per connection.
		runtime.MemProfileRate = 4096
		var err error
		if base, err = os.Create(*idleProfile + ".base"); err != nil {
			b.Fatal(err)
		}
	}
	runtime.GC()
	time.Sleep(*idleSettle)
	before := readIdle()
	if base != nil {
		runtime.GC()
		writeHeapProfile(b, base)
	}

	b.ResetTimer()
	client.open(b, url)
	b.StopTimer()

	time.Sleep(*idleSettle)
	after := readIdle()
	runtime.GC()
	gc1 := readIdle()
	runtime.GC()
	gc2 := readIdle()
	if *idleProfile != "" {
		f, err := os.Create(*idleProfile)
		if err != nil {
			b.Fatal(err)
		}
		writeHeapProfile(b, f)
	}
	debug.FreeOSMemory()
	freed := readIdle()
	check(before, after)

	for _, r := range []struct {
		prefix string
		snap   *idleSnap
	}{{"", after}, {"gc-", gc2}, {"freed-", freed}} {
		d := func(f func(*idleSnap) float64) float64 { return (f(r.snap) - f(before)) / float64(n) }
		b.ReportMetric(d(func(x *idleSnap) float64 { return float64(x.rss) }), r.prefix+"rss-B/conn")
		b.ReportMetric(d(func(x *idleSnap) float64 { return float64(x.ms.HeapInuse) }), r.prefix+"heap-B/conn")
		b.ReportMetric(d(func(x *idleSnap) float64 { return float64(x.ms.HeapAlloc) }), r.prefix+"heapalloc-B/conn")
		b.ReportMetric(d(func(x *idleSnap) float64 { return float64(x.ms.StackInuse) }), r.prefix+"stack-B/conn")
		b.ReportMetric(d(func(x *idleSnap) float64 { return float64(x.ms.HeapIdle - x.ms.HeapReleased) }), r.prefix+"heapidle-B/conn")
		b.ReportMetric(d(func(x *idleSnap) float64 { return float64(x.ms.Sys) }), r.prefix+"sys-B/conn")
	}
	b.ReportMetric(float64(after.goroutines-before.goroutines)/float64(n), "goroutines/conn")

	b.Logf("%d idle connections; GOMAXPROCS=%d GOGC=%q GOMEMLIMIT=%q; growth per connection in bytes from the reading before they opened (%s):\n%s",
		n, runtime.GOMAXPROCS(0), os.Getenv("GOGC"), os.Getenv("GOMEMLIMIT"), before.describe(), idleTable(n, before, []string{"open", "gc", "gc2", "freed"}, after, gc1, gc2, freed))

	client.close(b)
}

// TestIdleTLSConnClient is the client process of BenchmarkIdleTLSConn; it
// skips unless the benchmark started it (see idleClientMain).
func TestIdleTLSConnClient(t *testing.T) {
	idleClientMain(t, func(url string) (io.Closer, error) { return openIdle(url) })
}

// idleClientMain is the body of a client process of the idle benchmarks,
// open being how it opens one connection; it skips unless a benchmark
// started it. It runs the backend and prints "backend ADDR"; then it reads
// the proxy's URL from stdin, opens the connections, idleParallel at a
// time, prints "open N" and holds them until stdin closes.
func idleClientMain(t *testing.T, open func(url string) (io.Closer, error)) {
	n, err := strconv.Atoi(os.Getenv(idleClientEnv))
	if err != nil {
		t.Skip("the client process of an idle benchmark")
	}
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	}))
	defer backend.Close()
	fmt.Printf("backend %s\n", backend.Listener.Addr())
	in := bufio.NewReader(os.Stdin)
	url, err := in.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	url = strings.TrimSpace(url)

	var (
		mu    sync.Mutex
		conns []io.Closer
		first error
	)
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	for range idleParallel {
		wg.Go(func() {
			for range jobs {
				c, err := open(url)
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				if c != nil {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		})
	}
	for range n {
		jobs <- struct{}{}
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
	}
	close(jobs)
	wg.Wait()
	if first != nil {
		fmt.Printf("failed after %d connections: %v\n", len(conns), first)
	} else {
		fmt.Printf("open %d\n", len(conns))
		io.Copy(io.Discard, in)
	}
	for _, c := range conns {
		c.Close()
	}
}

// openIdle opens a connection as bench/idle does (HTTP/1.1 over TLS 1.3,
// one GET read to its end) and returns it open.
func openIdle(rawURL string) (net.Conn, error) {
	host := strings.TrimSuffix(strings.TrimPrefix(rawURL, "https://"), "/")
	timeout := scaledTimeout()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", host, &tls.Config{
		InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{"http/1.1"},
	})
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", host); err != nil {
		conn.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && (resp.StatusCode != http.StatusOK || resp.Close) {
		err = fmt.Errorf("status %d, close %v", resp.StatusCode, resp.Close)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return conn, nil
}

// idleClient is the client process seen from the benchmark.
type idleClient struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	stdout  *bufio.Reader
	backend string
}

func startIdleClient(b *testing.B, n int) *idleClient {
	return startIdleProcess(b, n, "TestIdleTLSConnClient")
}

// startIdleProcess starts the test binary again as the client process
// test (which calls idleClientMain) for n connections, with args added to
// its command line, and waits for its backend's address.
func startIdleProcess(b *testing.B, n int, test string, args ...string) *idleClient {
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^" + test + "$", "-test.count=1"}, args...)...)
	cmd.Env = append(os.Environ(), idleClientEnv+"="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &idleClient{cmd: cmd, stdin: stdin, stdout: bufio.NewReader(stdout)}
	b.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(scaledTimeout()):
			cmd.Process.Kill()
			<-done
		}
	})
	line, err := c.stdout.ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "backend ")
	if err != nil || !ok {
		b.Fatalf("client process: %q %v", line, err)
	}
	c.backend = addr
	return c
}

// open has the client open its connections to url and waits until they
// are.
func (c *idleClient) open(b *testing.B, url string) {
	if _, err := io.WriteString(c.stdin, url+"\n"); err != nil {
		b.Fatal(err)
	}
	line, err := c.stdout.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "open ") {
		b.Fatalf("client process: %q %v", line, err)
	}
}

// close has the client close its connections and exit.
func (c *idleClient) close(b *testing.B) {
	c.stdin.Close()
	if err := c.cmd.Wait(); err != nil {
		b.Errorf("client process: %v", err)
	}
}

// serveIdle serves a TLS bind (with HTTP/3 beside it, as bench/run
// compare configures portcullis) in front of backend, and returns the
// serving set and the TCP address.
func serveIdle(b *testing.B, backend string) (*serving, string) {
	addr := freeIdleAddr(b)
	g := compileIdle(b, addr, backend)
	sockets, err := listen.Acquire(g.Specs(), nil, true)
	if err != nil {
		b.Fatal(err)
	}
	s, err := serve(g, sockets, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.close)
	return s, addr
}

// freeIdleAddr returns a TCP address of 127.0.0.1 that was free a moment
// ago (its UDP port too, most likely).
func freeIdleAddr(b *testing.B) string {
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer probe.Close()
	return probe.Addr().String()
}

// compileIdle compiles the configuration bench/run compare gives
// portcullis: a TLS bind at addr with HTTP/3 on one shard, in front of
// backend.
func compileIdle(b *testing.B, addr, backend string) *compile.Graph {
	dir := b.TempDir()
	testutil.WriteCert(b, dir, "default.test")
	yaml := fmt.Sprintf(`frontends:
  tls:
    bind:
      - address: %s
        tls:
          certificates:
            - cert: default.test.pem
              key: default.test.key
        http3: true
        quic:
          shards: 1
          retry: never
    routes:
      - backend: bench
backends:
  bench:
    servers:
      - address: %s
`, addr, backend)
	path := filepath.Join(dir, "portcullis.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		b.Fatal(err)
	}
	g, err := Validate(Options{ConfigPath: path, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	return g
}

// raiseOpenFiles raises the open-files soft limit to the hard limit (the
// client process inherits it) and checks that n connections fit.
func raiseOpenFiles(b *testing.B, n int) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if uint64(n)+200 > lim.Cur {
		b.Skipf("-idleconns %d: the open-files hard limit is %d", n, lim.Max)
	}
}

func writeHeapProfile(b *testing.B, f *os.File) {
	if err := errors.Join(pprof.Lookup("heap").WriteTo(f, 0), f.Close()); err != nil {
		b.Fatal(err)
	}
}

// idleSnap is one reading of the process's memory.
type idleSnap struct {
	rss        int64 // VmRSS, bytes
	goroutines int
	ms         runtime.MemStats
	metrics    []metrics.Sample // idleMetrics
	slab       map[string]int64 // kernel slab caches, bytes (empty unless /proc/slabinfo is readable)
	sockMem    int64            // TCP socket buffers of the whole machine, bytes (/proc/net/sockstat)
}

// idleMetrics are the runtime metrics of a reading: every memory class
// (they add up to Sys) and the GC's state.
var idleMetrics = func() []string {
	var names []string
	for _, d := range metrics.All() {
		if strings.HasPrefix(d.Name, "/memory/classes/") || slices.Contains([]string{
			"/gc/heap/goal:bytes", "/gc/stack/starting-size:bytes", "/gc/cycles/total:gc-cycles",
			"/gc/heap/live:bytes", "/gc/heap/objects:objects", "/gc/scan/stack:bytes",
		}, d.Name) {
			names = append(names, d.Name)
		}
	}
	return names
}()

// slabCaches are the kernel objects of a TCP connection's socket.
var slabCaches = []string{"TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi", "eventpoll_pwq", "kmalloc-256", "kmalloc-512", "kmalloc-1k", "kmalloc-2k", "kmalloc-4k", "skbuff_head_cache"}

func readIdle() *idleSnap {
	s := &idleSnap{goroutines: runtime.NumGoroutine(), slab: map[string]int64{}}
	runtime.ReadMemStats(&s.ms)
	s.metrics = make([]metrics.Sample, len(idleMetrics))
	for i, name := range idleMetrics {
		s.metrics[i].Name = name
	}
	metrics.Read(s.metrics)
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for l := range strings.Lines(string(b)) {
			if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				s.rss = kb << 10
			}
		}
	}
	if b, err := os.ReadFile("/proc/slabinfo"); err == nil {
		for l := range strings.Lines(string(b)) {
			f := strings.Fields(l)
			// name active_objs num_objs objsize ...
			if len(f) > 3 && slices.Contains(slabCaches, f[0]) {
				objs, _ := strconv.ParseInt(f[1], 10, 64)
				size, _ := strconv.ParseInt(f[3], 10, 64)
				s.slab[f[0]] = objs * size
			}
		}
	}
	if b, err := os.ReadFile("/proc/net/sockstat"); err == nil {
		for l := range strings.Lines(string(b)) {
			if rest, ok := strings.CutPrefix(l, "TCP: "); ok {
				f := strings.Fields(rest)
				for i := 0; i+1 < len(f); i += 2 {
					if f[i] == "mem" {
						pages, _ := strconv.ParseInt(f[i+1], 10, 64)
						s.sockMem = pages * int64(os.Getpagesize())
					}
				}
			}
		}
	}
	return s
}

func (s *idleSnap) describe() string {
	return fmt.Sprintf("RSS %d KiB, Sys %d KiB, HeapInuse %d KiB, StackInuse %d KiB, %d goroutines",
		s.rss>>10, s.ms.Sys>>10, s.ms.HeapInuse>>10, s.ms.StackInuse>>10, s.goroutines)
}

// idleTable prints, for each quantity, its growth per connection from
// before to each later reading.
func idleTable(n int, before *idleSnap, names []string, later ...*idleSnap) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%-44s", "")
	for _, name := range names {
		fmt.Fprintf(&sb, " %10s", name)
	}
	sb.WriteString("\n")
	row := func(label string, f func(*idleSnap) float64) {
		fmt.Fprintf(&sb, "%-44s", label)
		for _, s := range later {
			fmt.Fprintf(&sb, " %10.0f", (f(s)-f(before))/float64(n))
		}
		sb.WriteString("\n")
	}
	row("VmRSS", func(s *idleSnap) float64 { return float64(s.rss) })
	row("MemStats.Sys", func(s *idleSnap) float64 { return float64(s.ms.Sys) })
	row("MemStats.HeapInuse", func(s *idleSnap) float64 { return float64(s.ms.HeapInuse) })
	row("MemStats.HeapAlloc", func(s *idleSnap) float64 { return float64(s.ms.HeapAlloc) })
	row("MemStats.HeapIdle-HeapReleased", func(s *idleSnap) float64 { return float64(s.ms.HeapIdle - s.ms.HeapReleased) })
	row("MemStats.StackInuse", func(s *idleSnap) float64 { return float64(s.ms.StackInuse) })
	row("MemStats.HeapObjects", func(s *idleSnap) float64 { return float64(s.ms.HeapObjects) })
	row("goroutines", func(s *idleSnap) float64 { return float64(s.goroutines) })
	for i, name := range idleMetrics {
		if strings.HasPrefix(name, "/gc/stack/") || strings.HasPrefix(name, "/gc/cycles/") {
			continue
		}
		row(name, func(s *idleSnap) float64 { return s.metric(i) })
	}
	if len(before.slab) > 0 {
		for _, name := range slabCaches {
			row("kernel slab "+name+" (both ends)", func(s *idleSnap) float64 { return float64(s.slab[name]) })
		}
	}
	row("kernel TCP socket buffers (both ends)", func(s *idleSnap) float64 { return float64(s.sockMem) })
	// Not per connection: the values themselves.
	for i, name := range idleMetrics {
		if !strings.HasPrefix(name, "/gc/stack/") && !strings.HasPrefix(name, "/gc/cycles/") {
			continue
		}
		fmt.Fprintf(&sb, "%-44s", name+" (value)")
		for _, s := range later {
			fmt.Fprintf(&sb, " %10.0f", s.metric(i))
		}
		fmt.Fprintf(&sb, " (before: %.0f)\n", before.metric(i))
	}
	return sb.String()
}

func (s *idleSnap) metric(i int) float64 {
	if v := s.metrics[i].Value; v.Kind() == metrics.KindUint64 {
		return float64(v.Uint64())
	}
	return 0
}
