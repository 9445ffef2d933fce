package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// row is one scenario at one shard count, summed over its rounds.
type row struct {
	scenario string
	shards   int

	requests  float64
	elapsed   float64 // seconds of load, as h3load counts them
	wall      float64 // seconds from before to after each run
	latencies []time.Duration
	cpu       float64 // CPU seconds of portcullis
	// Ticks of /proc/stat for CPU 0 and CPU 1: busy, and all.
	busy, ticks [2]uint64
}

func (w *row) reqPerSec() float64 { return w.requests / w.elapsed }

func (w *row) cpuPer10k() float64 { return w.cpu / w.requests * 10000 }

func (w *row) busyPct(cpu int) string {
	if w.ticks[cpu] == 0 {
		return "?"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(w.busy[cpu])/float64(w.ticks[cpu]))
}

func printTable(rows []*row, base int) {
	baseline := map[string]*row{}
	for _, w := range rows {
		if w.shards == base {
			baseline[w.scenario] = w
		}
	}
	fmt.Printf("| scenario | shards | req/s | p50 ms | p99 ms | portcullis CPU s / 10k req | req/s ratio (N/%[1]d) | CPU/req ratio (N/%[1]d) | portcullis CPU use | CPU 0 busy | CPU 1 busy |\n", base)
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, w := range rows {
		slices.Sort(w.latencies)
		ratio, cpuRatio := "", ""
		if b := baseline[w.scenario]; b != nil && w.shards != base {
			ratio = fmt.Sprintf("%.2f", w.reqPerSec()/b.reqPerSec())
			cpuRatio = fmt.Sprintf("%.2f", w.cpuPer10k()/b.cpuPer10k())
		}
		fmt.Printf("| %s | %d | %.0f | %.2f | %.2f | %.2f | %s | %s | %.0f%% | %s | %s |\n",
			w.scenario, w.shards, w.reqPerSec(), ms(percentile(w.latencies, 0.50)), ms(percentile(w.latencies, 0.99)),
			w.cpuPer10k(), ratio, cpuRatio, 100*w.cpu/w.wall, w.busyPct(0), w.busyPct(1))
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile of sorted latencies, nearest rank (as h3load computes it).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// readLatencies reads an h3load -latency-file.
func readLatencies(path string) ([]time.Duration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []time.Duration
	for l := range strings.Lines(string(b)) {
		n, err := strconv.ParseInt(strings.TrimSpace(l), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %q", path, l)
		}
		out = append(out, time.Duration(n))
	}
	return out, nil
}
