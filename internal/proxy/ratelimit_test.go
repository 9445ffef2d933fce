package proxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/ratelimit"
)

// rateTest sends n requests from addr with header X-Client value (none
// when empty) and returns the statuses and the last Retry-After.
func rateTest(h http.Handler, n int, addr, client string) (statuses map[int]int, retryAfter string) {
	statuses = map[int]int{}
	for range n {
		r := httptest.NewRequest("GET", "http://app.test/", nil)
		r.RemoteAddr = addr
		if client != "" {
			r.Header.Set("X-Client", client)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		statuses[w.Code]++
		if w.Code == http.StatusTooManyRequests {
			retryAfter = w.Header().Get("Retry-After")
		}
	}
	return statuses, retryAfter
}

func TestRateLimitedBySource(t *testing.T) {
	reached := 0
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached++ })
	addrs := make([]string, 4096)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("10.0.%d.%d:51000", i>>8, i&255)
	}
	rl := RateLimit{Limiter: ratelimit.New(ratelimit.Config{Requests: 3, Per: 10 * time.Second}), Key: ratelimit.Key{Kind: ratelimit.KeySource}}
	h := RateLimited(next, rl, nil, "web")
	got, retry := rateTest(h, 10, "192.0.2.1:1234", "")
	if got[200] != 3 || got[429] != 7 || reached != 3 {
		t.Fatalf("statuses %v, backend reached %d times; want 3 × 200, 7 × 429, 3", got, reached)
	}
	if retry != "4" { // 10s/3 = 3.33s, rounded up
		t.Errorf("Retry-After %q, want 4", retry)
	}
	// Another port of the same address is the same client; another
	// address (IPv6 here) is another.
	if got, _ := rateTest(h, 1, "192.0.2.1:999", ""); got[429] != 1 {
		t.Errorf("same address, other port: %v, want 429", got)
	}
	if got, _ := rateTest(h, 3, "[2001:db8::1]:80", ""); got[200] != 3 {
		t.Errorf("other client: %v, want 3 × 200", got)
	}
}

func TestRateLimitedByHeader(t *testing.T) {
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	addrs := make([]string, 4096)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("10.0.%d.%d:51000", i>>8, i&255)
	}
	rl := RateLimit{Limiter: ratelimit.New(ratelimit.Config{Requests: 2, Per: time.Minute}), Key: ratelimit.Key{Kind: ratelimit.KeyHeader, Name: "X-Client"}}
	h := RateLimited(next, rl, nil, "web")
	if got, _ := rateTest(h, 5, "192.0.2.1:1", "a"); got[200] != 2 {
		t.Errorf("client a: %v, want 2 × 200", got)
	}
	// Same address, other header value: another client.
	if got, _ := rateTest(h, 5, "192.0.2.1:1", "b"); got[200] != 2 {
		t.Errorf("client b: %v, want 2 × 200", got)
	}
	// Without the header: keyed by source, which no header value can
	// take.
	if got, _ := rateTest(h, 2, "192.0.2.1:1", "192.0.2.1"); got[200] != 2 {
		t.Errorf("header valued as the source: %v", got)
	}
	if got, _ := rateTest(h, 5, "192.0.2.1:1", ""); got[200] != 2 {
		t.Errorf("no header: %v, want 2 × 200", got)
	}
}

// A frontend without rate limits gets its handler back untouched.
func TestRateLimitedOff(t *testing.T) {
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	if h := RateLimited(next, RateLimit{}, nil, "web"); h == nil || func() bool { _, ok := h.(*rateLimited); return ok }() {
		t.Fatal("no limiter: wrapped anyway")
	}
}

// BenchmarkRateLimited is BenchmarkProxyGET with and without a
// per-client rate limit that lets every request pass (4096 clients in
// turn): what the limit costs a request. The limiter alone, on every
// core, is ratelimit's BenchmarkAllow.
func BenchmarkRateLimited(b *testing.B) {
	addrs := make([]string, 4096)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("10.0.%d.%d:51000", i>>8, i&255)
	}
	rl := RateLimit{Limiter: ratelimit.New(ratelimit.Config{Requests: 1000000, Per: time.Millisecond, MaxClients: 1 << 16}), Key: ratelimit.Key{Kind: ratelimit.KeySource}}
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			var h http.Handler = benchHandler(b, []byte("ok"))
			if on {
				h = RateLimited(h, rl, nil, "web")
			}
			req, err := http.NewRequest("GET", "http://app.example.test/v1/users/42", nil)
			if err != nil {
				b.Fatal(err)
			}
			w := &discardWriter{h: http.Header{}}
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				req.RemoteAddr = addrs[i&4095]
				i++
				clear(w.h)
				w.status, w.n = 0, 0
				h.ServeHTTP(w, req)
				if w.status != http.StatusOK {
					b.Fatalf("status %d", w.status)
				}
			}
		})
	}
}
