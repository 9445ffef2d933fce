package admin

import (
	"math"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/portcullis/portcullis/internal/metrics"
)

// families are gathered metrics by name.
type families map[string]*dto.MetricFamily

func gather(g prometheus.Gatherer) families {
	out := families{}
	if g == nil {
		return out
	}
	mfs, _ := g.Gather() // a partial result is still worth showing
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), metrics.Prefix) {
			out[mf.GetName()] = mf
		}
	}
	return out
}

// each calls f for every sample of family name whose labels include
// want.
func (fs families) each(name string, want map[string]string, f func(m *dto.Metric, labels map[string]string)) {
	mf := fs[name]
	if mf == nil {
		return
	}
next:
	for _, m := range mf.GetMetric() {
		labels := make(map[string]string, len(m.GetLabel()))
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		f(m, labels)
	}
}

// sum adds the values (counter or gauge) of the samples of name whose
// labels include want.
func (fs families) sum(name string, want map[string]string) float64 {
	var total float64
	fs.each(name, want, func(m *dto.Metric, _ map[string]string) { total += value(m) })
	return total
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

// readFrontends fills the frontends' connection and request counts.
func readFrontends(g prometheus.Gatherer, list []Frontend) {
	fs := gather(g)
	for i := range list {
		f := &list[i]
		f.Connections = map[string]ConnCount{}
		f.Requests = map[string]ReqCount{}
		sel := map[string]string{"frontend": f.Name}
		fs.each(metrics.FrontendConnectionsOpen, sel, func(m *dto.Metric, l map[string]string) {
			c := f.Connections[l["protocol"]]
			c.Open += value(m)
			f.Connections[l["protocol"]] = c
		})
		fs.each(metrics.FrontendConnectionsAccepted, sel, func(m *dto.Metric, l map[string]string) {
			c := f.Connections[l["protocol"]]
			c.Accepted += value(m)
			f.Connections[l["protocol"]] = c
		})
		fs.each(metrics.FrontendRequests, sel, func(m *dto.Metric, l map[string]string) {
			c := f.Requests[l["protocol"]]
			c.Total += value(m)
			if l["code_class"] == "5xx" {
				c.Errors += value(m)
			}
			f.Requests[l["protocol"]] = c
		})
	}
}

// readBackends fills the backends' queues and their servers' request
// counts and latencies.
func readBackends(g prometheus.Gatherer, list []Backend) {
	fs := gather(g)
	for i := range list {
		b := &list[i]
		sel := map[string]string{"backend": b.Name}
		b.Queue = fs.sum(metrics.BackendQueueLength, sel)
		b.QueueTimeouts = fs.sum(metrics.BackendQueueTimeouts, sel)
		for j := range b.Servers {
			s := &b.Servers[j]
			sel := map[string]string{"backend": b.Name, "server": s.Address}
			s.Requests = fs.sum(metrics.ServerRequests, sel)
			s.Failures = fs.sum(metrics.ServerFailures, sel)
			fs.each(metrics.ServerResponseDuration, sel, func(m *dto.Metric, _ map[string]string) {
				if h := m.GetHistogram(); h != nil {
					s.Latency = Latency{P50: quantile(0.5, h), P99: quantile(0.99, h)}
				}
			})
		}
	}
}

// quantile estimates the q-quantile of a histogram as Prometheus's
// histogram_quantile does: linear interpolation within the bucket that
// holds it (the lowest bucket starts at 0; a quantile in the +Inf bucket
// is the highest finite bound). 0 without a sample.
func quantile(q float64, h *dto.Histogram) float64 {
	total := float64(h.GetSampleCount())
	if total == 0 {
		return 0
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range h.GetBucket() {
		upper, count := b.GetUpperBound(), float64(b.GetCumulativeCount())
		if math.IsInf(upper, 1) {
			return lower
		}
		if count >= rank {
			if count == below {
				return upper
			}
			return lower + (upper-lower)*(rank-below)/(count-below)
		}
		lower, below = upper, count
	}
	return lower
}
