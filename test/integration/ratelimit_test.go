package integration

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// clientFrom is clientFor with the client's sockets bound to source
// address ip (a loopback address such as 127.0.0.2), so that portcullis
// sees another client.
func clientFrom(t *testing.T, s *site, proto, ip string) *http.Client {
	t.Helper()
	tlsConf := &tls.Config{RootCAs: s.pool, ServerName: "localhost"}
	var rt http.RoundTripper
	switch proto {
	case "HTTP/1.1", "HTTP/2":
		d := &net.Dialer{Timeout: scaled(5 * time.Second), LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		tr := &http.Transport{TLSClientConfig: tlsConf, DialContext: d.DialContext, Protocols: new(http.Protocols)}
		tr.Protocols.SetHTTP1(proto == "HTTP/1.1")
		tr.Protocols.SetHTTP2(proto == "HTTP/2")
		t.Cleanup(tr.CloseIdleConnections)
		rt = tr
	case "HTTP/3":
		conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
		if err != nil {
			t.Fatal(err)
		}
		qt := &quic.Transport{Conn: conn}
		tr := &http3.Transport{
			TLSClientConfig: tlsConf,
			Dial: func(ctx context.Context, _ string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
				return qt.DialEarly(ctx, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443}, tlsCfg, cfg)
			},
		}
		t.Cleanup(func() { tr.Close(); qt.Close() })
		rt = tr
	default:
		t.Fatalf("unknown protocol %q", proto)
	}
	return &http.Client{Transport: rt, Timeout: scaled(10 * time.Second)}
}

// countingBackend is an upstream that counts the requests it got by a
// key taken from each (a header's value).
type countingBackend struct {
	*upstream
	mu   sync.Mutex
	seen map[string]int
}

func startCountingBackend(t *testing.T, header string) *countingBackend {
	t.Helper()
	b := &countingBackend{seen: map[string]int{}}
	b.upstream = startUpstream(t, "app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.seen[r.Header.Get(header)]++
		b.mu.Unlock()
		fmt.Fprintln(w, "served")
	}))
	return b
}

func (b *countingBackend) count(key string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.seen[key]
}

// rateConfig is webFrontend with a per-client rate limit of 5 requests a
// second (burst 5) keyed by key, a JSON access log at logPath, and every
// request routed to server.
func rateConfig(key, logPath, server string) string {
	limits := fmt.Sprintf("    access_log: {format: json, to: %s}\n    rate_limits:\n      per_client:\n        key: %s\n        requests: 5\n        per: 1s\n        burst: 5\n", logPath, key)
	return strings.Replace(lbConfig("", lbServer{addr: server}), "  web:\n", "  web:\n"+limits, 1)
}

// overRate sends 20 requests at once-after-the-other with header X-Client
// value (none when empty) and checks that the first 5 (the burst) pass
// and the client is then refused with 429 and Retry-After: 1. It returns
// how many passed.
func overRate(t *testing.T, c *http.Client, proto, client string) int {
	t.Helper()
	start := time.Now()
	passed, refused := 0, 0
	for i := range 20 {
		req, _ := http.NewRequest("GET", fmt.Sprintf("https://127.0.0.1/r/%d", i), nil)
		if client != "" {
			req.Header.Set("X-Client", client)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: request %d: %v", proto, client, i, err)
		}
		var body [64]byte
		n, _ := resp.Body.Read(body[:])
		resp.Body.Close()
		if resp.ProtoMajor != int(proto[5]-'0') {
			t.Fatalf("%s: got HTTP/%d", proto, resp.ProtoMajor)
		}
		switch resp.StatusCode {
		case http.StatusOK:
			passed++
		case http.StatusTooManyRequests:
			refused++
			if ra := resp.Header.Get("Retry-After"); ra != "1" {
				t.Errorf("%s: 429 with Retry-After %q, want 1 (one request each 200ms)", proto, ra)
			}
			if !strings.Contains(string(body[:n]), "Too Many Requests") {
				t.Errorf("%s: 429 body %q", proto, body[:n])
			}
		default:
			t.Fatalf("%s: request %d: status %d", proto, i, resp.StatusCode)
		}
	}
	// 5 at once, then one more each 200ms the loop took.
	most := 5 + int(time.Since(start)/(200*time.Millisecond)) + 1
	if passed < 5 || passed > most || refused == 0 {
		t.Errorf("%s %s: %d passed, %d refused; want 5 to %d passed and the rest refused", proto, client, passed, refused, most)
	}
	return passed
}

