package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/portcullis/portcullis/test/attack"
)

// The attacks of docs/security.md against the real binary, each with a
// legitimate client alongside that must never notice.

// attackBackends starts n attack.Backend servers in this process (in the
// test's network namespace) and returns them with their addresses.
func attackBackends(t *testing.T, n int) ([]*attack.Backend, []lbServer) {
	t.Helper()
	var bs []*attack.Backend
	var servers []lbServer
	for i := range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		b := &attack.Backend{Name: fmt.Sprintf("b%d", i)}
		go b.Serve(l)
		t.Cleanup(func() { b.Close() })
		bs = append(bs, b)
		servers = append(servers, lbServer{addr: l.Addr().String()})
	}
	return bs, servers
}

// withLimits adds a limits block (YAML flow mapping) to frontend "web" of
// an lbConfig.
func withLimits(config, limits string) string {
	return strings.Replace(config, "    routes:\n", "    limits: "+limits+"\n    routes:\n", 1)
}

// upstreamStats sums the backends' counters.
func upstreamStats(bs []*attack.Backend) attack.BackendStats {
	var s attack.BackendStats
	for _, b := range bs {
		st := b.Stats()
		s.Conns += st.Conns
		s.Open += st.Open
		s.Requests += st.Requests
	}
	return s
}

// rssKiB returns a process's resident memory (VmRSS) in KiB.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	t.Fatal("no VmRSS in /proc/PID/status")
	return 0
}

// legit runs a legitimate client until stop is closed: one request at a
// time over each of HTTP/1.1, HTTP/2 and HTTP/3, each of which must get
// 200 from a backend. It returns how many requests were made and the
// failures.
type legit struct {
	ok       atomic.Int64
	mu       sync.Mutex
	failures []string
	wg       sync.WaitGroup
	stop     chan struct{}
}

