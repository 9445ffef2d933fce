// compare mode: portcullis side by side with HAProxy, nginx and Caddy on
// the same backend, certificate, pinning and load generators.
//
//	go run ./bench/run compare [-d 8s] [-warmup 1s] [-idle 10000]
//	                           [-only portcullis,haproxy,nginx,caddy]
//	                           [-scenarios TCP,...] [-keep]
//
// Every proxy gets one core's worth of work (haproxy nbthread 1, nginx
// worker_processes 1, GOMAXPROCS=1 for Caddy and portcullis), no access
// log, keep-alive to the backend, and runs pinned to CPU 0; the load
// generator and bench/backend share CPU 1. Each scenario runs against
// each proxy in turn (and against the backend directly where it can: the
// backend speaks plain HTTP/1.1, and plain TCP for the layer-4
// scenarios), after an unmeasured warm-up. The layer-4 (TCP) scenarios
// run against the proxies that relay TCP: portcullis (a mode tcp
// frontend), HAProxy (mode tcp) and nginx (stream, when Debian's
// libnginx-mod-stream is there); they have a table of their own.
// bench/README.md describes the scenarios, the configurations and the
// table.

package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// target is one server under load: a proxy, or the backend itself.
type target struct {
	name  string
	plain string // plain HTTP/1.1 address
	tls   string // TLS address (TCP, and UDP for HTTP/3); "" if none
	tcp   string // layer-4 address relaying to the backend's TCP byte source; "" if none
	h3    bool
	h1    bool // HTTP/1.1 only: the HTTP/2 scenario skips it
	cmd   *exec.Cmd
	pid   int // 0: the backend (its CPU is not a proxy's)
}

// cscenario is one side-by-side scenario.
type cscenario struct {
	name   string
	kind   string // h2load, h3load, tlsload, tcpload, idle, idle-h3
	args   []string
	path   string
	tls    bool
	direct bool // also run against the backend directly
}

var compareScenarios = []cscenario{
	{name: "HTTP/1.1 keep-alive", kind: "h2load", args: []string{"--h1", "-c", "32"}, path: "/", direct: true},
	{name: "HTTP/1.1 TLS keep-alive", kind: "h2load", args: []string{"--h1", "-c", "32"}, path: "/", tls: true},
	{name: "HTTP/2 TLS (32x10)", kind: "h2load", args: []string{"-c", "32", "-m", "10"}, path: "/", tls: true},
	{name: "HTTP/3 (32x10)", kind: "h3load", args: []string{"-c", "32", "-s", "10", "-body-size", "3"}, path: "/", tls: true},
	{name: "new TLS conn/s (HTTP/1.1)", kind: "tlsload", args: []string{"-c", "16", "-body-size", "3"}, path: "/", tls: true},
	{name: "1 MiB, HTTP/1.1 TLS", kind: "h2load", args: []string{"--h1", "-c", "8"}, path: "/bytes?n=1048576", tls: true},
	{name: "idle HTTP/1.1 TLS", kind: "idle", path: "/", tls: true},
	{name: "idle HTTP/3", kind: "idle-h3", path: "/", tls: true},
	// Layer 4: a new TCP connection per transfer (bench/tcpload).
	{name: "TCP 1 MiB", kind: "tcpload", args: []string{"-mode", "stream", "-size", "1048576", "-c", "8"}, direct: true},
	{name: "TCP 100 MiB", kind: "tcpload", args: []string{"-mode", "stream", "-size", "104857600", "-c", "4"}, direct: true},
	{name: "TCP connections/s", kind: "tcpload", args: []string{"-mode", "connect", "-c", "16"}, direct: true},
}

// crow is one scenario against one target.
type crow struct {
	scenario, target  string
	requests, elapsed float64
	p50, p99          time.Duration
	cpu               float64 // proxy CPU seconds
	idleConns         int
	rssBefore         int64 // KiB
	rssAfter          int64
	note              string

	tcp   bool    // a layer-4 scenario (its own table)
	bytes float64 // payload bytes of the successful transfers (tcpload)
	wall  float64 // seconds from before to after the measurement
	// Ticks of /proc/stat for CPU 0 and CPU 1 over the measurement: busy,
	// and all.
	busy, ticks [2]uint64
}

