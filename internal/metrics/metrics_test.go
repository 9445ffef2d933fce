package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// values gathers m: every portcullis series by seriesKey, counters and
// gauges by value, histograms by sample count (under name_count).
func values(t *testing.T, m *Metrics) map[string]float64 {
	t.Helper()
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), Prefix) {
			continue
		}
		for _, s := range mf.GetMetric() {
			k := seriesKey(mf.GetName(), labelsOf(s))
			switch {
			case s.Counter != nil:
				out[k] = s.Counter.GetValue()
			case s.Gauge != nil:
				out[k] = s.Gauge.GetValue()
			case s.Histogram != nil:
				out[seriesKey(mf.GetName()+"_count", labelsOf(s))] = float64(s.Histogram.GetSampleCount())
			}
		}
	}
	return out
}

func key(name string, kv ...string) string {
	l := prometheus.Labels{}
	for i := 0; i < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	return seriesKey(Prefix+name, l)
}

func TestFrontendCountsOnceCommitted(t *testing.T) {
	m := New(nil)
	f := m.Frontend("web")
	if m.Frontend("web") != f {
		t.Fatal("a second Frontend(web) is another handle: a kept frontend would restart from zero")
	}
	f.Open(HTTP1)
	f.Open(HTTP2)
	f.Closed(HTTP2)
	for range 3 {
		f.Request(HTTP1, 200, time.Millisecond)
	}
	f.Request(HTTP2, 404, time.Millisecond)
	f.Request(HTTP3, 503, time.Millisecond)
	f.Request(HTTP1, 0, time.Millisecond) // no response: not counted
	if v := values(t, m); v[key("frontend_requests_total", "frontend", "web", "protocol", "http1", "code_class", "2xx")] != 0 {
		t.Fatalf("a frontend not committed is exported: %v", v)
	}
	m.Commit([]string{"web"}, nil, nil)
	v := values(t, m)
	want := map[string]float64{
		key("frontend_requests_total", "frontend", "web", "protocol", "http1", "code_class", "2xx"): 3,
		key("frontend_requests_total", "frontend", "web", "protocol", "http2", "code_class", "4xx"): 1,
		key("frontend_requests_total", "frontend", "web", "protocol", "http3", "code_class", "5xx"): 1,
		key("frontend_connections_accepted_total", "frontend", "web", "protocol", "http1"):          1,
		key("frontend_connections_accepted_total", "frontend", "web", "protocol", "http2"):          1,
		key("frontend_connections_open", "frontend", "web", "protocol", "http1"):                    1,
		key("frontend_connections_open", "frontend", "web", "protocol", "http2"):                    0,
		key("frontend_request_duration_seconds_count", "frontend", "web", "protocol", "http1"):      3,
	}
	for k, w := range want {
		if got, ok := v[k]; !ok || got != w {
			t.Errorf("%s = %v (exported: %v), want %v", k, got, ok, w)
		}
	}
	if _, ok := v[key("frontend_requests_total", "frontend", "web", "protocol", "http1", "code_class", "5xx")]; ok {
		t.Error("a series that never counted is exported")
	}
	m.Commit(nil, nil, nil)
	if v := values(t, m); len(v) != len(values(t, New(nil))) {
		t.Errorf("a frontend no longer committed is still exported: %v", v)
	}
}

