package proxy

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/portcullis/portcullis/internal/metrics"
)

// requestsCounted returns portcullis_frontend_requests_total of frontend
// "web" by protocol and code class.
func requestsCounted(t *testing.T, m *metrics.Metrics) map[string]float64 {
	t.Helper()
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "portcullis_frontend_requests_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range s.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			out[l["protocol"]+" "+l["code_class"]] += s.GetCounter().GetValue()
		}
	}
	return out
}

func TestMeasuredCountsWhatTheClientGot(t *testing.T) {
	m := metrics.New(nil)
	m.Commit([]string{"web"}, nil, nil)
	h := Measured(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/404":
			Error(w, http.StatusNotFound)
		case "/body":
			w.Write([]byte("no WriteHeader: 200"))
		case "/early-hints":
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusBadGateway)
		case "/nothing":
			panic(http.ErrAbortHandler)
		}
	}), m.Frontend("web"))
	serve := func(path string, major int) {
		r := httptest.NewRequest("GET", path, nil)
		r.ProtoMajor = major
		defer func() { recover() }()
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
	serve("/404", 2)
	serve("/404", 2)
	serve("/body", 1)
	serve("/early-hints", 3)
	serve("/nothing", 1)
	got := requestsCounted(t, m)
	want := map[string]float64{"http2 4xx": 2, "http1 2xx": 1, "http3 5xx": 1}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("counted %v, want %v: a request that got no status is not counted, nor a 103", got, want)
	}
}

// TestMeasuredAllocatesNothing: counting a request costs no allocation.
func TestMeasuredAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop writers")
	}
	m := metrics.New(nil)
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	h := Measured(next, m.Frontend("web"))
	r := httptest.NewRequest("GET", "/", nil)
	w := httptest.NewRecorder()
	bare := testing.AllocsPerRun(200, func() { next.ServeHTTP(w, r) })
	measured := testing.AllocsPerRun(200, func() { h.ServeHTTP(w, r) })
	if measured > bare {
		t.Fatalf("%v allocations per request measured, %v without", measured, bare)
	}
	if Measured(next, nil) == nil {
		t.Fatal("Measured without metrics returned nil")
	}
}
