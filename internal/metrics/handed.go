package metrics

import (
	"encoding/json"
	"math"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// handed is what the old process of a binary upgrade counted, by series
// (seriesKey): the values of counters and timestamps, and histograms.
type handed struct {
	Values     map[string]float64   `json:"values,omitempty"`
	Histograms map[string]histValue `json:"histograms,omitempty"`
}

// histValue is a histogram's state: its count, sum and cumulative bucket
// counts, in the order of its upper bounds.
type histValue struct {
	Count   uint64    `json:"count"`
	Sum     float64   `json:"sum"`
	Bounds  []float64 `json:"bounds"`
	Buckets []uint64  `json:"buckets"`
}

func decodeHanded(data []byte) handed {
	var h handed
	if len(data) > 0 {
		// A successor that cannot read it starts from zero: Prometheus
		// sees a counter reset, nothing worse.
		_ = json.Unmarshal(data, &h)
	}
	return h
}

// seriesKey names one series: the metric's name and its labels, sorted.
func seriesKey(name string, labels prometheus.Labels) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(name)
	for _, k := range keys {
		b.WriteString("|" + k + "=" + labels[k])
	}
	return b.String()
}

// Snapshot returns what a binary upgrade hands to the new process (New's
// argument): the current values of every portcullis counter and
// histogram, and the last reload and upgrade times. Gauges that describe
// the live process (open connections, in flight, queue, states) are left
// out. Nil for a nil *Metrics.
func (m *Metrics) Snapshot() []byte {
	if m == nil {
		return nil
	}
	mfs, _ := m.reg.Gather() // a partial snapshot is still worth handing
	h := handed{Values: map[string]float64{}, Histograms: map[string]histValue{}}
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, Prefix) {
			continue
		}
		for _, s := range mf.GetMetric() {
			k := seriesKey(name, labelsOf(s))
			switch {
			case s.Counter != nil:
				h.Values[k] = s.Counter.GetValue()
			case s.Gauge != nil && strings.HasSuffix(name, "_timestamp_seconds"):
				h.Values[k] = s.Gauge.GetValue()
			case s.Histogram != nil:
				h.Histograms[k] = histOf(s.Histogram)
			}
		}
	}
	data, _ := json.Marshal(h)
	return data
}

func labelsOf(s *dto.Metric) prometheus.Labels {
	l := prometheus.Labels{}
	for _, p := range s.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

func histOf(d *dto.Histogram) histValue {
	v := histValue{Count: d.GetSampleCount(), Sum: d.GetSampleSum()}
	for _, b := range d.GetBucket() {
		if math.IsInf(b.GetUpperBound(), 1) {
			continue
		}
		v.Bounds = append(v.Bounds, b.GetUpperBound())
		v.Buckets = append(v.Buckets, b.GetCumulativeCount())
	}
	return v
}

// newCounter returns an unregistered counter of one series, starting
// from the value the old process handed over.
func (m *Metrics) newCounter(name, help string, labels prometheus.Labels) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels})
	if v := m.base.Values[seriesKey(name, labels)]; v > 0 {
		c.Add(v)
	}
	return c
}

// histogram is a histogram of one series that adds, when collected,
// what the old process handed over.
type histogram struct {
	prometheus.Histogram
	base *histValue
}

func (m *Metrics) newHistogram(name, help string, labels prometheus.Labels) *histogram {
	h := &histogram{Histogram: prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, ConstLabels: labels, Buckets: durationBuckets})}
	if v, ok := m.base.Histograms[seriesKey(name, labels)]; ok && v.Count > 0 && len(v.Bounds) == len(v.Buckets) {
		h.base = &v
	}
	return h
}

// collectNonzero sends h once it has a sample.
func (h *histogram) collectNonzero(ch chan<- prometheus.Metric) {
	var d dto.Metric
	if h.Write(&d) != nil || d.Histogram == nil {
		return
	}
	if h.base == nil {
		if d.Histogram.GetSampleCount() > 0 {
			ch <- h.Histogram
		}
		return
	}
	cur := histOf(d.Histogram)
	buckets := map[float64]uint64{}
	for i, b := range h.base.Bounds {
		buckets[b] += h.base.Buckets[i]
	}
	for i, b := range cur.Bounds {
		buckets[b] += cur.Buckets[i]
	}
	ch <- prometheus.MustNewConstHistogram(h.Desc(), cur.Count+h.base.Count, cur.Sum+h.base.Sum, buckets)
}

// collectNonzero sends c once it is above zero.
func collectNonzero(ch chan<- prometheus.Metric, c prometheus.Counter) {
	var d dto.Metric
	if c.Write(&d) == nil && d.GetCounter().GetValue() > 0 {
		ch <- c
	}
}

func gaugeValue(g prometheus.Gauge) float64 {
	var d dto.Metric
	if g.Write(&d) != nil {
		return 0
	}
	return d.GetGauge().GetValue()
}