func TestServerAndBackend(t *testing.T) {
	m := New(nil)
	s := m.Server("app", "127.0.0.1:9001")
	s.SetLive(func() ServerLive { return ServerLive{InFlight: 2, State: "drain", ChecksOK: 5, ChecksFailed: 1} })
	s.Request(false)
	s.Request(true)
	s.Failure(Connect)
	s.Failure(Status5xx)
	s.Response(20 * time.Millisecond)
	b := m.Backend("app")
	b.Queued()
	b.Queued()
	b.Dequeued()
	b.QueueTimeout()
	m.Commit(nil, []string{"app"}, [][2]string{{"app", "127.0.0.1:9001"}})
	v := values(t, m)
	srv := []string{"backend", "app", "server", "127.0.0.1:9001"}
	want := map[string]float64{
		key("server_requests_total", srv...):                                  2,
		key("server_retries_total", srv...):                                   1,
		key("server_failures_total", append(srv, "cause", "connect")...):      1,
		key("server_failures_total", append(srv, "cause", "status_5xx")...):   1,
		key("server_response_duration_seconds_count", srv...):                 1,
		key("server_in_flight", srv...):                                       2,
		key("server_state", append(srv, "state", "drain")...):                 1,
		key("server_state", append(srv, "state", "up")...):                    0,
		key("server_health_checks_total", append(srv, "result", "ok")...):     5,
		key("server_health_checks_total", append(srv, "result", "failed")...): 1,
		key("backend_queue_length", "backend", "app"):                         1,
		key("backend_queue_timeouts_total", "backend", "app"):                 1,
	}
	for k, w := range want {
		if got, ok := v[k]; !ok || got != w {
			t.Errorf("%s = %v (exported: %v), want %v", k, got, ok, w)
		}
	}
}

// TestHandedToTheNextProcess: counters, histograms and the reload times
// go on from the old process's values; gauges of the live process do
// not.
func TestHandedToTheNextProcess(t *testing.T) {
	old := New(nil)
	f := old.Frontend("web")
	f.Open(TCP)
	f.Bytes(TCP, 100, 2000)
	f.Request(HTTP1, 200, 3*time.Millisecond)
	f.Request(HTTP1, 200, 3*time.Second)
	s := old.Server("app", "a:1")
	s.SetLive(func() ServerLive { return ServerLive{State: "up", ChecksOK: 7} })
	s.Request(false)
	old.Backend("app").Queued()
	old.Reloaded(true)
	old.Reloaded(false)
	q := old.QUIC("web", ":443", func() []QUICShard { return []QUICShard{{Handshakes: 4}} })
	defer q.Remove()
	old.Commit([]string{"web"}, []string{"app"}, [][2]string{{"app", "a:1"}})
	before := values(t, old)

	next := New(old.Snapshot())
	next.Frontend("web")
	next.Server("app", "a:1").SetLive(func() ServerLive { return ServerLive{State: "up", ChecksOK: 1} })
	next.Backend("app")
	next.QUIC("web", ":443", func() []QUICShard { return []QUICShard{{Handshakes: 1}} })
	next.Commit([]string{"web"}, []string{"app"}, [][2]string{{"app", "a:1"}})
	after := values(t, next)
	for k, want := range map[string]float64{
		key("frontend_connections_accepted_total", "frontend", "web", "protocol", "tcp"):            1,
		key("frontend_received_bytes_total", "frontend", "web", "protocol", "tcp"):                  100,
		key("frontend_sent_bytes_total", "frontend", "web", "protocol", "tcp"):                      2000,
		key("frontend_requests_total", "frontend", "web", "protocol", "http1", "code_class", "2xx"): 2,
		key("frontend_request_duration_seconds_count", "frontend", "web", "protocol", "http1"):      2,
		key("server_requests_total", "backend", "app", "server", "a:1"):                             1,
		key("server_health_checks_total", "backend", "app", "server", "a:1", "result", "ok"):        8,
		key("reloads_total", "result", "ok"):                                                        1,
		key("reloads_total", "result", "failed"):                                                    1,
		key("quic_handshakes_total", "frontend", "web", "address", ":443", "shard", "0"):            5,
		key("backend_queue_length", "backend", "app"):                                               0,
	} {
		if got := after[k]; got != want {
			t.Errorf("after the upgrade %s = %v, want %v (before: %v)", k, got, want, before[k])
		}
	}
	if _, ok := after[key("frontend_connections_open", "frontend", "web", "protocol", "tcp")]; ok {
		t.Error("open connections were handed over: they describe the old process")
	}
	k := key("reload_last_success_timestamp_seconds")
	if after[k] == 0 || after[k] != before[k] {
		t.Errorf("last reload time: %v after, %v before", after[k], before[k])
	}
	// The histogram's buckets add up too: both samples are there.
	mfs, _ := next.Gatherer().Gather()
	for _, mf := range mfs {
		if mf.GetName() == Prefix+"frontend_request_duration_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			if h.GetSampleSum() < 3 {
				t.Errorf("sum %v: the old samples are missing", h.GetSampleSum())
			}
			for _, b := range h.GetBucket() {
				if b.GetUpperBound() == 0.005 && b.GetCumulativeCount() != 1 {
					t.Errorf("bucket le=0.005 holds %d, want 1", b.GetCumulativeCount())
				}
			}
		}
	}
}

