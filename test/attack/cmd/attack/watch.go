package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/portcullis/portcullis/test/attack"
)

// watcher samples the proxy's process and the backends' counters every
// 100ms while an attack runs, and keeps the peaks.
type watcher struct {
	pid   int
	stats []string

	mu                      sync.Mutex
	start                   time.Time
	procBefore, procPeak    attack.ProcSample
	procErr                 error
	statsBefore, statsAfter []attack.BackendStats
	peakOpen                int64
	marks                   []string
	conns                   int // connections held, for per-connection figures
	done                    chan struct{}
	wg                      sync.WaitGroup
}

// startWatch samples the process pid (0: none) and the stats addresses
// before the attack, then every 100ms until stop.
func startWatch(ctx context.Context, pid int, stats []string) *watcher {
	w := &watcher{pid: pid, stats: stats, start: time.Now(), done: make(chan struct{})}
	if pid != 0 {
		w.procBefore, w.procErr = attack.SampleProc(pid)
		w.procPeak = w.procBefore
	}
	w.statsBefore = w.fetchStats(ctx)
	w.wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.done:
				return
			case <-tick.C:
			}
			w.sample(ctx)
		}
	})
	return w
}

func (w *watcher) fetchStats(ctx context.Context) []attack.BackendStats {
	out := make([]attack.BackendStats, len(w.stats))
	for i, addr := range w.stats {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		s, err := attack.FetchBackendStats(ctx, addr)
		cancel()
		if err == nil {
			out[i] = s
		}
	}
	return out
}

func (w *watcher) sample(ctx context.Context) {
	var open int64
	for _, s := range w.fetchStats(ctx) {
		open += s.Open
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.peakOpen = max(w.peakOpen, open)
	if w.pid == 0 || w.procErr != nil {
		return
	}
	if s, err := attack.SampleProc(w.pid); err == nil {
		w.procPeak.RSS = max(w.procPeak.RSS, s.RSS)
		w.procPeak.FDs = max(w.procPeak.FDs, s.FDs)
	}
}

// mark records the process's state now, with a label.
func (w *watcher) mark(label string) {
	line := fmt.Sprintf("at %v, %s", time.Since(w.start).Round(time.Millisecond), label)
	if w.pid != 0 {
		if s, err := attack.SampleProc(w.pid); err == nil {
			line += ": pid " + fmt.Sprint(w.pid) + " " + s.String()
		}
	}
	if len(w.stats) > 0 {
		var open int64
		for _, s := range w.fetchStats(context.Background()) {
			open += s.Open
		}
		line += fmt.Sprintf("; backends hold %d connections", open)
	}
	w.mu.Lock()
	w.marks = append(w.marks, line)
	w.mu.Unlock()
}

// perConn marks the moment n layer-4 connections are open; stop then
// reports the proxy's descriptors and memory per connection.
func (w *watcher) perConn(n int) {
	w.mark(fmt.Sprintf("%d connections open", n))
	w.mu.Lock()
	w.conns = n
	w.mu.Unlock()
}

// stop ends the sampling and returns the report's lines.
func (w *watcher) stop() []string {
	close(w.done)
	w.wg.Wait()
	lines := w.marks
	if w.pid != 0 {
		if w.procErr != nil {
			lines = append(lines, fmt.Sprintf("pid %d: %v", w.pid, w.procErr))
		} else {
			after, _ := attack.SampleProc(w.pid)
			lines = append(lines, fmt.Sprintf("pid %d: before %v; peak VmRSS %.1f MiB, peak %d fds; after %v",
				w.pid, w.procBefore, float64(w.procPeak.RSS)/(1<<20), w.procPeak.FDs, after))
			if w.conns > 0 {
				lines = append(lines, fmt.Sprintf("pid %d: %.2f fds and %.1f KiB of VmRSS per connection (peak less before)", w.pid,
					float64(w.procPeak.FDs-w.procBefore.FDs)/float64(w.conns), float64(w.procPeak.RSS-w.procBefore.RSS)/1024/float64(w.conns)))
			}
		}
	}
	if len(w.stats) > 0 {
		w.statsAfter = w.fetchStats(context.Background())
		var d attack.BackendStats
		for i := range w.stats {
			d.Conns += w.statsAfter[i].Conns - w.statsBefore[i].Conns
			d.Used += w.statsAfter[i].Used - w.statsBefore[i].Used
			d.Requests += w.statsAfter[i].Requests - w.statsBefore[i].Requests
		}
		lines = append(lines, fmt.Sprintf("backends: %d connections accepted (%d carried requests), %d requests during the attack; at most %d open at once",
			d.Conns, d.Used, d.Requests, w.peakOpen))
	}
	return lines
}
