package proxy

import (
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/hostname"
	"github.com/portcullis/portcullis/internal/upstream"
)

func testBackend(name string) *Backend {
	return newTestBackend(name, nil, testOptions{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// testOptions are the settings of a test backend that the tests vary:
// those of upstream.Options and of BackendOptions. A timeout left zero
// takes the configuration's default value (see backend), so that a test
// states only what it is about.
type testOptions struct {
	Upstream     Upstream
	Algorithm    balance.Algorithm
	HashKey      string
	StickyCookie string
	Retries      int
	QueueTimeout time.Duration
	// observe, when set, is every server's passive health observer.
	observe func(ok bool)
}

// backend builds the backend name over servers.
func (o testOptions) backend(name string, servers []*upstream.Server, log *slog.Logger) *Backend {
	// The configuration's defaults (config.Default*): queue_timeout,
	// retry_budget, timeouts connect, server and idle, max_conns.
	if o.QueueTimeout == 0 {
		o.QueueTimeout = 5 * time.Second
	}
	u := o.Upstream
	if u.ServerTimeout == 0 {
		u.ServerTimeout = 60 * time.Second
	}
	if u.IdleTimeout == 0 {
		u.IdleTimeout = 90 * time.Second
	}
	u.MaxIdlePerServer = 1024
	key, err := upstream.ParseHashKey(o.HashKey)
	if err != nil {
		panic(err)
	}
	up, err := upstream.NewBackend(name, servers, upstream.Options{
		Algorithm:      o.Algorithm,
		HashKey:        key,
		Sticky:         upstream.Sticky{Cookie: o.StickyCookie},
		Retries:        o.Retries,
		RetryBudget:    20,
		QueueTimeout:   o.QueueTimeout,
		ConnectTimeout: 5 * time.Second,
	})
	if err != nil {
		panic(err)
	}
	return NewBackend(up, BackendOptions{Upstream: u}, log)
}

// newTestBackend builds a backend of fresh servers at addrs.
func newTestBackend(name string, addrs []string, opt testOptions, log *slog.Logger) *Backend {
	servers := make([]*upstream.Server, len(addrs))
	for i, a := range addrs {
		servers[i] = upstream.NewServer(&balance.Member{State: balance.NewState(a), Weight: 1, ID: a}, 0, opt.observe)
	}
	return opt.backend(name, servers, log)
}

func TestRouterMatch(t *testing.T) {
	v1 := testBackend("v1")
	api := testBackend("api")
	wild := testBackend("wild")
	apex := testBackend("apex")
	static := testBackend("static")
	router := &Router{Routes: []Route{
		{Host: hostname.MustParsePattern("api.example.test"), PathPrefix: "/v1/", Backend: v1},
		{Host: hostname.MustParsePattern("api.example.test"), Backend: api},
		{Host: hostname.MustParsePattern("*.example.test"), Backend: wild},
		{Host: hostname.MustParsePattern("example.test"), Backend: apex},
		{PathPrefix: "/static/", Backend: static},
	}}
	tests := []struct {
		host, path string
		want       *Backend
	}{
		// First match wins: /v1/ on api goes to v1, not to the later api
		// or wildcard routes that also match.
		{"api.example.test", "/v1/users", v1},
		{"api.example.test", "/v2/users", api},
		{"api.example.test", "/v1", api}, // "/v1" does not start with "/v1/"
		{"api.example.test", "/", api},

		// Host forms a client may send.
		{"api.example.test:8443", "/v1/x", v1},
		{"API.Example.TEST", "/v1/x", v1},
		{"api.example.test.", "/v1/x", v1},
		{"API.EXAMPLE.TEST.:443", "/v1/x", v1},

		// *.suffix matches any depth below the suffix, never the bare name.
		{"www.example.test", "/", wild},
		{"a.b.c.example.test", "/", wild},
		{"WWW.Example.Test:80", "/", wild},
		{"example.test", "/", apex},
		{"example.test:80", "/", apex},
		{"badexample.test", "/", nil},
		{"example.test.evil", "/", nil},

		// A route without a host matches any host, including none.
		{"other.test", "/static/app.js", static},
		{"", "/static/app.js", static},
		{"127.0.0.1:8080", "/static/", static},
		{"[::1]:8080", "/static/", static},

		// No route matches.
		{"other.test", "/", nil},
		{"other.test", "/static", nil},
		{"", "/", nil},
	}
	for _, tt := range tests {
		got := router.Match(tt.host, tt.path)
		if got != tt.want {
			t.Errorf("Match(%q, %q) = %s, want %s", tt.host, tt.path, backendName(got), backendName(tt.want))
		}
	}
}

func backendName(b *Backend) string {
	if b == nil {
		return "no match"
	}
	return "backend " + b.up.Name()
}

func TestRouterEmpty(t *testing.T) {
	if b := (&Router{}).Match("example.test", "/"); b != nil {
		t.Errorf("an empty router matched %s", backendName(b))
	}
}

func TestHandlerNoRouteIs404(t *testing.T) {
	h := &Handler{Router: &Router{Routes: []Route{{Host: hostname.MustParsePattern("example.test"), Backend: testBackend("app")}}}}
	url := serve(t, h)
	req, _ := http.NewRequest("GET", url+"/anything", nil)
	req.Host = "other.test"
	resp := do(t, req)
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("status = %d, want 404", resp.StatusCode)
	}
	if body != "Not Found\n" {
		t.Errorf("body = %q, want %q", body, "Not Found\n")
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Errorf("Content-Type = %q, want text/plain; charset=utf-8", ct)
	}
	if v := resp.Header.Get("X-Content-Type-Options"); v != "nosniff" {
		t.Errorf("X-Content-Type-Options = %q, want nosniff", v)
	}
}

func BenchmarkRouterMatch(b *testing.B) {
	backend := testBackend("app")
	router := &Router{}
	for _, h := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		router.Routes = append(router.Routes, Route{Host: hostname.MustParsePattern(h + ".example.test"), Backend: backend})
	}
	router.Routes = append(router.Routes,
		Route{Host: hostname.MustParsePattern("*.example.test"), PathPrefix: "/v1/", Backend: backend},
		Route{Backend: backend})
	b.ReportAllocs()
	for _, bc := range []struct{ name, host string }{
		{"exact", "h.example.test"},
		{"wildcard-port", "api.example.test:8443"},
		{"uppercase", "API.Example.Test"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if router.Match(bc.host, "/v1/users/42") == nil {
					b.Fatal("no match")
				}
			}
		})
	}
}
