// Package metrics holds the Prometheus metrics of one portcullis process
// (docs/metrics.md): one registry per process, not the global default,
// with the process and Go collectors and typed handles that the packages
// where events happen count into (Frontend, Backend, Server, QUIC
// shards, reloads and upgrades).
//
// Handles are resolved once, by label values, when a frontend, backend or
// server is compiled or a unit starts, and kept on the live objects: the
// request path calls methods on them and never looks a label up. A handle
// asked for again by the same label values is the same one, so a
// frontend or server that a reload keeps goes on counting. A handle is
// exported only once its owner is committed (Commit), so that a
// rejected reload leaves no trace. Every method of a nil handle does
// nothing, so code that runs without metrics (validate, unit tests) needs
// no checks.
//
// Counters, histograms and the last reload and upgrade times are handed
// to the new process of a binary upgrade (Snapshot, New's argument): its
// handles start from the old process's values.
package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Prefix starts the name of every metric of portcullis.
const Prefix = "portcullis_"

// Names of the metrics that the admin API reads back (docs/admin.md,
// docs/metrics.md).
const (
	FrontendConnectionsOpen     = Prefix + "frontend_connections_open"
	FrontendConnectionsAccepted = Prefix + "frontend_connections_accepted_total"
	FrontendRequests            = Prefix + "frontend_requests_total"
	ServerRequests              = Prefix + "server_requests_total"
	ServerFailures              = Prefix + "server_failures_total"
	ServerResponseDuration      = Prefix + "server_response_duration_seconds"
	BackendQueueLength          = Prefix + "backend_queue_length"
	BackendQueueTimeouts        = Prefix + "backend_queue_timeouts_total"
)

// durationBuckets are the upper bounds, in seconds, of the request and
// response duration histograms: 1 ms to 30 s.
var durationBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// Metrics is the metrics of one process. Make it with New.
type Metrics struct {
	reg  *prometheus.Registry
	base handed

	mu        sync.Mutex
	frontends map[string]*Frontend
	backends  map[string]*Backend
	servers   map[serverKey]*Server
	quic      map[*QUIC]struct{}
	// exported are the names of the committed frontends, backends and
	// servers (Commit).
	exported exportSet
	life     *lifecycle
}

type serverKey struct{ backend, address string }

// exportSet is what Commit made visible.
type exportSet struct {
	frontends map[string]bool
	backends  map[string]bool
	servers   map[serverKey]bool
}

// New returns the metrics of a process, with the process and Go runtime
// collectors. handed is what the old process of a binary upgrade gave
// (Snapshot), nil for a process started afresh: counters, histograms and
// reload and upgrade times start from it.
func New(handed []byte) *Metrics {
	m := &Metrics{
		reg:       prometheus.NewRegistry(),
		base:      decodeHanded(handed),
		frontends: map[string]*Frontend{},
		backends:  map[string]*Backend{},
		servers:   map[serverKey]*Server{},
		quic:      map[*QUIC]struct{}{},
	}
	m.life = newLifecycle(m)
	m.reg.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
		(*collector)(m),
	)
	return m
}

// Gatherer is the registry, for /metrics (promhttp.HandlerFor); nil for
// a nil *Metrics.
func (m *Metrics) Gatherer() prometheus.Gatherer {
	if m == nil {
		return nil
	}
	return m.reg
}

// Commit makes the frontends, backends and servers named the exported
// set: their metrics appear at /metrics, the others' no longer do (their
// handles keep their values, should a later configuration bring them
// back). servers are backend and address pairs.
func (m *Metrics) Commit(frontends, backends []string, servers [][2]string) {
	if m == nil {
		return
	}
	e := exportSet{frontends: map[string]bool{}, backends: map[string]bool{}, servers: map[serverKey]bool{}}
	for _, f := range frontends {
		e.frontends[f] = true
	}
	for _, b := range backends {
		e.backends[b] = true
	}
	for _, s := range servers {
		e.servers[serverKey{s[0], s[1]}] = true
	}
	m.mu.Lock()
	m.exported = e
	m.mu.Unlock()
}

// collector exports the committed handles (an unchecked collector: the
// set of series changes with the configuration).
type collector Metrics

func (c *collector) Describe(chan<- *prometheus.Desc) {}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	m := (*Metrics)(c)
	m.mu.Lock()
	var fs []*Frontend
	for name, f := range m.frontends {
		if m.exported.frontends[name] {
			fs = append(fs, f)
		}
	}
	var bs []*Backend
	for name, b := range m.backends {
		if m.exported.backends[name] {
			bs = append(bs, b)
		}
	}
	var ss []*Server
	for k, s := range m.servers {
		if m.exported.servers[k] {
			ss = append(ss, s)
		}
	}
	qs := make([]*QUIC, 0, len(m.quic))
	for q := range m.quic {
		qs = append(qs, q)
	}
	m.mu.Unlock()
	for _, f := range fs {
		f.collect(ch)
	}
	for _, b := range bs {
		b.collect(ch)
	}
	for _, s := range ss {
		s.collect(ch)
	}
	collectQUIC(ch, qs, m.base)
	m.life.collect(ch)
}

// seconds is d in seconds, for histograms.
func seconds(d time.Duration) float64 { return d.Seconds() }
