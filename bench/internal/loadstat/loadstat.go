// Package loadstat is the result line and latency file that bench's load
// tools (h3load, tlsload, tcpload) print and write, in the one format
// bench/run parses.
package loadstat

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"
)

// Line is the result line: requests, failures, elapsed seconds, requests
// per second, and the p50 and p99 latencies in milliseconds (nearest
// rank). It sorts lat. Tools append their own fields (bytes...).
func Line(lat []time.Duration, failures int64, elapsed time.Duration) string {
	slices.Sort(lat)
	secs := elapsed.Seconds()
	return fmt.Sprintf("requests=%d failures=%d elapsed_s=%.3f req_per_s=%.1f p50_ms=%.3f p99_ms=%.3f",
		len(lat), failures, secs, float64(len(lat))/secs,
		ms(Percentile(lat, 0.50)), ms(Percentile(lat, 0.99)))
}

// Percentile of sorted latencies, nearest rank; 0 for none.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// WriteLatencies writes each latency in nanoseconds, one a line, to path.
func WriteLatencies(path string, lat []time.Duration) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, l := range lat {
		w.WriteString(strconv.FormatInt(int64(l), 10))
		w.WriteByte('\n')
	}
	return errors.Join(w.Flush(), f.Close())
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
