// Command run is the entry point of the portcullis benchmarks. It has two
// modes; without one it prints its usage:
//
//	go run ./bench/run shards [flags]   HTTP/3: one QUIC shard vs N
//	go run ./bench/run compare [flags]  portcullis vs HAProxy, nginx, Caddy
//
// compare is described in compare.go. shards compares one QUIC shard with N shards (N = the number of CPUs, at least
// 2) on loopback. Run it as root from the repository, so that the steering
// program loads:
//
//	go run ./bench/run shards [-d 10s] [-rounds 2] [-warmup 1s] [-shards 1,N]
//	                   [-retry never] [-pin=true] [-keep]
//
// It builds portcullis, bench/h3load and bench/backend into a temporary
// directory, makes a self-signed ECDSA certificate, starts the backend and,
// for each shard count, a portcullis (as root, dropping to nobody) with one
// HTTP/3 bind (all of them at once, on different ports), and runs three
// scenarios against them with h3load:
//
//	small      32 connections x 10 streams, 3-byte responses
//	1MiB       4 connections x 1 stream, 1 MiB responses
//	handshake  16 clients, a new connection (full handshake) per request
//
// Each scenario is measured for -d per shard count, in -rounds runs that
// alternate between the shard counts (1 N, N 1, ...), after a -warmup run
// per shard count that is not counted. With -pin (the default, when
// taskset exists) every portcullis runs on CPU 0 and the load generator
// and the backend on CPU 1. portcullis's CPU time is read from
// /proc/PID/stat (utime+stime) before and after each run, and each CPU's
// busy time (softirq included, other processes included) from /proc/stat.
// portcullis runs with quic retry: never unless -retry says otherwise: the
// handshake scenario runs near the 1000 new handshakes per second at which
// retry: auto starts sending Retry packets, and the comparison is meant to
// be of shards, not of that switch.
//
// It prints one Markdown table: requests per second, p50 and p99 latency,
// portcullis's CPU seconds per 10k requests, the ratios of N shards to the
// first shard count, and how busy portcullis and both CPUs were. Every
// process it starts is stopped on exit, on failure and on SIGINT or
// SIGTERM. Any failed request fails the run.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// scenario is one h3load invocation.
type scenario struct {
	name string
	path string
	args []string
}

var scenarios = []scenario{
	{"small", "/", []string{"-c", "32", "-s", "10", "-body-size", "3"}},
	{"1MiB", "/bytes?n=1048576", []string{"-c", "4", "-s", "1", "-body-size", "1048576"}},
	{"handshake", "/", []string{"-handshake", "-c", "16", "-body-size", "3"}},
}

// shardsMain is "bench/run shards".
func shardsMain(args []string) {
	fs := flag.NewFlagSet("shards", flag.ExitOnError)
	dur := fs.Duration("d", 10*time.Second, "duration of each measured scenario")
	warmup := fs.Duration("warmup", time.Second, "unmeasured run before each scenario (0: none)")
	rounds := fs.Int("rounds", 2, "split each measurement into this many runs, alternating between shard counts")
	shardList := fs.String("shards", "1,"+strconv.Itoa(max(2, runtime.NumCPU())), "shard counts to compare; the first is the baseline")
	pin := fs.Bool("pin", true, "pin portcullis to CPU 0, the load generator and backend to CPU 1 (needs taskset and 2 CPUs)")
	retry := fs.String("retry", "never", "portcullis's quic retry setting: never, auto or always")
	keep := fs.Bool("keep", false, "keep the work directory (binaries, configuration, logs)")
	fs.Parse(args)

	r := &runner{}
	code := 0
	err := r.main(*dur, *warmup, *rounds, *shardList, *retry, *pin, *keep)
	if r.stopping.Load() {
		select {} // the signal handler cleans up and exits
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench/run: %v\n", err)
		code = 1
	}
	r.cleanup()
	os.Exit(code)
}

type runner struct {
	dir        string
	tck        float64
	pin        bool
	backendPid int

	mu       sync.Mutex
	procs    []*exec.Cmd
	keep     bool
	stopping atomic.Bool // a signal arrived: errors from here on are ours
	// accessLog is the access-log format of portcullis's HTTP frontends
	// in compare; "": none.
	accessLog string
}

