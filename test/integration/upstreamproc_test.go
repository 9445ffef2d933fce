package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// The upstream server process of test/upstream, built once per test
// binary.
var (
	upstreamOnce sync.Once
	upstreamBin  string
	upstreamErr  error
)

func upstreamBinary(t *testing.T) string {
	t.Helper()
	upstreamOnce.Do(func() {
		// Under the directory of the portcullis binaries, which TestMain
		// removes.
		dir, err := os.MkdirTemp(os.Getenv(binDirEnv), "upstream-")
		if err != nil {
			upstreamErr = err
			return
		}
		upstreamBin = filepath.Join(dir, "upstream")
		cmd := exec.Command("go", "build", "-o", upstreamBin, "./test/upstream")
		cmd.Dir = filepath.Join("..", "..")
		// Only the standard library: nothing to download inside the
		// network namespace.
		cmd.Env = append(os.Environ(), "GOPROXY=off", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			upstreamErr = fmt.Errorf("go build ./test/upstream: %v\n%s", err, out)
		}
	})
	if upstreamErr != nil {
		t.Fatal(upstreamErr)
	}
	return upstreamBin
}

// upProc is one running test/upstream process.
type upProc struct {
	t    *testing.T
	name string
	addr string
	args []string // flags besides -listen and -name
	cmd  *exec.Cmd
	out  syncBuffer // stderr
	done chan struct{}
}

// startUp starts an upstream named name on addr ("127.0.0.1:0" for any
// port) with extra flags, and waits until it listens. It is killed when the
// test ends.
func startUp(t *testing.T, name, addr string, args ...string) *upProc {
	t.Helper()
	u := &upProc{t: t, name: name, addr: addr, args: args}
	u.run()
	t.Cleanup(u.kill)
	return u
}

func (u *upProc) run() {
	u.t.Helper()
	argv := append([]string{"-listen", u.addr, "-name", u.name}, u.args...)
	u.cmd = exec.Command(upstreamBinary(u.t), argv...)
	u.out = syncBuffer{}
	u.cmd.Stderr = &u.out
	stdout, err := u.cmd.StdoutPipe()
	if err != nil {
		u.t.Fatal(err)
	}
	if err := u.cmd.Start(); err != nil {
		u.t.Fatal(err)
	}
	done := make(chan struct{})
	u.done = done
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "ready "); ok {
				select {
				case ready <- a:
				default:
				}
			}
		}
		u.cmd.Wait()
		close(done)
	}()
	select {
	case a := <-ready:
		u.addr = a
	case <-done:
		u.t.Fatalf("upstream %s exited before listening: %s", u.name, u.out.String())
	case <-time.After(scaled(10 * time.Second)):
		u.t.Fatalf("upstream %s did not listen within 10s", u.name)
	}
}

// kill kills the process with SIGKILL and waits for it.
func (u *upProc) kill() {
	if u.cmd == nil || u.cmd.Process == nil {
		return
	}
	select {
	case <-u.done:
		return
	default:
	}
	u.cmd.Process.Signal(syscall.SIGKILL)
	<-u.done
}

// restart starts the upstream again on the same address with the same
// flags.
func (u *upProc) restart() {
	u.t.Helper()
	u.kill()
	u.run()
}

// replace kills the upstream and starts another one on the same address,
// named name, with flags args.
func (u *upProc) replace(name string, args ...string) {
	u.t.Helper()
	u.kill()
	u.name, u.args = name, args
	u.run()
}