func startLegit(t *testing.T, s *site) *legit {
	t.Helper()
	l := &legit{stop: make(chan struct{})}
	for _, proto := range []string{"HTTP/1.1", "HTTP/2", "HTTP/3"} {
		c := clientFor(t, s, proto, 1)
		c.Timeout = scaled(10 * time.Second)
		l.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				r := get(c, fmt.Sprintf("/legit/%d", i))
				if r.err != nil || r.status != 200 || r.header.Get(attack.BackendHeader) == "" {
					l.mu.Lock()
					l.failures = append(l.failures, proto+" "+r.String())
					l.mu.Unlock()
				} else {
					l.ok.Add(1)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	return l
}

// end stops the client and fails t if any request failed or none was
// made.
func (l *legit) end(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	if len(l.failures) > 0 {
		t.Errorf("%d legitimate requests failed (%d succeeded), first ones:\n%s", len(l.failures), l.ok.Load(), strings.Join(l.failures[:min(len(l.failures), 10)], "\n"))
	}
	if l.ok.Load() < 3 {
		t.Errorf("only %d legitimate requests succeeded", l.ok.Load())
	}
	t.Logf("legitimate client: %d requests succeeded", l.ok.Load())
}

// 60 TLS connections × 250 streams that never open their flow-control
// window: each connection gets at most h2_max_streams (100) at once, the
// streams are reset at send_timeout, the upstream connections they
// could pin are bounded and their memory too, and a legitimate client
// alongside is never refused. (Before: 9,768 upstream connections and
// 837 MiB, and the backend marked down.)
func TestAttackZeroWindow(t *testing.T) {
	const sendTimeout = 3 * time.Second
	bs, servers := attackBackends(t, 2)
	s, p := startLB(t, withLimits(lbConfig("", servers...), "{send_timeout: 3s}"))
	mark := len(p.stderr.String())
	before := rssKiB(t, p.pid())
	l := startLegit(t, s)

	var peakRSS, peakOpen int
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			peakRSS = max(peakRSS, rssKiB(t, p.pid()))
			peakOpen = max(peakOpen, int(upstreamStats(bs).Open))
			select {
			case <-stopWatch:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), scaled(60*time.Second))
	defer cancel()
	res, err := attack.ZeroWindow(ctx, attack.ZeroWindowOptions{
		Target:  attack.Target{Addr: "127.0.0.1:443", TLS: true, Host: "localhost"},
		Conns:   60,
		Streams: 250,
		Hold:    sendTimeout + scaled(3*time.Second),
	})
	close(stopWatch)
	<-watched
	l.end(t)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v", res)
	st := upstreamStats(bs)
	t.Logf("upstream: %v, peak open %d; proxy RSS %d KiB before, peak %d KiB", st, peakOpen, before, peakRSS)

	if res.Conns != 60 {
		t.Fatalf("%d of 60 connections were set up: %v", res.Conns, res.FirstErr)
	}
	if !res.MaxConcurrentStreamsSet || res.MaxConcurrentStreams != 100 {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS = %d (set: %v), want 100", res.MaxConcurrentStreams, res.MaxConcurrentStreamsSet)
	}
	// net/http refuses the streams over h2_max_streams with PROTOCOL_ERROR
	// (RFC 9113 §5.1.2 allows it or REFUSED_STREAM), at once; every
	// other stream is reset at send_timeout, none is held.
	accepted, cut := 0, 0
	for _, e := range res.Streams {
		switch {
		case e.How == attack.StreamRefused, e.How == attack.StreamReset && e.Code == http2.ErrCodeProtocol:
		case e.How == attack.StreamReset:
			accepted++
			cut++
			if e.After < sendTimeout-time.Second || e.After > sendTimeout+scaled(3*time.Second) {
				t.Errorf("stream %d of connection %d reset after %v, want about send_timeout (%v)", e.ID, e.Conn, e.After, sendTimeout)
			}
		default:
			accepted++
		}
	}
	if accepted > 60*100 {
		t.Errorf("%d streams accepted, want at most 60 × 100", accepted)
	}
	if n := res.Count(attack.StreamHeld); n > 0 {
		t.Errorf("%d streams still held after send_timeout (%v) and more; %d cut", n, sendTimeout, cut)
	}
	// The small responses are all in the proxy: the streams hold no
	// upstream connection while they wait, and the connections are
	// bounded by the servers' max_conns (1024 each; a few more are
	// counted by a backend while the proxy closes them).
	if peakOpen > 2*1024+100 {
		t.Errorf("%d upstream connections open at once, want at most about the servers' max_conns (2 × 1024)", peakOpen)
	}
	if grown := peakRSS - before; grown > 400<<10 {
		t.Errorf("the proxy grew by %d MiB under the attack, want less than 400 MiB", grown>>10)
	}
	if down := logsWith(p, mark, `msg="server down"`); len(down) > 0 {
		t.Errorf("the attack took a server down:\n%s", strings.Join(down, "\n"))
	}
	waitLogWith(t, p, mark, scaled(3*time.Second), "limit=send_timeout")
}

// One HTTP/2 connection opening streams and cancelling each 1 ms later
// (rapid reset, CVE-2023-44487) at 2,000 a second, on a path the backend
// answers in 20 ms, so that every cancelled request was already on its
// way: the connection gets GOAWAY, the backend sees a bounded number of
// its requests over a handful of connections (cancelled requests keep
// their server connection), and a legitimate client alongside is never
// refused. (Before: no GOAWAY and about 5,000 new upstream connections a
// second.)
func TestAttackRapidReset(t *testing.T) {
	bs, servers := attackBackends(t, 2)
	s, p := startLB(t, lbConfig("", servers...))
	mark := len(p.stderr.String())
	l := startLegit(t, s)
	base := upstreamStats(bs)
	ctx, cancel := context.WithTimeout(context.Background(), scaled(30*time.Second))
	defer cancel()
	res, err := attack.RapidReset(ctx, attack.RapidResetOptions{
		Target:     attack.Target{Addr: "127.0.0.1:443", TLS: true, Host: "localhost", Path: "/slow?delay_ms=20"},
		Rate:       2000,
		Duration:   3 * time.Second,
		ResetAfter: time.Millisecond,
	})
	time.Sleep(scaled(1500 * time.Millisecond)) // cancelled exchanges end within 1s
	legitReqs := l.ok.Load()
	l.end(t)
	if err != nil {
		t.Fatal(err)
	}
	st := upstreamStats(bs)
	conns, reqs := st.Conns-base.Conns, st.Requests-base.Requests
	t.Logf("%v; upstream: %d new connections, %d requests (%d legitimate)", res, conns, reqs, legitReqs)
	if !res.GoAway {
		t.Errorf("the connection got no GOAWAY")
	}
	// The attacker's requests: at most proxy.MaxResets cancelled, and
	// those open (h2_max_streams) or queued (net/http queues 4 × that)
	// when the connection tripped.
	if extra := reqs - legitReqs; extra > 100+5*100 {
		t.Errorf("the backend got %d requests from the attack, want at most 600", extra)
	}
	if conns > 2*100+20 {
		t.Errorf("the backend accepted %d new connections, want a bounded few (cancelled requests keep theirs)", conns)
	}
	waitLogWith(t, p, mark, scaled(3*time.Second), "limit=cancelled_requests")
}

// A request line or a header line of 1 MiB gets 431 over HTTP/1.1, and
// reaches no backend. (Before: accepted and forwarded.)
func TestAttackBigHeader(t *testing.T) {
	bs, servers := attackBackends(t, 1)
	startLB(t, lbConfig("", servers...))
	ctx, cancel := context.WithTimeout(context.Background(), scaled(30*time.Second))
	defer cancel()
	for _, target := range []attack.Target{
		{Addr: "127.0.0.1:80"},
		{Addr: "127.0.0.1:443", TLS: true, Host: "localhost"},
	} {
		res, err := attack.BigHeader(ctx, attack.BigHeaderOptions{Target: target})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %v", target.Addr, res)
		for what, r := range map[string]attack.BigRequest{"header line": res.Header, "request line": res.RequestLine} {
			if r.Status != 431 {
				t.Errorf("%s, a 1 MiB %s: %v, want 431", target.Addr, what, r)
			}
		}
	}
	if st := upstreamStats(bs); st.Requests > 0 {
		t.Errorf("a request with a 1 MiB line reached the backend: %v", st)
	}
}
