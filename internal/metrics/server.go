package metrics

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Cause is why a request or connection failed at a server (the cause
// label of portcullis_server_failures_total).
type Cause uint8

// Causes, in the order of causeNames.
const (
	// Connect: connecting to the server failed (refused, unreachable).
	Connect Cause = iota
	// Timeout: connecting, or waiting for the response headers, timed out.
	Timeout
	// Reset: the server closed or reset the connection before its
	// response headers.
	Reset
	// Status5xx: the server answered with a 5xx status.
	Status5xx
	// Other: the server answered something that is not HTTP, or failed
	// in another way.
	Other
	numCauses
)

var causeNames = [numCauses]string{"connect", "timeout", "reset", "status_5xx", "other"}

// String is the cause's label value.
func (c Cause) String() string { return causeNames[c] }

// Backend counts one backend's queue. Get it with Metrics.Backend; a nil
// *Backend counts nothing.
type Backend struct {
	queue    prometheus.Gauge
	timeouts prometheus.Counter
}

// Backend returns the handle of backend name (the one it already has, or
// a new one). Nil for a nil *Metrics.
func (m *Metrics) Backend(name string) *Backend {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if b := m.backends[name]; b != nil {
		return b
	}
	l := prometheus.Labels{"backend": name}
	b := &Backend{
		queue:    prometheus.NewGauge(prometheus.GaugeOpts{Name: BackendQueueLength, Help: "Requests and connections waiting in the backend's queue for a server below its max_conns.", ConstLabels: l}),
		timeouts: m.newCounter(BackendQueueTimeouts, "Requests and connections that left the queue because queue_timeout passed.", l),
	}
	m.backends[name] = b
	return b
}

// Queued counts a request entering the queue; Dequeued its leaving it.
func (b *Backend) Queued() {
	if b != nil {
		b.queue.Inc()
	}
}

// Dequeued counts a request leaving the queue (Queued).
func (b *Backend) Dequeued() {
	if b != nil {
		b.queue.Dec()
	}
}

// QueueTimeout counts a request that waited queue_timeout in vain.
func (b *Backend) QueueTimeout() {
	if b != nil {
		b.timeouts.Inc()
	}
}

func (b *Backend) collect(ch chan<- prometheus.Metric) {
	ch <- b.queue
	ch <- b.timeouts
}

// ServerLive is what a server's live state says when metrics are
// collected.
type ServerLive struct {
	// InFlight is the requests and connections at the server now.
	InFlight int64
	// State is up, down, drain or disabled.
	State string
	// ChecksOK and ChecksFailed count the active health checks that
	// passed and failed since the process started.
	ChecksOK, ChecksFailed uint64
}

// serverStates are the values of the state label.
var serverStates = [...]string{"up", "down", "drain", "disabled"}

// Server counts one server's requests, failures, retries and response
// times. Get it with Metrics.Server; a nil *Server counts nothing.
type Server struct {
	labels   prometheus.Labels
	requests prometheus.Counter
	retries  prometheus.Counter
	failures [numCauses]prometheus.Counter
	duration *histogram
	// live reads the server's live state; nil: none exported.
	live   atomic.Pointer[func() ServerLive]
	descs  serverDescs
	checks [2]float64 // handed check counts: ok, failed
}

type serverDescs struct{ inFlight, state, checks *prometheus.Desc }

// Server returns the handle of the server at address of backend (the
// one it already has, or a new one). Nil for a nil *Metrics.
func (m *Metrics) Server(backend, address string) *Server {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k := serverKey{backend, address}
	if s := m.servers[k]; s != nil {
		return s
	}
	l := prometheus.Labels{"backend": backend, "server": address}
	s := &Server{
		labels:   l,
		requests: m.newCounter(ServerRequests, "Requests (and layer-4 connections and UDP flows) sent to the server, retries included.", l),
		retries:  m.newCounter(Prefix+"server_retries_total", "Requests and connections sent to the server as a retry, after another server failed.", l),
		duration: m.newHistogram(ServerResponseDuration, "Time from sending a request to the server to its response headers.", l),
		descs: serverDescs{
			inFlight: prometheus.NewDesc(Prefix+"server_in_flight", "Requests and connections at the server now.", nil, l),
			state:    prometheus.NewDesc(Prefix+"server_state", "1 for the server's current state (up, down, drain, disabled), 0 for the others.", []string{"state"}, l),
			checks:   prometheus.NewDesc(Prefix+"server_health_checks_total", "Active health checks of the server, by result (ok, failed).", []string{"result"}, l),
		},
	}
	for c := range numCauses {
		cl := prometheus.Labels{"backend": backend, "server": address, "cause": c.String()}
		s.failures[c] = m.newCounter(ServerFailures, "Requests and connections that failed at the server, by cause.", cl)
	}
	for i, r := range []string{"ok", "failed"} {
		s.checks[i] = m.base.Values[seriesKey(Prefix+"server_health_checks_total", prometheus.Labels{"backend": backend, "server": address, "result": r})]
	}
	m.servers[k] = s
	return s
}

// SetLive sets what the server's in-flight count, state and health
// checks are read from when metrics are collected.
func (s *Server) SetLive(f func() ServerLive) {
	if s != nil {
		s.live.Store(&f)
	}
}

// Request counts a request or connection sent to the server; retry says
// it is a retry after another server failed.
func (s *Server) Request(retry bool) {
	if s == nil {
		return
	}
	s.requests.Inc()
	if retry {
		s.retries.Inc()
	}
}

// Failure counts a request or connection that failed at the server.
func (s *Server) Failure(c Cause) {
	if s != nil {
		s.failures[c].Inc()
	}
}

// Response records the time the server took to send its response
// headers.
func (s *Server) Response(d time.Duration) {
	if s != nil {
		s.duration.Observe(seconds(d))
	}
}

func (s *Server) collect(ch chan<- prometheus.Metric) {
	ch <- s.requests
	collectNonzero(ch, s.retries)
	for _, c := range s.failures {
		collectNonzero(ch, c)
	}
	s.duration.collectNonzero(ch)
	f := s.live.Load()
	if f == nil {
		return
	}
	l := (*f)()
	ch <- prometheus.MustNewConstMetric(s.descs.inFlight, prometheus.GaugeValue, float64(l.InFlight))
	for _, st := range serverStates {
		v := 0.0
		if st == l.State {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(s.descs.state, prometheus.GaugeValue, v, st)
	}
	ok, failed := s.checks[0]+float64(l.ChecksOK), s.checks[1]+float64(l.ChecksFailed)
	if ok+failed > 0 {
		ch <- prometheus.MustNewConstMetric(s.descs.checks, prometheus.CounterValue, ok, "ok")
		ch <- prometheus.MustNewConstMetric(s.descs.checks, prometheus.CounterValue, failed, "failed")
	}
}
