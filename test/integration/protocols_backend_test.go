package integration

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestProtoBackendTLS checks TLS toward the servers: a certificate from
// an authority that is not trusted, or for another name, is refused with
// 502 and a log line that says why, without the request reaching the
// server; the test CA as tls ca is trusted; verify: false is accepted with
// a warning at startup. With protocol auto, HTTP/2 is used when the server
// offers it by ALPN, and HTTP/1.1 otherwise.
func TestProtoBackendTLS(t *testing.T) {
	h2 := newUpstream(t, "tls-h2", upstreamOptions{tls: true})
	h1 := newUpstream(t, "tls-h1", upstreamOptions{tls: true, h1Only: true})
	s, p := startProxy(t,
		[]proxyRoute{{"/untrusted/", "untrusted"}, {"/wrong-name/", "wrong-name"}, {"/trusted/", "trusted"}, {"/trusted-h1/", "trusted-h1"}, {"/no-verify/", "no-verify"}},
		backendYAML("untrusted", []string{"tls: {}"}, serverYAML(h2.addr)),
		backendYAML("wrong-name", []string{"tls: {ca: ca.pem, server_name: other.example.test}"}, serverYAML(h2.addr)),
		backendYAML("trusted", []string{"tls: {ca: ca.pem}"}, serverYAML(h2.addr)),
		backendYAML("trusted-h1", []string{"tls: {ca: ca.pem, server_name: api.example.test}"}, serverYAML(h1.addr)),
		backendYAML("no-verify", []string{"tls: {verify: false}"}, serverYAML(h2.addr)),
	)
	c := proxyClient(t, s, true)

	stderr := p.stderr.String()
	if !logHas(stderr, "level=WARN", "TLS to the servers is not verified", "backend=no-verify") {
		t.Errorf("no startup warning for backend no-verify (tls verify: false):\n%s", stderr)
	}
	for _, b := range []string{"untrusted", "wrong-name", "trusted", "trusted-h1"} {
		if logHas(stderr, "not verified", "backend="+b) {
			t.Errorf("backend %s verifies TLS but a warning says it does not:\n%s", b, stderr)
		}
	}

	for _, b := range []string{"untrusted", "wrong-name"} {
		before := h2.hits.Load()
		resp, body := fetchURL(t, c, http.MethodGet, "https://localhost/"+b+"/x", nil)
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("backend %s: status %d, want 502: %s", b, resp.StatusCode, body)
		}
		if n := h2.hits.Load() - before; n != 0 {
			t.Errorf("backend %s: the server got %d requests over unverified TLS, want none", b, n)
		}
		waitForLog(t, p, "level=WARN", `msg="request failed"`, "backend="+b, "status=502", `reason="server certificate not trusted"`)
	}

	for _, tc := range []struct {
		backend string
		up      *testUpstream
		major   int
		alpn    string
	}{
		{"trusted", h2, 2, "h2"},
		{"trusted-h1", h1, 1, "http/1.1"},
		{"no-verify", h2, 2, "h2"},
	} {
		if got := upstreamOf(t, c, "https://localhost/"+tc.backend+"/x", nil); got != tc.up.name {
			t.Errorf("backend %s: answered by %q, want %s", tc.backend, got, tc.up.name)
			continue
		}
		r := tc.up.last(t)
		if !r.tls || r.protoMajor != tc.major || r.alpn != tc.alpn {
			t.Errorf("backend %s: the server saw TLS %v, HTTP/%d, ALPN %q; want TLS, HTTP/%d, %q", tc.backend, r.tls, r.protoMajor, r.alpn, tc.major, tc.alpn)
		}
	}
	if r := h1.last(t); r.sni != "api.example.test" {
		t.Errorf("backend trusted-h1: the server saw SNI %q, want the server_name api.example.test", r.sni)
	}
}

// waitForLog waits up to 5s for a line of portcullis's log that contains
// every part (stderr is copied by another goroutine).
func waitForLog(t *testing.T, p *proc, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(scaled(5 * time.Second))
	for !logHas(p.stderr.String(), parts...) {
		if time.Now().After(deadline) {
			t.Errorf("no log line with %q:\n%s", parts, p.stderr.String())
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestProtoBackendProtocols checks the protocol toward plaintext servers
// that accept both HTTP/1.1 and HTTP/2 (h2c): the default (http1) uses
// HTTP/1.1 and protocol h2c uses HTTP/2, whatever the client speaks; and
// 100 sequential requests reuse pooled connections instead of opening one
// each.
func TestProtoBackendProtocols(t *testing.T) {
	const requests = 100
	h1 := newUpstream(t, "plain-1", upstreamOptions{h2c: true})
	h2c := newUpstream(t, "plain-2", upstreamOptions{h2c: true})
	s, _ := startProxy(t,
		[]proxyRoute{{"/h1/", "default"}, {"/h2c/", "h2c"}},
		backendYAML("default", nil, serverYAML(h1.addr)),
		backendYAML("h2c", []string{"protocol: h2c"}, serverYAML(h2c.addr)),
	)
	for _, tc := range []struct {
		path  string
		up    *testUpstream
		major int
	}{
		{"/h1/", h1, 1},
		{"/h2c/", h2c, 2},
	} {
		for _, cl := range []struct {
			name string
			c    *http.Client
			base string
		}{
			{"HTTP/1.1", proxyClient(t, s, false), "http://localhost"},
			{"HTTP/2", proxyClient(t, s, true), "https://localhost"},
		} {
			for i := range requests / 2 {
				if got := upstreamOf(t, cl.c, cl.base+tc.path+"n", nil); got != tc.up.name {
					t.Fatalf("%s request %d to %s: answered by %q, want %s", cl.name, i, tc.path, got, tc.up.name)
				}
			}
			for _, r := range tc.up.requests() {
				if r.protoMajor != tc.major || r.tls {
					t.Fatalf("client %s, backend %s: the server saw HTTP/%d (TLS %v), want HTTP/%d without TLS", cl.name, strings.Trim(tc.path, "/"), r.protoMajor, r.tls, tc.major)
				}
			}
		}
		if n, conns := tc.up.hits.Load(), tc.up.conns.Load(); n != requests || conns > 2 {
			t.Errorf("backend %s: %d requests over %d connections, want %d over at most 2 (keep-alive)", strings.Trim(tc.path, "/"), n, conns, requests)
		}
	}
}