// serves checks that 3 requests of another client all pass.
func serves(t *testing.T, c *http.Client, proto, client string) {
	t.Helper()
	for i := range 3 {
		req, _ := http.NewRequest("GET", "https://127.0.0.1/other", nil)
		if client != "" {
			req.Header.Set("X-Client", client)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s other client %s: %v", proto, client, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s other client %s: request %d got %d while the first was limited, want 200", proto, client, i, resp.StatusCode)
		}
	}
}

// TestRateLimitPerSource: over HTTP/1.1, HTTP/2 and HTTP/3, a client
// (each its own loopback address) gets its burst of 5, then 429 with
// Retry-After, while another address is served; no refused request
// reaches the backend, each is logged with state PL, and the process
// log names the limit.
func TestRateLimitPerSource(t *testing.T) {
	be := startCountingBackend(t, "X-Forwarded-For")
	dir := logDir(t)
	path := filepath.Join(dir, "access.log")
	s, p := startLB(t, rateConfig("source", path, be.addr))
	mark := len(p.stderr.String())
	for i, proto := range []string{"HTTP/1.1", "HTTP/2", "HTTP/3"} {
		ip, other := fmt.Sprintf("127.0.0.%d", 2+i), fmt.Sprintf("127.0.0.%d", 12+i)
		n := overRate(t, clientFrom(t, s, proto, ip), proto, "")
		serves(t, clientFrom(t, s, proto, other), proto, "")
		if got := be.count(ip); got != n {
			t.Errorf("%s: the backend saw %d requests from %s, %d passed: refused ones reached it", proto, got, ip, n)
		}
		if got := be.count(other); got != 3 {
			t.Errorf("%s: the backend saw %d requests from %s, want 3", proto, got, other)
		}
	}
	lines := parseJSONLines(t, waitLines(t, 60+9, path))
	limited := map[string]int{}
	for _, e := range lines {
		switch {
		case e.Status == http.StatusTooManyRequests && e.State == "PL" && e.Backend == "":
			limited[e.Protocol]++
		case e.Status == http.StatusOK && e.State == "--":
		default:
			t.Errorf("access log: %s %s status %d state %q backend %q", e.Protocol, e.ClientIP, e.Status, e.State, e.Backend)
		}
	}
	if len(lines) != 69 || limited["HTTP/1.1"] == 0 || limited["HTTP/2"] == 0 || limited["HTTP/3"] == 0 {
		t.Errorf("%d access-log lines (want 69), 429 with state PL by protocol: %v", len(lines), limited)
	}
	line := waitLogWith(t, p, mark, scaled(3*time.Second), "limit reached, request refused", "limit=rate_limits.per_client", "frontend=web")
	if !strings.Contains(line, "count=") {
		t.Errorf("summary line without a count: %s", line)
	}
}

// TestRateLimitByHeader: with key header:X-Client, two clients from the
// same address are told apart by the header's value.
func TestRateLimitByHeader(t *testing.T) {
	be := startCountingBackend(t, "X-Client")
	dir := logDir(t)
	s, _ := startLB(t, rateConfig("header:X-Client", filepath.Join(dir, "access.log"), be.addr))
	for _, proto := range []string{"HTTP/1.1", "HTTP/2", "HTTP/3"} {
		c := clientFor(t, s, proto, 1)
		a, b := "a-"+proto, "b-"+proto
		n := overRate(t, c, proto, a)
		serves(t, c, proto, b)
		if got := be.count(a); got != n {
			t.Errorf("%s: the backend saw %d requests of %s, %d passed", proto, got, a, n)
		}
		if got := be.count(b); got != 3 {
			t.Errorf("%s: the backend saw %d requests of %s, want 3", proto, got, b)
		}
	}
}