func (r *runner) main(dur, warmup time.Duration, rounds int, shardList, retry string, pin, keep bool) error {
	if rounds < 1 || dur/time.Duration(max(rounds, 1)) < time.Second {
		return errors.New("-rounds: at least 1, and at least 1s of -d per round")
	}
	switch retry {
	case "never", "auto", "always":
	default:
		return fmt.Errorf("-retry: %q is not never, auto or always", retry)
	}
	var shards []int
	for f := range strings.SplitSeq(shardList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 255 || slices.Contains(shards, n) {
			return fmt.Errorf("-shards: %q is not a shard count, or is there twice", f)
		}
		shards = append(shards, n)
	}
	if os.Geteuid() != 0 {
		return errors.New("run me as root: more than one QUIC shard needs the steering program, which portcullis loads at startup as root")
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}

	r.trapSignals()

	if err := r.workDir("portcullis-bench-", keep); err != nil {
		return err
	}

	cpus := runtime.NumCPU()
	_, tsErr := exec.LookPath("taskset")
	switch {
	case !pin:
	case tsErr != nil:
		fmt.Fprintln(os.Stderr, "bench/run: taskset not found (Debian: util-linux): not pinning")
		pin = false
	case cpus < 2:
		fmt.Fprintln(os.Stderr, "bench/run: fewer than 2 CPUs: not pinning")
		pin = false
	}
	r.pin = pin

	fmt.Fprintf(os.Stderr, "bench/run: building in %s\n", r.dir)
	if err := r.build(root, "./cmd/portcullis", "./bench/h3load", "./bench/backend"); err != nil {
		return err
	}

	backend, _, err := r.startBackend(false)
	if err != nil {
		return err
	}

	fmt.Printf("machine: %d CPUs (nproc), kernel %s, %s, pinned: %s\n",
		cpus, kernel(), goVersion(), pinText(pin))
	fmt.Printf("each scenario and shard count: %v measured in %d rounds, after %v of warm-up; quic retry: %s\n\n",
		dur, rounds, warmup, retry)

	// Every instance runs at once (an idle one costs nothing), and the
	// rounds of a scenario alternate between them (1 2, 2 1, 1 2, ...), so
	// that the neighbours' load on a shared machine hits every shard count
	// about alike.
	var instances []*instance
	for _, n := range shards {
		in, err := r.startPortcullis(n, backend, retry)
		if err != nil {
			return err
		}
		instances = append(instances, in)
	}
	var rows []*row
	slice := dur / time.Duration(rounds)
	for _, sc := range scenarios {
		byShards := map[int]*row{}
		for _, in := range instances {
			w := &row{scenario: sc.name, shards: in.shards}
			byShards[in.shards] = w
			rows = append(rows, w)
			if warmup > 0 {
				if err := r.run(in, sc, warmup, nil); err != nil {
					return fmt.Errorf("%s warm-up, %d shard(s): %w", sc.name, in.shards, err)
				}
			}
		}
		for round := range rounds {
			order := slices.Clone(instances)
			if round%2 == 1 {
				slices.Reverse(order)
			}
			for _, in := range order {
				if err := r.run(in, sc, slice, byShards[in.shards]); err != nil {
					return fmt.Errorf("%s, %d shard(s): %w", sc.name, in.shards, err)
				}
			}
		}
	}
	printTable(rows, shards[0])
	return nil
}

func pinText(pin bool) string {
	if pin {
		return "portcullis on CPU 0, h3load and backend on CPU 1"
	}
	return "no"
}

// instance is one running portcullis.
type instance struct {
	shards int
	addr   string
	cmd    *exec.Cmd
}

// startPortcullis starts portcullis with one HTTP/3 bind of n shards in
// front of backend, and waits until it serves.
func (r *runner) startPortcullis(n int, backend, retry string) (*instance, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cfg := filepath.Join(r.dir, fmt.Sprintf("shards-%d.yaml", n))
	conf := fmt.Sprintf(`global:
  user: nobody
  grace: 2s
frontends:
  bench:
    bind:
      - address: %s
        tls:
          certificates:
            - cert: cert.pem
              key: key.pem
        http3: true
        quic:
          shards: %d
          retry: %s
    routes:
      - backend: bench
backends:
  bench:
    servers:
      - address: %s
`, addr, n, retry, backend)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	logPath := filepath.Join(r.dir, fmt.Sprintf("portcullis-shards-%d.log", n))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := r.command(0, filepath.Join(r.dir, "portcullis"), "run", "-c", cfg)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := r.start(cmd); err != nil {
		return nil, err
	}
	if err := waitReady(cmd, logPath, 20*time.Second); err != nil {
		return nil, err
	}
	log, _ := os.ReadFile(logPath)
	if n > 1 && !bytes.Contains(log, []byte("shards="+strconv.Itoa(n))) {
		return nil, fmt.Errorf("portcullis did not start %d steered shards; its log (%s):\n%s", n, logPath, log)
	}
	fmt.Fprintf(os.Stderr, "bench/run: portcullis pid %d on %s, %d shard(s)\n", cmd.Process.Pid, addr, n)
	return &instance{shards: n, addr: addr, cmd: cmd}, nil
}