func TestNilHandlesCountNothing(t *testing.T) {
	var m *Metrics
	m.Frontend("x").Open(HTTP1)
	m.Frontend("x").Request(HTTP1, 200, 0)
	m.Server("a", "b").Request(true)
	m.Server("a", "b").Failure(Timeout)
	m.Backend("a").Queued()
	m.QUIC("a", "b", nil).Remove()
	m.Reloaded(true)
	m.Commit(nil, nil, nil)
	if m.Gatherer() != nil || m.Snapshot() != nil {
		t.Fatal("a nil *Metrics gathers something")
	}
}

// TestNoAllocationPerRequest: the calls on the request path allocate
// nothing.
func TestNoAllocationPerRequest(t *testing.T) {
	m := New(nil)
	f, s, b := m.Frontend("web"), m.Server("app", "a:1"), m.Backend("app")
	n := testing.AllocsPerRun(100, func() {
		f.Request(HTTP2, 204, time.Millisecond)
		s.Request(false)
		s.Response(time.Millisecond)
		s.Failure(Reset)
		b.Queued()
		b.Dequeued()
	})
	if n != 0 {
		t.Fatalf("%v allocations per request", n)
	}
}

func TestLint(t *testing.T) {
	m := New(nil)
	populate(m)
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, Prefix) {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}

// populate makes every portcullis series exist.
func populate(m *Metrics) {
	f := m.Frontend("web")
	for p := range numProtocols {
		f.Open(p)
		f.Bytes(p, 1, 1)
		f.Request(p, 200, time.Millisecond)
	}
	s := m.Server("app", "a:1")
	s.SetLive(func() ServerLive { return ServerLive{State: "up", ChecksOK: 1} })
	s.Request(true)
	s.Response(time.Millisecond)
	for c := range numCauses {
		s.Failure(c)
	}
	m.Backend("app").QueueTimeout()
	m.Reloaded(true)
	m.Reloaded(false)
	m.Upgraded(true)
	m.Upgraded(false)
	m.QUIC("web", ":443", func() []QUICShard { return []QUICShard{{1, 1, 1, 1, 1, 1}} })
	m.Commit([]string{"web"}, []string{"app"}, [][2]string{{"app", "a:1"}})
}

// TestTwoServersOfOneQUICBind: while a replaced HTTP/3 server drains
// beside its successor, their shards are added up, and /metrics still
// gathers.
func TestTwoServersOfOneQUICBind(t *testing.T) {
	m := New(nil)
	m.QUIC("web", ":443", func() []QUICShard { return []QUICShard{{Handshakes: 2}, {Retries: 1}} })
	m.QUIC("web", ":443", func() []QUICShard { return []QUICShard{{Handshakes: 3}} })
	v := values(t, m)
	if got := v[key("quic_handshakes_total", "frontend", "web", "address", ":443", "shard", "0")]; got != 5 {
		t.Errorf("handshakes of shard 0: %v, want 5", got)
	}
	if got := v[key("quic_retry_packets_sent_total", "frontend", "web", "address", ":443", "shard", "1")]; got != 1 {
		t.Errorf("Retry packets of shard 1: %v, want 1", got)
	}
}
