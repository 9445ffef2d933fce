package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// QUICShard is what one QUIC shard counted since its server started.
type QUICShard struct {
	// PacketsIn is the packets the shard's socket received.
	PacketsIn uint64
	// PacketsOut is the packets the shard's socket sent.
	PacketsOut uint64
	// Forwarded is the datagrams the shard passed to the other process
	// of a binary upgrade, whose connections they belong to (without
	// steering, where the kernel cannot send them there).
	Forwarded uint64
	// Misrouted is the connections that arrived on another shard than the
	// one their first Initial is steered to.
	Misrouted uint64
	// Retries is the Retry packets the shard sent.
	Retries uint64
	// Handshakes is the connections whose handshake the shard started.
	Handshakes uint64
}

// QUIC exports the shard counters of one HTTP/3 bind, read when metrics
// are collected. Make it with Metrics.QUIC; Remove ends it.
type QUIC struct {
	m      *Metrics
	labels [2]string // frontend, address
	read   func() []QUICShard
	descs  [nQUIC]*prometheus.Desc
}

// nQUIC is the number of counters of a shard.
const nQUIC = 6

var quicNames = [nQUIC][2]string{
	{"quic_packets_received_total", "QUIC packets the shard's socket received."},
	{"quic_packets_sent_total", "QUIC packets the shard's socket sent (each GSO segment counts)."},
	{"quic_packets_forwarded_total", "QUIC datagrams the shard passed to the other process of a binary upgrade (without steering)."},
	{"quic_misrouted_connections_total", "QUIC connections that reached another shard than the one their first Initial is steered to."},
	{"quic_retry_packets_sent_total", "QUIC Retry packets the shard sent."},
	{"quic_handshakes_total", "QUIC handshakes the shard started."},
}

// QUIC starts exporting the shards of the HTTP/3 bind at address of
// frontend, read by read when metrics are collected. Nil for a nil
// *Metrics.
func (m *Metrics) QUIC(frontend, address string, read func() []QUICShard) *QUIC {
	if m == nil {
		return nil
	}
	q := &QUIC{m: m, labels: [2]string{frontend, address}, read: read}
	for i, n := range quicNames {
		q.descs[i] = prometheus.NewDesc(Prefix+n[0], n[1], []string{"shard"}, prometheus.Labels{"frontend": frontend, "address": address})
	}
	m.mu.Lock()
	m.quic[q] = struct{}{}
	m.mu.Unlock()
	return q
}

// Remove stops exporting the bind's shards (its server stopped).
func (q *QUIC) Remove() {
	if q == nil {
		return
	}
	q.m.mu.Lock()
	delete(q.m.quic, q)
	q.m.mu.Unlock()
}

// collectQUIC sends the shard counters of every bind, plus what the old
// process handed over. Two servers of one bind (a replaced one that
// drains while its successor serves) are added up: a series is sent once.
func collectQUIC(ch chan<- prometheus.Metric, qs []*QUIC, base handed) {
	byBind := map[[2]string][]uint64{} // per bind: nQUIC counts per shard
	first := map[[2]string]*QUIC{}
	for _, q := range qs {
		sum := byBind[q.labels]
		for i, s := range q.read() {
			if len(sum) < nQUIC*(i+1) {
				sum = append(sum, make([]uint64, nQUIC*(i+1)-len(sum))...)
			}
			for j, v := range [nQUIC]uint64{s.PacketsIn, s.PacketsOut, s.Forwarded, s.Misrouted, s.Retries, s.Handshakes} {
				sum[nQUIC*i+j] += v
			}
		}
		byBind[q.labels] = sum
		if first[q.labels] == nil {
			first[q.labels] = q
		}
	}
	for bind, sum := range byBind {
		q := first[bind]
		for i := 0; i < len(sum)/nQUIC; i++ {
			shard := strconv.Itoa(i)
			for j := range quicNames {
				k := seriesKey(Prefix+quicNames[j][0], prometheus.Labels{"frontend": bind[0], "address": bind[1], "shard": shard})
				if total := float64(sum[nQUIC*i+j]) + base.Values[k]; total > 0 {
					ch <- prometheus.MustNewConstMetric(q.descs[j], prometheus.CounterValue, total, shard)
				}
			}
		}
	}
}
