package admin

import (
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// process is a Control with one backend "app" of one server, which
// records the changes it is asked for.
type process struct{ changes []Change }

func (p *process) Status() Status        { return Status{Version: "test"} }
func (p *process) Frontends() []Frontend { return nil }
func (p *process) Backends() []Backend {
	return []Backend{{Name: "app", Servers: []Server{{Address: "127.0.0.1:1"}}}}
}
func (p *process) ClearServer(_, _ string) error { return nil }
func (p *process) Reload() error                 { return nil }
func (p *process) SetServer(b, s string, c Change) error {
	if b != "app" {
		return &NotFoundError{What: "backend", Name: b, Known: []string{"app"}}
	}
	p.changes = append(p.changes, c)
	return nil
}

// TestAccess: reads are open; changes need the socket or the token.
func TestAccess(t *testing.T) {
	const token = "0123456789abcdef"
	cases := []struct {
		name   string
		o      Options
		method string
		path   string
		auth   string
		code   int
	}{
		{"read on the listener", Options{}, "GET", "/api/backends", "", 200},
		{"change on the socket", Options{Full: true}, "POST", "/api/servers/app/127.0.0.1:1", "", 200},
		{"change without a token_file", Options{}, "POST", "/api/servers/app/127.0.0.1:1", "Bearer " + token, 403},
		{"change without the token", Options{Token: token}, "POST", "/api/servers/app/127.0.0.1:1", "", 401},
		{"change with a wrong token", Options{Token: token}, "POST", "/api/servers/app/127.0.0.1:1", "Bearer " + strings.ToUpper(token), 403},
		{"change with the token", Options{Token: token}, "POST", "/api/servers/app/127.0.0.1:1", "Bearer " + token, 200},
		{"reload without the token", Options{Token: token}, "POST", "/api/reload", "", 401},
		{"unknown backend", Options{Full: true}, "POST", "/api/servers/web/127.0.0.1:1", "", 404},
		{"unknown endpoint", Options{Full: true}, "GET", "/api/nope", "", 404},
		{"wrong method", Options{Full: true}, "GET", "/api/reload", "", 405},
	}
	for _, c := range cases {
		p := &process{}
		c.o.Control = p
		req := httptest.NewRequest(c.method, c.path, strings.NewReader(`{"state": "drain"}`))
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		w := httptest.NewRecorder()
		Handler(c.o).ServeHTTP(w, req)
		if w.Code != c.code {
			t.Errorf("%s: %s %s: %d %s, want %d", c.name, c.method, c.path, w.Code, w.Body, c.code)
		}
		if changed := len(p.changes) > 0; changed != (c.code == 200 && c.method == "POST" && strings.Contains(c.path, "servers")) {
			t.Errorf("%s: changes %v", c.name, p.changes)
		}
		if c.code == 401 && w.Header().Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", c.name)
		}
	}
}

// TestBadChange: a body that changes nothing, or is not the JSON of a
// change, is a 400 that says what to send.
func TestBadChange(t *testing.T) {
	for _, body := range []string{`{}`, `{"state": 1}`, `{"wieght": 2}`, `not json`} {
		w := httptest.NewRecorder()
		Handler(Options{Control: &process{}, Full: true}).ServeHTTP(w, httptest.NewRequest("POST", "/api/servers/app/127.0.0.1:1", strings.NewReader(body)))
		if w.Code != 400 || !strings.Contains(w.Body.String(), `weight`) {
			t.Errorf("body %s: %d %s, want 400 naming what to send", body, w.Code, w.Body)
		}
	}
}

// TestQuantile compares the estimate with Prometheus's
// histogram_quantile on known buckets.
func TestQuantile(t *testing.T) {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "x", Buckets: []float64{0.1, 0.2, 0.4}})
	for _, v := range []float64{0.05, 0.05, 0.15, 0.15, 0.15, 0.15, 0.3, 0.3, 0.3, 0.3} {
		h.Observe(v)
	}
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ q, want float64 }{
		{0.5, 0.175}, // rank 5: 3rd of 4 in (0.1, 0.2]
		{0.99, 0.395},
		{0.1, 0.05},
	} {
		if got := quantile(c.q, m.GetHistogram()); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if got := quantile(0.5, &dto.Histogram{}); got != 0 {
		t.Errorf("quantile of an empty histogram = %v, want 0", got)
	}
}

// FuzzAPI sends arbitrary requests to the API: every answer is JSON with
// a 2xx or 4xx status, never a panic or a 5xx.
func FuzzAPI(f *testing.F) {
	f.Add("POST", "/api/servers/app/127.0.0.1:1", `{"state": "drain"}`)
	f.Add("POST", "/api/servers/app/127.0.0.1:1", `{"weight": 5, "state": "active"}`)
	f.Add("DELETE", "/api/servers/app/127.0.0.1:1/override", ``)
	f.Add("GET", "/api/backends", ``)
	f.Add("POST", "/api/reload", `{}`)
	h := Handler(Options{Control: &process{}, Full: true})
	f.Fuzz(func(t *testing.T, method, path, body string) {
		req, err := http.NewRequest(method, "http://admin"+path, strings.NewReader(body))
		if err != nil || !strings.HasPrefix(req.URL.Path, "/api/") {
			return
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 || !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
			t.Errorf("%s %s %q: %d %s", method, path, body, w.Code, w.Body)
		}
	})
}
