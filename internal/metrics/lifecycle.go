package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// lifecycle counts reloads and binary upgrades.
type lifecycle struct {
	reloads, upgrades [2]prometheus.Counter // ok, failed
	// reloadTimes and upgradeTimes are the last success and failure.
	reloadTimes, upgradeTimes [2]prometheus.Gauge
}

var results = [2]string{"ok", "failed"}

func newLifecycle(m *Metrics) *lifecycle {
	l := &lifecycle{}
	for i, r := range results {
		lb := prometheus.Labels{"result": r}
		l.reloads[i] = m.newCounter(Prefix+"reloads_total", "Configuration reloads (SIGHUP, the admin API), by result (ok, failed).", lb)
		l.upgrades[i] = m.newCounter(Prefix+"upgrades_total", "Binary upgrades (SIGUSR2), by result: ok is counted by the new process, failed by the old one that goes on serving.", lb)
	}
	names := [2]string{"success", "failure"}
	for i, n := range names {
		l.reloadTimes[i] = m.newTimestamp(Prefix+"reload_last_"+n+"_timestamp_seconds", "Unix time of the last reload that was applied (success) or refused (failure); absent if none.")
		l.upgradeTimes[i] = m.newTimestamp(Prefix+"upgrade_last_"+n+"_timestamp_seconds", "Unix time of the last binary upgrade that succeeded (counted by the new process) or failed; absent if none.")
	}
	return l
}

// newTimestamp returns a gauge starting from the value handed over.
func (m *Metrics) newTimestamp(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	g.Set(m.base.Values[seriesKey(name, nil)])
	return g
}

// Reloaded counts a reload: applied (ok) or refused.
func (m *Metrics) Reloaded(ok bool) {
	if m != nil {
		m.life.count(&m.life.reloads, &m.life.reloadTimes, ok)
	}
}

// Upgraded counts a binary upgrade: ok, counted by the new process once
// it serves, or failed, counted by the old process.
func (m *Metrics) Upgraded(ok bool) {
	if m != nil {
		m.life.count(&m.life.upgrades, &m.life.upgradeTimes, ok)
	}
}

func (l *lifecycle) count(c *[2]prometheus.Counter, t *[2]prometheus.Gauge, ok bool) {
	i := 0
	if !ok {
		i = 1
	}
	c[i].Inc()
	t[i].Set(float64(time.Now().UnixNano()) / 1e9)
}

func (l *lifecycle) collect(ch chan<- prometheus.Metric) {
	for i := range results {
		ch <- l.reloads[i]
		ch <- l.upgrades[i]
		for _, g := range []prometheus.Gauge{l.reloadTimes[i], l.upgradeTimes[i]} {
			if gaugeValue(g) > 0 {
				ch <- g
			}
		}
	}
}
