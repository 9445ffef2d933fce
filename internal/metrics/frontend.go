package metrics

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Protocol is the protocol label of a frontend's connections and
// requests.
type Protocol uint8

// Protocols, in the order of protocolNames.
const (
	HTTP1 Protocol = iota
	HTTP2
	HTTP3
	TCP
	UDP
	numProtocols
)

var protocolNames = [numProtocols]string{"http1", "http2", "http3", "tcp", "udp"}

// String is the protocol's label value.
func (p Protocol) String() string { return protocolNames[p] }

// ProtocolOf is the protocol of an HTTP request of major version major
// (http.Request.ProtoMajor).
func ProtocolOf(major int) Protocol {
	switch major {
	case 2:
		return HTTP2
	case 3:
		return HTTP3
	}
	return HTTP1
}

// classNames are the code_class label values, by status / 100.
var classNames = [5]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// Frontend counts one frontend's connections, requests and bytes. Get it
// with Metrics.Frontend; a nil *Frontend counts nothing.
type Frontend struct {
	protos [numProtocols]frontendProto
}

type frontendProto struct {
	open     prometheus.Gauge
	seen     atomic.Bool // a connection was open in this process
	accepted prometheus.Counter
	requests [len(classNames)]prometheus.Counter
	duration *histogram
	in, out  prometheus.Counter
}

// Frontend returns the handle of frontend name: the one it already has,
// or a new one starting from what a binary upgrade handed over. Nil for a
// nil *Metrics.
func (m *Metrics) Frontend(name string) *Frontend {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if f := m.frontends[name]; f != nil {
		return f
	}
	f := &Frontend{}
	for p := range numProtocols {
		fp := &f.protos[p]
		l := prometheus.Labels{"frontend": name, "protocol": p.String()}
		fp.open = prometheus.NewGauge(prometheus.GaugeOpts{Name: FrontendConnectionsOpen, Help: "Client connections (HTTP/1.1, HTTP/2, HTTP/3, TCP) and UDP flows open now.", ConstLabels: l})
		fp.accepted = m.newCounter(FrontendConnectionsAccepted, "Client connections and UDP flows accepted (HTTP: counted at their first request).", l)
		fp.in = m.newCounter(Prefix+"frontend_received_bytes_total", "Bytes received from clients by layer-4 frontends (tcp, udp), counted when a connection or flow ends.", l)
		fp.out = m.newCounter(Prefix+"frontend_sent_bytes_total", "Bytes sent to clients by layer-4 frontends (tcp, udp), counted when a connection or flow ends.", l)
		if p > HTTP3 {
			continue
		}
		fp.duration = m.newHistogram(Prefix+"frontend_request_duration_seconds", "Time from a request's arrival to the end of its response.", l)
		for c, class := range classNames {
			cl := prometheus.Labels{"frontend": name, "protocol": p.String(), "code_class": class}
			fp.requests[c] = m.newCounter(FrontendRequests, "HTTP requests answered, by protocol and status class.", cl)
		}
	}
	m.frontends[name] = f
	return f
}

// Open counts a connection (or UDP flow) of protocol p accepted and open;
// Closed ends it.
func (f *Frontend) Open(p Protocol) {
	if f == nil {
		return
	}
	fp := &f.protos[p]
	fp.accepted.Inc()
	if !fp.seen.Load() {
		fp.seen.Store(true)
	}
	fp.open.Inc()
}

// Closed ends a connection counted by Open.
func (f *Frontend) Closed(p Protocol) {
	if f == nil {
		return
	}
	f.protos[p].open.Dec()
}

// Bytes adds the bytes a layer-4 connection or flow of protocol p
// received from its client (in) and sent to it (out).
func (f *Frontend) Bytes(p Protocol, in, out int64) {
	if f == nil {
		return
	}
	fp := &f.protos[p]
	if in > 0 {
		fp.in.Add(float64(in))
	}
	if out > 0 {
		fp.out.Add(float64(out))
	}
}

// Request counts an HTTP request of protocol p (HTTP1, HTTP2 or HTTP3)
// answered with status after d. A status outside 100-599 (the client got
// none) is not counted.
func (f *Frontend) Request(p Protocol, status int, d time.Duration) {
	if f == nil || p > HTTP3 || status < 100 || status > 599 {
		return
	}
	fp := &f.protos[p]
	fp.requests[status/100-1].Inc()
	fp.duration.Observe(seconds(d))
}

func (f *Frontend) collect(ch chan<- prometheus.Metric) {
	for p := range numProtocols {
		fp := &f.protos[p]
		if fp.seen.Load() {
			ch <- fp.open
		}
		collectNonzero(ch, fp.accepted)
		collectNonzero(ch, fp.in)
		collectNonzero(ch, fp.out)
		for _, c := range fp.requests {
			if c != nil {
				collectNonzero(ch, c)
			}
		}
		if fp.duration != nil {
			fp.duration.collectNonzero(ch)
		}
	}
}
