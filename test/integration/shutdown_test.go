package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

const (
	streamChunks   = 20
	streamInterval = 100 * time.Millisecond
)

// streamer is an upstream that answers with a server-sent event stream:
// one chunk every streamInterval, streamChunks in all.
type streamer struct {
	mu       sync.Mutex
	finished map[string]time.Time // request path → when the last chunk was written
}

func (s *streamer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	for i := 1; i <= streamChunks; i++ {
		if i > 1 {
			select {
			case <-time.After(streamInterval):
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, "data: chunk %d\n\n", i)
		if err := rc.Flush(); err != nil {
			return
		}
	}
	s.mu.Lock()
	s.finished[r.URL.Path] = time.Now()
	s.mu.Unlock()
}

func (s *streamer) finishedAt(path string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.finished[path]
	return at, ok
}

// streamResult is what a client read from a stream.
type streamResult struct {
	proto   string
	chunks  []string
	arrived []time.Time
	err     error // nil: the response ended cleanly
}

// readStream reads an event stream, announcing the first chunk on first.
func readStream(ctx context.Context, rt http.RoundTripper, url string, first chan<- struct{}) streamResult {
	var res streamResult
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		res.err = err
		return res
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		res.err = err
		return res
	}
	defer resp.Body.Close()
	res.proto = fmt.Sprintf("HTTP/%d", resp.ProtoMajor)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		res.err = fmt.Errorf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		return res
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); line != "" {
			res.chunks = append(res.chunks, line)
			res.arrived = append(res.arrived, time.Now())
			if len(res.chunks) == 1 {
				close(first)
			}
		}
	}
	res.err = sc.Err() // io.ErrUnexpectedEOF or a stream reset when cut short
	return res
}

// TestGracefulStop sends SIGTERM while slow streaming responses are in
// flight on HTTP/1.1, HTTP/2 and HTTP/3: portcullis must say STOPPING=1,
// stop accepting connections, let every response finish with every chunk,
// and then exit 0 within the grace period.
func TestGracefulStop(t *testing.T) {
	bin := defaultBinary(t)
	st := &streamer{finished: map[string]time.Time{}}
	up := startUpstream(t, "stream", st)
	up2 := startUpstream(t, "stream-2", st)
	s := newSite(t, siteOptions{User: true, App: [2]string{up.addr, up2.addr}, API: up.addr, Grace: "5s"})
	const grace = 5 * time.Second
	p := start(t, asRoot(bin, s.config), startOptions{})
	p.waitReady()

	toLoopback := func(ctx context.Context, network, addr string) (net.Conn, error) {
		_, port, _ := net.SplitHostPort(addr)
		return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
	}
	h1 := &http.Transport{DialContext: toLoopback}
	h2 := &http.Transport{DialContext: toLoopback, ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: s.pool}}
	h3 := &http3.Transport{
		TLSClientConfig: &tls.Config{RootCAs: s.pool},
		Dial: func(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
			return quic.DialAddrEarly(ctx, "127.0.0.1:443", tlsCfg, cfg)
		},
	}
	t.Cleanup(func() { h1.CloseIdleConnections(); h2.CloseIdleConnections(); h3.Close() })
	streams := []struct {
		proto, url string
		rt         http.RoundTripper
	}{
		{"HTTP/1", "http://localhost/events/h1", h1},
		{"HTTP/2", "https://localhost/events/h2", h2},
		{"HTTP/3", "https://localhost/events/h3", h3},
	}
	ctx, cancel := context.WithTimeout(context.Background(), scaled(20*time.Second))
	defer cancel()
	results := make([]streamResult, len(streams))
	firsts := make([]chan struct{}, len(streams))
	var wg sync.WaitGroup
	for i, st := range streams {
		firsts[i] = make(chan struct{})
		wg.Go(func() { results[i] = readStream(ctx, st.rt, st.url, firsts[i]) })
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	for i, first := range firsts {
		select {
		case <-first:
		case <-allDone:
			t.Fatalf("%s: the stream ended before its first chunk: %+v", streams[i].proto, results[i])
		case <-time.After(scaled(5 * time.Second)):
			t.Fatalf("%s: no first chunk within %v", streams[i].proto, scaled(5*time.Second))
		}
	}

	term := time.Now()
	p.signal(syscall.SIGTERM)
	p.waitNotify("STOPPING=1", scaled(2*time.Second))

	// New connections are refused while the responses still stream.
	refusedAt := map[string]time.Time{}
	deadline := time.Now().Add(scaled(time.Second))
	for _, addr := range []string{"127.0.0.1:80", "127.0.0.1:443"} {
		for {
			c, err := net.DialTimeout("tcp", addr, scaled(time.Second))
			if errors.Is(err, syscall.ECONNREFUSED) {
				refusedAt[addr] = time.Now()
				break
			}
			if c != nil {
				c.Close()
			}
			if time.Now().After(deadline) {
				t.Errorf("a new connection to %s is still accepted %v after SIGTERM (last: %v)", addr, time.Since(term), err)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// A new QUIC connection gets no HTTP/3 service either.
	if r, err := h3Try(s, "https://localhost/late", scaled(300*time.Millisecond)); err == nil {
		t.Errorf("a new HTTP/3 connection after SIGTERM was served: %v", r)
	}
	if p.exited() {
		t.Errorf("portcullis exited before the in-flight responses finished: %s", p.describe())
	}

	select {
	case <-allDone:
	case <-ctx.Done():
		t.Fatalf("the streams did not finish: %v", ctx.Err())
	}
	code := p.wait(scaled(grace + 5*time.Second))
	if code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	if took := p.exitedAt.Sub(term); took > grace {
		t.Errorf("exited %v after SIGTERM, later than the grace period %v", took, grace)
	}
	for i, r := range results {
		what := streams[i].proto
		if r.err != nil {
			t.Errorf("%s: the response was cut short after %d chunks: %v", what, len(r.chunks), r.err)
		}
		if !strings.HasPrefix(r.proto, what) {
			t.Errorf("%s: the response came over %s", what, r.proto)
		}
		if len(r.chunks) != streamChunks {
			t.Errorf("%s: got %d chunks, want %d: %q", what, len(r.chunks), streamChunks, r.chunks)
		}
		for j, c := range r.chunks {
			if want := fmt.Sprintf("data: chunk %d", j+1); c != want {
				t.Errorf("%s: chunk %d is %q, want %q", what, j+1, c, want)
				break
			}
		}
		if n := len(r.arrived); n == 0 || !r.arrived[n-1].After(term) {
			t.Errorf("%s: no chunk arrived after SIGTERM; the test proves nothing", what)
		}
		path := "/events/h" + what[len("HTTP/"):]
		finished, ok := st.finishedAt(path)
		if !ok {
			t.Errorf("%s: the upstream never finished %s", what, path)
			continue
		}
		// Streaming, not buffering: the first chunk arrived long before the
		// upstream wrote the last one.
		if len(r.arrived) > 0 && finished.Sub(r.arrived[0]) < streamInterval*streamChunks/2 {
			t.Errorf("%s: the first chunk arrived only %v before the upstream finished: the response was buffered", what, finished.Sub(r.arrived[0]))
		}
		for addr, at := range refusedAt {
			if at.After(finished) {
				t.Errorf("%s: %s was refused only after the response finished; the test proves nothing", what, addr)
			}
		}
		if p.exitedAt.Before(finished) {
			t.Errorf("%s: portcullis exited before the upstream finished the response", what)
		}
	}
	t.Logf("exited %v after SIGTERM", p.exitedAt.Sub(term).Round(time.Millisecond))
}