// run runs one scenario against one instance for d and, unless w is nil
// (a warm-up), adds what it measured to w.
func (r *runner) run(in *instance, sc scenario, d time.Duration, w *row) error {
	url := "https://" + in.addr + sc.path
	if w == nil {
		_, _, err := r.h3load(url, sc, d, "")
		return err
	}
	latFile := filepath.Join(r.dir, "latencies")
	pid := in.cmd.Process.Pid
	start := time.Now()
	before, err1 := cpuSeconds(pid, r.tck)
	backBefore, err2 := cpuSeconds(r.backendPid, r.tck)
	statBefore, err3 := cpuTicks()
	if err := errors.Join(err1, err2, err3); err != nil {
		return err
	}
	res, loadCPU, err := r.h3load(url, sc, d, latFile)
	if err != nil {
		return err
	}
	after, err1 := cpuSeconds(pid, r.tck)
	backAfter, err2 := cpuSeconds(r.backendPid, r.tck)
	statAfter, err3 := cpuTicks()
	lat, err4 := readLatencies(latFile)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return err
	}
	wall := time.Since(start).Seconds()
	w.requests += res["requests"]
	w.elapsed += res["elapsed_s"]
	w.wall += wall
	w.latencies = append(w.latencies, lat...)
	w.cpu += after - before
	for i := range w.busy {
		w.busy[i] += statAfter[i].busy - statBefore[i].busy
		w.ticks[i] += statAfter[i].all - statBefore[i].all
	}
	fmt.Fprintf(os.Stderr, "bench/run: %-9s shards=%d  %5.0f req/s  p50 %6.2f ms  p99 %6.2f ms  CPU s: portcullis %.2f, h3load+backend %.2f, in %.2f s\n",
		sc.name, in.shards, res["req_per_s"], res["p50_ms"], res["p99_ms"], after-before, loadCPU+backAfter-backBefore, wall)
	return nil
}

// h3load runs one load generation and parses its line; it also returns
// h3load's CPU seconds. With latFile, h3load writes its latencies there.
func (r *runner) h3load(url string, sc scenario, d time.Duration, latFile string) (map[string]float64, float64, error) {
	return r.goLoad("h3load", url, sc, d, latFile)
}

// goLoad runs bench/h3load or bench/tlsload (same flags, same line).
func (r *runner) goLoad(bin, url string, sc scenario, d time.Duration, latFile string) (map[string]float64, float64, error) {
	args := append([]string{"-url", url, "-insecure", "-d", d.String()}, sc.args...)
	if latFile != "" {
		args = append(args, "-latency-file", latFile)
	}
	return r.loadTool(bin, args)
}

// loadTool runs one of the repository's load generators (bench/h3load,
// bench/tlsload, bench/tcpload) on CPU 1 and parses its line of
// key=value pairs. It also returns the generator's CPU seconds.
func (r *runner) loadTool(bin string, args []string) (map[string]float64, float64, error) {
	cmd := r.command(1, filepath.Join(r.dir, bin), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := r.start(cmd); err != nil {
		return nil, 0, err
	}
	err := cmd.Wait()
	r.forget(cmd)
	if err != nil {
		return nil, 0, fmt.Errorf("%s %s: %v\n%s%s", bin, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	res := map[string]float64{}
	for f := range strings.FieldsSeq(stdout.String()) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return nil, 0, fmt.Errorf("%s printed %q", bin, stdout.String())
		}
		res[k] = x
	}
	if res["requests"] == 0 || res["elapsed_s"] == 0 {
		return nil, 0, fmt.Errorf("%s printed %q", bin, stdout.String())
	}
	return res, (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds(), nil
}

// startBackend starts bench/backend and returns its HTTP address and, with
// tcp, the address of its TCP byte source (bench/tcpload's server).
func (r *runner) startBackend(tcp bool) (addr, tcpAddr string, err error) {
	args := []string{"-listen", "127.0.0.1:0"}
	if tcp {
		args = append(args, "-tcp", "127.0.0.1:0")
	}
	cmd := r.command(1, filepath.Join(r.dir, "backend"), args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", "", err
	}
	cmd.Stderr = os.Stderr
	if err := r.start(cmd); err != nil {
		return "", "", err
	}
	type addrs struct{ addr, tcp, line string }
	got := make(chan addrs, 1)
	go func() {
		// "tcp ADDR" (with -tcp), then "ready ADDR".
		var a addrs
		s := bufio.NewScanner(out)
		for s.Scan() {
			a.line = s.Text()
			if t, ok := strings.CutPrefix(a.line, "tcp "); ok {
				a.tcp = t
				continue
			}
			a.addr, _ = strings.CutPrefix(a.line, "ready ")
			break
		}
		got <- a
	}()
	select {
	case a := <-got:
		if a.addr == "" || a.addr == a.line || tcp && a.tcp == "" {
			return "", "", fmt.Errorf("backend printed %q", a.line)
		}
		r.backendPid = cmd.Process.Pid
		return a.addr, a.tcp, nil
	case <-time.After(10 * time.Second):
		return "", "", errors.New("backend did not start within 10s")
	}
}
