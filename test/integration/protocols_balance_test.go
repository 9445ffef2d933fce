package integration

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestProtoBalance checks the balancing algorithms through the real proxy,
// with small counts (the distributions themselves are unit-tested in
// internal/balance): hashing a header or a cookie pins each key to one
// server and spreads keys over several; a sticky cookie pins a client
// until its server goes away; least_conn sends most requests to the fast
// server; weights 3:1 split requests 75/25; a backup gets nothing while the
// primaries are up.
func TestProtoBalance(t *testing.T) {
	var u [4]*testUpstream
	var servers []string
	for i := range u {
		u[i] = newUpstream(t, fmt.Sprintf("u%d", i), upstreamOptions{})
		servers = append(servers, serverYAML(u[i].addr))
	}
	var sticky [3]*testUpstream
	for i := range sticky {
		sticky[i] = newUpstream(t, fmt.Sprintf("sticky-%d", i), upstreamOptions{})
	}
	slow := newUpstream(t, "slow", upstreamOptions{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(200 * time.Millisecond)
		w.Header().Set("X-Upstream", "slow")
	})})
	fast := newUpstream(t, "fast", upstreamOptions{})
	backup := newUpstream(t, "backup", upstreamOptions{})

	s, _ := startProxy(t,
		[]proxyRoute{{"/hash-header/", "hash-header"}, {"/hash-cookie/", "hash-cookie"}, {"/sticky/", "sticky"},
			{"/least-conn/", "least-conn"}, {"/weights/", "weights"}, {"/backup/", "with-backup"}},
		backendYAML("hash-header", []string{"balance: hash", "hash_key: header:X-User"}, servers...),
		backendYAML("hash-cookie", []string{"balance: hash", "hash_key: cookie:sid"}, servers...),
		backendYAML("sticky", []string{"sticky: {cookie: srv}"}, serverYAML(sticky[0].addr), serverYAML(sticky[1].addr), serverYAML(sticky[2].addr)),
		backendYAML("least-conn", []string{"balance: least_conn"}, serverYAML(slow.addr), serverYAML(fast.addr)),
		backendYAML("weights", nil, serverYAML(u[0].addr, "weight: 3"), serverYAML(u[1].addr, "weight: 1")),
		backendYAML("with-backup", nil, serverYAML(u[0].addr), serverYAML(backup.addr, "backup: true"), serverYAML(u[1].addr)),
	)
	// Keys must not depend on the connection or its protocol: requests
	// alternate between HTTP/1.1 on :80 and HTTP/2 on :443.
	clients := []struct {
		c    *http.Client
		base string
	}{{proxyClient(t, s, false), "http://localhost"}, {proxyClient(t, s, true), "https://localhost"}}
	get := func(i int, path string, header http.Header) string {
		t.Helper()
		cl := clients[i%2]
		return upstreamOf(t, cl.c, cl.base+path, header)
	}

	for _, tc := range []struct {
		name, path string
		key        func(v string) http.Header
	}{
		{"hash header", "/hash-header/", func(v string) http.Header { return http.Header{"X-User": {v}} }},
		{"hash cookie", "/hash-cookie/", func(v string) http.Header { return http.Header{"Cookie": {"theme=dark; sid=" + v}} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := get(0, tc.path, tc.key("alice"))
			for i := 1; i < 50; i++ {
				if got := get(i, tc.path, tc.key("alice")); got != first {
					t.Fatalf("request %d with key alice went to %s, the first to %s", i, got, first)
				}
			}
			used := map[string]int{}
			for k := range 20 {
				key := fmt.Sprintf("user-%d", k)
				a, b := get(0, tc.path, tc.key(key)), get(1, tc.path, tc.key(key))
				if a != b {
					t.Errorf("key %s went to %s, then to %s", key, a, b)
				}
				used[a]++
			}
			if len(used) < 3 {
				t.Errorf("20 keys went to %v, want at least 3 of the 4 servers", used)
			}
			// Without the key, the client address is hashed.
			none := get(0, tc.path, nil)
			for i := 1; i < 10; i++ {
				if got := get(i, tc.path, nil); got != none {
					t.Fatalf("requests without the key went to %s and %s, want one server (hash of the client address)", none, got)
				}
			}
		})
	}

	t.Run("sticky cookie", func(t *testing.T) {
		c := clients[0].c
		cookies := map[string]string{} // upstream → its cookie value
		for range 6 {
			resp, _ := fetchURL(t, c, http.MethodGet, "http://localhost/sticky/", nil)
			name := resp.Header.Get("X-Upstream")
			ck := stickyCookie(resp)
			if ck == nil || !ck.HttpOnly || ck.Path != "/" || ck.Value == "" {
				t.Fatalf("response from %s without the cookie: want Set-Cookie srv=...; Path=/; HttpOnly, got %q", name, resp.Header.Values("Set-Cookie"))
			}
			if prev, ok := cookies[name]; ok && prev != ck.Value {
				t.Errorf("server %s got cookie values %q and %q", name, prev, ck.Value)
			}
			cookies[name] = ck.Value
		}
		if len(cookies) != 3 {
			t.Fatalf("round robin without the cookie reached %v, want all 3 servers", cookies)
		}
		pinned := "sticky-0"
		withCookie := http.Header{"Cookie": {"srv=" + cookies[pinned]}}
		for i := range 20 {
			resp, _ := fetchURL(t, c, http.MethodGet, "http://localhost/sticky/", withCookie)
			if got := resp.Header.Get("X-Upstream"); got != pinned || stickyCookie(resp) != nil {
				t.Fatalf("request %d with cookie srv for %s: answered by %s, Set-Cookie %q; want %s and no new cookie", i, pinned, got, resp.Header.Values("Set-Cookie"), pinned)
			}
		}

		sticky[0].stop()
		resp, body := fetchURL(t, c, http.MethodGet, "http://localhost/sticky/", withCookie)
		moved := resp.Header.Get("X-Upstream")
		ck := stickyCookie(resp)
		if resp.StatusCode != http.StatusOK || moved == pinned || moved == "" || ck == nil || ck.Value != cookies[moved] {
			t.Fatalf("with %s stopped, a request with its cookie: status %d from %q, Set-Cookie %q; want 200 from another server with that server's cookie (%v): %s",
				pinned, resp.StatusCode, moved, resp.Header.Values("Set-Cookie"), cookies, body)
		}
		for i := range 10 {
			resp, _ := fetchURL(t, c, http.MethodGet, "http://localhost/sticky/", http.Header{"Cookie": {"srv=" + ck.Value}})
			if got := resp.Header.Get("X-Upstream"); got != moved {
				t.Fatalf("request %d with the new cookie: answered by %s, want %s", i, got, moved)
			}
		}
	})

	t.Run("least_conn", func(t *testing.T) {
		const workers, each = 10, 10
		c := clients[1].c // HTTP/2: the requests share one connection
		var mu sync.Mutex
		got := map[string]int{}
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for range each {
					resp, err := c.Get("https://localhost/least-conn/")
					if err != nil {
						t.Error(err)
						return
					}
					resp.Body.Close()
					mu.Lock()
					got[resp.Header.Get("X-Upstream")]++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if got["fast"]+got["slow"] != workers*each || got["fast"] < workers*each*70/100 {
			t.Errorf("%d concurrent clients, %d requests each: %v; want most (≥ 70%%) at the fast server (round robin: 50%%)", workers, each, got)
		}
	})

	t.Run("weights", func(t *testing.T) {
		const n = 400
		got := map[string]int{}
		for i := range n {
			got[get(i, "/weights/", nil)]++
		}
		if got["u0"]+got["u1"] != n || got["u0"] < n*70/100 || got["u0"] > n*80/100 {
			t.Errorf("weights 3:1 over %d requests: %v, want u0 within 75%% ± 5%%", n, got)
		}
	})

	t.Run("backup", func(t *testing.T) {
		got := map[string]int{}
		for i := range 30 {
			got[get(i, "/backup/", nil)]++
		}
		if got["backup"] != 0 || got["u0"] == 0 || got["u1"] == 0 || backup.hits.Load() != 0 {
			t.Errorf("primaries up: %v (the backup server saw %d), want both primaries and never the backup", got, backup.hits.Load())
		}
	})
}

// stickyCookie returns the srv cookie a response sets, or nil.
func stickyCookie(resp *http.Response) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == "srv" {
			return c
		}
	}
	return nil
}
