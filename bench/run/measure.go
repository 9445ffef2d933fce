package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

type loadResult struct {
	requests, elapsed float64
	bytes             float64 // tcpload: payload bytes of the successful transfers
	p50, p99          time.Duration
}

// loadOnce runs h2load, h3load, tlsload or tcpload once, for d or
// (h2load, n > 0) n requests. url is the TCP address for tcpload.
func (r *runner) loadOnce(sc cscenario, url string, d time.Duration, n int, latFile string) (*loadResult, error) {
	if sc.kind == "h3load" || sc.kind == "tlsload" || sc.kind == "tcpload" {
		w := &row{}
		var res map[string]float64
		var err error
		if sc.kind == "tcpload" {
			args := append([]string{"-addr", url, "-d", d.String()}, sc.args...)
			if latFile != "" {
				args = append(args, "-latency-file", latFile)
			}
			res, _, err = r.loadTool("tcpload", args)
		} else {
			res, _, err = r.goLoad(sc.kind, url, scenario{args: sc.args}, d, latFile)
		}
		if err != nil {
			return nil, err
		}
		out := &loadResult{requests: res["requests"], elapsed: res["elapsed_s"], bytes: res["bytes"]}
		if latFile != "" {
			if w.latencies, err = readLatencies(latFile); err != nil {
				return nil, err
			}
			slices.Sort(w.latencies)
			out.p50, out.p99 = percentile(w.latencies, 0.5), percentile(w.latencies, 0.99)
		}
		return out, nil
	}
	args := slices.Clone(sc.args)
	if n > 0 {
		args = append(args, "-n", strconv.Itoa(n))
	} else {
		args = append(args, "-D", strconv.Itoa(max(1, int(d.Round(time.Second).Seconds()))))
	}
	if latFile != "" {
		os.Remove(latFile)
		args = append(args, "--log-file", latFile)
	}
	args = append(args, url)
	cmd := r.command(1, "h2load", args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := r.start(cmd); err != nil {
		return nil, err
	}
	err := cmd.Wait()
	r.forget(cmd)
	if err != nil {
		return nil, fmt.Errorf("h2load %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	res := &loadResult{}
	var succeeded, failed, errored, timeout float64
	for l := range strings.Lines(out.String()) {
		if rest, ok := strings.CutPrefix(l, "requests: "); ok {
			// "N total, N started, N done, N succeeded, N failed, N errored, N timeout"
			for f := range strings.SplitSeq(strings.TrimSpace(rest), ", ") {
				v, k, _ := strings.Cut(f, " ")
				x, _ := strconv.ParseFloat(v, 64)
				switch k {
				case "succeeded":
					succeeded = x
				case "failed":
					failed = x
				case "errored":
					errored = x
				case "timeout":
					timeout = x
				}
			}
		}
		if rest, ok := strings.CutPrefix(l, "finished in "); ok {
			f, _, _ := strings.Cut(rest, ",")
			if dd, err := time.ParseDuration(f); err == nil {
				res.elapsed = dd.Seconds()
			}
		}
	}
	if succeeded == 0 || res.elapsed == 0 || failed+errored+timeout > 0 {
		return nil, fmt.Errorf("h2load %s: %.0f succeeded, %.0f failed, %.0f errored, %.0f timeout\n%s",
			strings.Join(args, " "), succeeded, failed, errored, timeout, out.String())
	}
	res.requests = succeeded
	if latFile != "" {
		lat, err := readH2loadLog(latFile)
		if err != nil {
			return nil, err
		}
		slices.Sort(lat)
		res.p50, res.p99 = percentile(lat, 0.5), percentile(lat, 0.99)
	}
	return res, nil
}

// readH2loadLog reads h2load's --log-file: start (µs since the epoch),
// status, and µs to the end of the response, tab-separated.
func readH2loadLog(path string) ([]time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []time.Duration
	s := bufio.NewScanner(f)
	for s.Scan() {
		fl := strings.Fields(s.Text())
		if len(fl) < 3 {
			continue
		}
		us, err := strconv.ParseInt(fl[2], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %q", path, s.Text())
		}
		out = append(out, time.Duration(us)*time.Microsecond)
	}
	return out, s.Err()
}

// idleRun opens idle connections to t and measures its RSS growth.
func (r *runner) idleRun(t *target, sc cscenario, n int, w *crow) error {
	time.Sleep(2 * time.Second) // let the last load's connections close
	before, err := treeRSS(t.pid)
	if err != nil {
		return err
	}
	args := []string{"-url", "https://" + t.tls + sc.path, "-n", strconv.Itoa(n)}
	if sc.kind == "idle-h3" {
		args = append(args, "-h3")
	}
	cmd := r.command(1, filepath.Join(r.dir, "idle"), args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := r.start(cmd); err != nil {
		return err
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
		r.forget(cmd)
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "open ") {
		cmd.Wait()
		return fmt.Errorf("idle %s: %q %v %s", strings.Join(args, " "), line, err, stderr.String())
	}
	time.Sleep(2 * time.Second) // let the proxy settle
	after, err := treeRSS(t.pid)
	if err != nil {
		return err
	}
	w.idleConns, w.rssBefore, w.rssAfter = n, before, after
	fmt.Fprintf(os.Stderr, "bench/run: %-26s %-10s RSS %d -> %d KiB: %.1f KiB per connection\n",
		sc.name, t.name, before, after, w.kibPerConn())
	return nil
}

// targetCPU is the CPU seconds of a proxy and its children (0 for the
// backend: it shares CPU 1 with the load generator and is no proxy).
func (r *runner) targetCPU(t *target) (float64, error) {
	if t.pid == 0 {
		return 0, nil
	}
	var sum float64
	for _, pid := range treePids(t.pid) {
		s, err := cpuSeconds(pid, r.tck)
		if err != nil {
			return 0, err
		}
		sum += s
	}
	return sum, nil
}

// treePids is pid and its descendants (nginx: the master and its worker).
func treePids(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 {
			if pp, err := strconv.Atoi(f[1]); err == nil {
				children[pp] = append(children[pp], p)
			}
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// treeRSS is the VmRSS (KiB) of pid and its descendants.
func treeRSS(pid int) (int64, error) {
	var sum int64
	for _, p := range treePids(pid) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			return 0, err
		}
		for l := range strings.Lines(string(b)) {
			if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				if err != nil {
					return 0, fmt.Errorf("/proc/%d/status: %q", p, l)
				}
				sum += kb
			}
		}
	}
	return sum, nil
}