func (w *crow) reqPerSec() float64 { return w.requests / w.elapsed }
func (w *crow) cpuPer10k() float64 { return w.cpu / w.requests * 10000 }
func (w *crow) kibPerConn() float64 {
	return float64(w.rssAfter-w.rssBefore) / float64(w.idleConns)
}
func (w *crow) cpuPerGiB() float64 { return w.cpu / (w.bytes / (1 << 30)) }
func (w *crow) busyPct(cpu int) string {
	if w.ticks[cpu] == 0 {
		return "?"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(w.busy[cpu])/float64(w.ticks[cpu]))
}

func compareMain(args []string) {
	fs := flag.NewFlagSet("compare", flag.ExitOnError)
	dur := fs.Duration("d", 8*time.Second, "measured time of each scenario per target")
	warmup := fs.Duration("warmup", time.Second, "unmeasured run before each measurement (0: none)")
	idle := fs.Int("idle", 10000, "idle connections of the idle scenarios")
	only := fs.String("only", "portcullis,haproxy,nginx,caddy", "proxies to run")
	keep := fs.Bool("keep", false, "keep the work directory (binaries, configurations, logs)")
	scen := fs.String("scenarios", "", "run only the scenarios whose name contains one of these comma-separated strings (default: all)")
	accessLog := fs.String("access-log", "", "portcullis's HTTP frontends write an access log in this format (json, combined, logfmt) to access.log in the work directory (default: none, as the other proxies)")
	fs.Parse(args)

	r := &runner{accessLog: *accessLog}
	code := 0
	err := r.compare(*dur, *warmup, *idle, strings.Split(*only, ","), *keep, selectScenarios(*scen))
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

// selectScenarios returns the scenarios whose name contains one of the
// comma-separated strings in filter, or all of them for an empty filter.
func selectScenarios(filter string) []cscenario {
	if filter == "" {
		return compareScenarios
	}
	var out []cscenario
	for _, sc := range compareScenarios {
		for f := range strings.SplitSeq(filter, ",") {
			if f != "" && strings.Contains(sc.name, f) {
				out = append(out, sc)
				break
			}
		}
	}
	return out
}

func (r *runner) compare(dur, warmup time.Duration, idle int, proxies []string, keep bool, scenarios []cscenario) error {
	if len(scenarios) == 0 {
		return errors.New("-scenarios: matches no scenario")
	}
	for _, p := range proxies {
		if !slices.Contains([]string{"portcullis", "haproxy", "nginx", "caddy", "fasthttp"}, p) {
			return fmt.Errorf("-only: unknown proxy %q", p)
		}
	}
	if dur < time.Second {
		return errors.New("-d: at least 1s")
	}
	if os.Geteuid() != 0 {
		return errors.New("run me as root: it installs packages and raises the open-files limit")
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	r.trapSignals()
	l4 := slices.ContainsFunc(scenarios, func(sc cscenario) bool { return sc.kind == "tcpload" })
	if err := ensurePeers(proxies, l4); err != nil {
		return err
	}
	// Raise the open-files soft limit to the hard limit; every child
	// (proxies, load generators) inherits it.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if uint64(idle)+500 > lim.Max {
		return fmt.Errorf("-idle %d: the open-files hard limit is %d", idle, lim.Max)
	}

	if err := r.workDir("portcullis-compare-", keep); err != nil {
		return err
	}
	_, tsErr := exec.LookPath("taskset")
	r.pin = tsErr == nil && runtime.NumCPU() >= 2
	if !r.pin {
		fmt.Fprintln(os.Stderr, "bench/run: no taskset or fewer than 2 CPUs: not pinning")
	}
	fmt.Fprintf(os.Stderr, "bench/run: building in %s\n", r.dir)
	if err := r.build(root, "./cmd/portcullis", "./bench/h3load", "./bench/backend", "./bench/idle", "./bench/tlsload", "./bench/tcpload"); err != nil {
		return err
	}
	backend, backendTCP, err := r.startBackend(l4)
	if err != nil {
		return err
	}

	fmt.Printf("machine: %d CPUs (nproc), kernel %s, %s, open files %d, pinned: %s\n",
		runtime.NumCPU(), kernel(), goVersion(), lim.Cur, comparePinText(r.pin))
	fmt.Printf("peers: %s\n", peerVersions(proxies))
	fmt.Printf("each scenario and target: %v measured after %v of warm-up; idle: %d connections\n\n", dur, warmup, idle)

	targets := []*target{{name: "direct", plain: backend, tcp: backendTCP}}
	for _, p := range proxies {
		t, err := r.startProxy(p, backend, backendTCP, idle)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		targets = append(targets, t)
	}

	var rows []*crow
	var failed []string
	for _, sc := range scenarios {
		for _, t := range targets {
			if t.pid == 0 && !sc.direct || sc.tls && t.tls == "" || strings.Contains(sc.kind, "h3") && !t.h3 ||
				sc.kind == "tcpload" && t.tcp == "" || t.h1 && sc.kind == "h2load" && !slices.Contains(sc.args, "--h1") {
				continue
			}
			w := &crow{scenario: sc.name, target: t.name, tcp: sc.kind == "tcpload"}
			var err error
			switch sc.kind {
			case "idle", "idle-h3":
				err = r.idleRun(t, sc, idle, w)
			default:
				err = r.loadRun(t, sc, dur, warmup, w)
			}
			if err != nil {
				// One proxy failing a scenario is a result, not the end.
				fmt.Fprintf(os.Stderr, "bench/run: %s, %s: %v\n", sc.name, t.name, err)
				failed = append(failed, fmt.Sprintf("%s / %s: %v", sc.name, t.name, firstLine(err.Error())))
				w.note = "failed"
			}
			rows = append(rows, w)
		}
	}
	printCompare(rows)
	if len(failed) > 0 {
		fmt.Println("\nfailed:")
		for _, f := range failed {
			fmt.Println("- " + f)
		}
		return errors.New("some runs failed (see above)")
	}
	return nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func comparePinText(pin bool) string {
	if pin {
		return "proxy on CPU 0, load generator and backend on CPU 1"
	}
	return "no"
}

// loadRun measures one load scenario against t.
func (r *runner) loadRun(t *target, sc cscenario, dur, warmup time.Duration, w *crow) error {
	host := t.plain
	scheme := "http"
	if sc.tls {
		host, scheme = t.tls, "https"
	}
	url := scheme + "://" + host + sc.path
	if sc.kind == "tcpload" {
		url = t.tcp
	}
	n := 0
	if warmup > 0 {
		if _, err := r.loadOnce(sc, url, warmup, 0, ""); err != nil {
			return err
		}
	}
	before, err := r.targetCPU(t)
	if err != nil {
		return err
	}
	ticksBefore, err := cpuTicks()
	if err != nil {
		return err
	}
	t0 := time.Now()
	latFile := filepath.Join(r.dir, "latencies")
	res, err := r.loadOnce(sc, url, dur, n, latFile)
	if err != nil {
		return err
	}
	after, err := r.targetCPU(t)
	if err != nil {
		return err
	}
	ticksAfter, err := cpuTicks()
	if err != nil {
		return err
	}
	w.wall = time.Since(t0).Seconds()
	for i := range ticksAfter {
		w.busy[i] = ticksAfter[i].busy - ticksBefore[i].busy
		w.ticks[i] = ticksAfter[i].all - ticksBefore[i].all
	}
	w.requests, w.elapsed, w.p50, w.p99, w.bytes = res.requests, res.elapsed, res.p50, res.p99, res.bytes
	w.cpu = after - before
	fmt.Fprintf(os.Stderr, "bench/run: %-26s %-10s %7.0f req/s  p50 %6.2f ms  p99 %6.2f ms  proxy CPU %.2f s  CPU 0/1 busy %s/%s\n",
		sc.name, t.name, w.reqPerSec(), ms(w.p50), ms(w.p99), w.cpu, w.busyPct(0), w.busyPct(1))
	return nil
}

// printCompare prints the table. The ratios are portcullis's figure over
// the peer's: req/s; requests per proxy CPU second (speed per core); KiB
// per idle connection (below 1: portcullis uses less).
func printCompare(all []*crow) {
	var rows, l4 []*crow
	for _, w := range all {
		if w.tcp {
			l4 = append(l4, w)
		} else {
			rows = append(rows, w)
		}
	}
	if len(rows) > 0 {
		printHTTP(rows)
	}
	if len(l4) > 0 {
		if len(rows) > 0 {
			fmt.Println()
		}
		printTCP(l4)
	}
}

// printHTTP prints the table of the HTTP scenarios.
func printHTTP(rows []*crow) {
	base := map[string]*crow{}
	for _, w := range rows {
		if w.target == "portcullis" && w.note == "" {
			base[w.scenario] = w
		}
	}
	fmt.Println("| scenario | target | req/s | p50 ms | p99 ms | proxy CPU s / 10k req | KiB / idle conn | portcullis / peer: req/s | portcullis / peer: req per CPU s | portcullis / peer: KiB / idle conn |")
	fmt.Println("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, w := range rows {
		b := base[w.scenario]
		if b == w {
			b = nil
		}
		switch {
		case w.note != "":
			fmt.Printf("| %s | %s | %s | | | | | | | |\n", w.scenario, w.target, w.note)
		case w.idleConns > 0:
			ratio := ""
			if b != nil && w.kibPerConn() > 0 {
				ratio = fmt.Sprintf("%.2f", b.kibPerConn()/w.kibPerConn())
			}
			fmt.Printf("| %s | %s | | | | | %.1f | | | %s |\n", w.scenario, w.target, w.kibPerConn(), ratio)
		default:
			cpu, ratio, cpuRatio := "", "", ""
			if w.target != "direct" {
				cpu = fmt.Sprintf("%.2f", w.cpuPer10k())
			}
			if b != nil {
				ratio = fmt.Sprintf("%.2f", b.reqPerSec()/w.reqPerSec())
				if w.target != "direct" && b.cpu > 0 {
					cpuRatio = fmt.Sprintf("%.2f", w.cpuPer10k()/b.cpuPer10k())
				}
			}
			fmt.Printf("| %s | %s | %.0f | %.2f | %.2f | %s | | %s | %s | |\n",
				w.scenario, w.target, w.reqPerSec(), ms(w.p50), ms(w.p99), cpu, ratio, cpuRatio)
		}
	}
}

// printTCP prints the table of the layer-4 scenarios: transfers (each on
// a new connection) per second and MiB/s; the proxy's CPU seconds per GiB
// relayed and per 10,000 connections; its CPU use (CPU seconds per second
// of the run: 100% is its whole core) and how busy each CPU was; and the
// ratios of portcullis's figure to the peer's: transfers/s, and transfers
// per proxy CPU second (speed per core).
func printTCP(rows []*crow) {
	base := map[string]*crow{}
	for _, w := range rows {
		if w.target == "portcullis" && w.note == "" {
			base[w.scenario] = w
		}
	}
	fmt.Println("| scenario | target | transfers/s | MiB/s | p50 ms | p99 ms | proxy CPU s / GiB | proxy CPU s / 10k conn | proxy CPU use | CPU 0 busy | CPU 1 busy | portcullis / peer: transfers/s | portcullis / peer: transfers per CPU s |")
	fmt.Println("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, w := range rows {
		if w.note != "" {
			fmt.Printf("| %s | %s | %s | | | | | | | | | | |\n", w.scenario, w.target, w.note)
			continue
		}
		b := base[w.scenario]
		if b == w {
			b = nil
		}
		// A transfer of more than a byte is a stream: its MiB/s and CPU
		// per GiB mean something; a connection's single byte does not.
		stream := w.bytes > w.requests
		mib, perGiB, per10k, use, ratio, cpuRatio := "", "", "", "", "", ""
		if stream {
			mib = fmt.Sprintf("%.0f", w.bytes/w.elapsed/(1<<20))
		}
		if w.target != "direct" {
			per10k = fmt.Sprintf("%.2f", w.cpuPer10k())
			use = fmt.Sprintf("%.0f%%", 100*w.cpu/w.wall)
			if stream {
				perGiB = fmt.Sprintf("%.2f", w.cpuPerGiB())
			}
		}
		if b != nil {
			ratio = fmt.Sprintf("%.2f", b.reqPerSec()/w.reqPerSec())
			if w.target != "direct" && b.cpu > 0 {
				cpuRatio = fmt.Sprintf("%.2f", w.cpuPer10k()/b.cpuPer10k())
			}
		}
		fmt.Printf("| %s | %s | %.1f | %s | %.2f | %.2f | %s | %s | %s | %s | %s | %s | %s |\n",
			w.scenario, w.target, w.reqPerSec(), mib, ms(w.p50), ms(w.p99), perGiB, per10k, use,
			w.busyPct(0), w.busyPct(1), ratio, cpuRatio)
	}
}