// getDirect asks the upstream itself (not through portcullis) for path.
func (u *upProc) getDirect(path string) string {
	u.t.Helper()
	c := &http.Client{Timeout: scaled(5 * time.Second)}
	resp, err := c.Get("http://" + u.addr + path)
	if err != nil {
		u.t.Fatalf("upstream %s %s: %v", u.name, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

// peak returns the upstream's peak number of concurrent requests.
func (u *upProc) peak() int {
	u.t.Helper()
	var peak, cur int
	s := u.getDirect("/concurrency")
	if _, err := fmt.Sscanf(s, "peak=%d current=%d", &peak, &cur); err != nil {
		u.t.Fatalf("upstream %s /concurrency: %q", u.name, s)
	}
	return peak
}

// current returns the number of requests the upstream is serving now.
func (u *upProc) current() int {
	u.t.Helper()
	var peak, cur int
	s := u.getDirect("/concurrency")
	if _, err := fmt.Sscanf(s, "peak=%d current=%d", &peak, &cur); err != nil {
		u.t.Fatalf("upstream %s /concurrency: %q", u.name, s)
	}
	return cur
}

// lbServer is one server of the test backend "pool": an address and extra
// keys in YAML flow style ("max_conns: 2").
type lbServer struct {
	addr  string
	extra string
}

// lbConfig is a configuration with HTTP on 127.0.0.1:80 and TLS with
// HTTP/3 on 127.0.0.1:443, every request routed to backend "pool" with
// these settings (YAML lines indented by four spaces) and servers. Started
// as root, it drops to nobody.
func lbConfig(settings string, servers ...lbServer) string {
	var b strings.Builder
	b.WriteString(webFrontend)
	b.WriteString(`      - backend: pool
backends:
  pool:
`)
	b.WriteString(settings)
	b.WriteString("    servers:\n")
	for _, s := range servers {
		if s.extra != "" {
			fmt.Fprintf(&b, "      - {address: %s, %s}\n", s.addr, s.extra)
		} else {
			fmt.Fprintf(&b, "      - {address: %s}\n", s.addr)
		}
	}
	return b.String()
}

// startLB writes config into a new site and starts portcullis as root on
// it; it returns once portcullis is ready.
func startLB(t *testing.T, config string) (*site, *proc) {
	t.Helper()
	bin := defaultBinary(t)
	s := newSite(t, siteOptions{User: true, App: [2]string{"127.0.0.1:1", "127.0.0.1:2"}, API: "127.0.0.1:3"})
	writeFile(t, s.config, config, 0o644)
	p := start(t, asRoot(bin, s.config), startOptions{})
	p.waitReady()
	return s, p
}

// reload writes config and sends SIGHUP; it waits for the log line that
// says whether it was applied ("reloaded") or refused, and returns it.
func reload(t *testing.T, s *site, p *proc, config string) string {
	t.Helper()
	mark := len(p.stderr.String())
	writeFile(t, s.config, config, 0o644)
	p.signal(syscall.SIGHUP)
	line := waitLog(t, p, mark, scaled(5*time.Second), func(l string) bool {
		return strings.Contains(l, `msg=reloaded`) || strings.Contains(l, `msg="reload refused`)
	})
	return line
}

// logLines returns portcullis's log lines from byte offset mark on.
func logLines(p *proc, mark int) []string {
	s := p.stderr.String()
	if mark > len(s) {
		mark = len(s)
	}
	return strings.Split(strings.TrimRight(s[mark:], "\n"), "\n")
}

// logsWith returns the log lines from mark on that contain every part.
func logsWith(p *proc, mark int, parts ...string) []string {
	var out []string
next:
	for _, l := range logLines(p, mark) {
		for _, part := range parts {
			if !strings.Contains(l, part) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// waitLog waits for a log line from mark on that match accepts.
func waitLog(t *testing.T, p *proc, mark int, timeout time.Duration, match func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, l := range logLines(p, mark) {
			if match(l) {
				return l
			}
		}
		if time.Now().After(deadline) || p.exited() {
			t.Fatalf("no such log line within %v (%s); log:\n%s", timeout, p.describe(), p.stderr.String()[min(mark, len(p.stderr.String())):])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitLogWith waits for a log line from mark on that contains every part.
func waitLogWith(t *testing.T, p *proc, mark int, timeout time.Duration, parts ...string) string {
	t.Helper()
	return waitLog(t, p, mark, timeout, func(l string) bool {
		for _, part := range parts {
			if !strings.Contains(l, part) {
				return false
			}
		}
		return true
	})
}

// waitLogCount waits until n log lines from mark on contain every part,
// and fails if there are more.
func waitLogCount(t *testing.T, p *proc, mark, n int, timeout time.Duration, parts ...string) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		lines := logsWith(p, mark, parts...)
		if len(lines) > n {
			t.Fatalf("%d log lines with %q, want %d:\n%s", len(lines), parts, n, strings.Join(lines, "\n"))
		}
		if len(lines) == n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d log lines with %q within %v, want %d:\n%s", len(lines), parts, timeout, n, strings.Join(lines, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logTime is the time= attribute of a log line.
func logTime(t *testing.T, line string) time.Time {
	t.Helper()
	v, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
	at, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		t.Fatalf("log line without a time: %q", line)
	}
	return at
}

// clientFor returns an HTTP client for portcullis's TLS bind over proto
// ("HTTP/1.1", "HTTP/2" or "HTTP/3"), with room for conc connections.
func clientFor(t *testing.T, s *site, proto string, conc int) *http.Client {
	t.Helper()
	tlsConf := &tls.Config{RootCAs: s.pool, ServerName: "localhost"}
	var rt http.RoundTripper
	switch proto {
	case "HTTP/1.1", "HTTP/2":
		tr := &http.Transport{TLSClientConfig: tlsConf, MaxIdleConnsPerHost: conc, Protocols: new(http.Protocols)}
		if proto == "HTTP/2" {
			tr.Protocols.SetHTTP2(true)
		} else {
			tr.Protocols.SetHTTP1(true)
		}
		t.Cleanup(tr.CloseIdleConnections)
		rt = tr
	case "HTTP/3":
		tr := &http3.Transport{
			TLSClientConfig: tlsConf,
			Dial: func(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
				return quic.DialAddrEarly(ctx, "127.0.0.1:443", tlsCfg, cfg)
			},
		}
		t.Cleanup(func() { tr.Close() })
		rt = tr
	default:
		t.Fatalf("unknown protocol %q", proto)
	}
	return &http.Client{Transport: rt, Timeout: scaled(10 * time.Second)}
}

// result is the outcome of one request through portcullis.
type result struct {
	path   string
	status int
	proto  int // major version the client got
	body   string
	header http.Header
	err    error
	start  time.Time
	took   time.Duration
}

// server is the upstream name at the start of the body, or "".
func (r result) server() string {
	name, _, _ := strings.Cut(r.body, " ")
	return name
}

func (r result) String() string {
	if r.err != nil {
		return fmt.Sprintf("GET %s: %v", r.path, r.err)
	}
	return fmt.Sprintf("GET %s: HTTP/%d %d %q after %v", r.path, r.proto, r.status, r.body, r.took.Round(time.Millisecond))
}

// get sends GET url (on 127.0.0.1:443 unless url names a scheme) and reads
// the whole response.
func get(c *http.Client, url string) result {
	if !strings.Contains(url, "://") {
		url = "https://127.0.0.1" + url
	}
	r := result{path: url, start: time.Now()}
	resp, err := c.Get(url)
	if err != nil {
		r.err, r.took = err, time.Since(r.start)
		return r
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	r.took = time.Since(r.start)
	r.status, r.proto, r.body, r.header, r.err = resp.StatusCode, resp.ProtoMajor, string(b), resp.Header, err
	return r
}

// load sends n requests, conc at a time; path(i) is the i-th request's
// path. after, when set, runs once (in the worker that got it) when the
// done-th response has arrived.
func load(c *http.Client, n, conc int, path func(i int) string, done int, after func()) []result {
	results := make([]result, n)
	var next, finished atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				results[i] = get(c, path(i))
				if int(finished.Add(1)) == done && after != nil {
					after()
				}
			}
		})
	}
	wg.Wait()
	return results
}

// loop runs conc goroutines sending GET path, with a pause of 2ms after
// each response, until stop is closed; the function it returns waits for
// them and returns every result.
func loop(c *http.Client, conc int, path string, stop <-chan struct{}) func() []result {
	var mu sync.Mutex
	var all []result
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := get(c, path)
				mu.Lock()
				all = append(all, r)
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	return func() []result {
		wg.Wait()
		return all
	}
}

// webFrontend is the start of a configuration that runs as nobody and
// serves frontend "web" on 127.0.0.1:80 and, over TLS with HTTP/3, on
// 127.0.0.1:443 (the site's certificate); its routes follow.
const webFrontend = `global:
  user: nobody
  group: nogroup
  grace: 2s
frontends:
  web:
    bind:
      - address: 127.0.0.1:80
      - address: 127.0.0.1:443
        tls:
          certificates:
            - cert: site.pem
              key: site.key
        http3: true
    routes:
`
