// compare mode: portcullis side by side with HAProxy, nginx and Caddy on
// the same backend, certificate, pinning and load generators.
//
//	go run ./bench/run compare [-d 8s] [-warmup 1s] [-idle 10000]
//	                           [-only portcullis,haproxy,nginx,caddy] [-keep]
//
// Every proxy gets one core's worth of work (haproxy nbthread 1, nginx
// worker_processes 1, GOMAXPROCS=1 for Caddy and portcullis), no access
// log, keep-alive to the backend, and runs pinned to CPU 0; the load
// generator and bench/backend share CPU 1. Each scenario runs against
// each proxy in turn (and against the backend directly where it can: the
// backend speaks plain HTTP/1.1 only), after an unmeasured warm-up.
// bench/README.md describes the scenarios, the configurations and the
// table.

package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// target is one server under load: a proxy, or the backend itself.
type target struct {
	name  string
	plain string // plain HTTP/1.1 address
	tls   string // TLS address (TCP, and UDP for HTTP/3); "" if none
	h3    bool
	cmd   *exec.Cmd
	pid   int // 0: the backend (its CPU is not a proxy's)
}

// cscenario is one side-by-side scenario.
type cscenario struct {
	name   string
	kind   string // h2load, h3load, tlsload, idle, idle-h3
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
}

func (w *crow) reqPerSec() float64 { return w.requests / w.elapsed }
func (w *crow) cpuPer10k() float64 { return w.cpu / w.requests * 10000 }
func (w *crow) kibPerConn() float64 {
	return float64(w.rssAfter-w.rssBefore) / float64(w.idleConns)
}

func compareMain(args []string) {
	fs := flag.NewFlagSet("compare", flag.ExitOnError)
	dur := fs.Duration("d", 8*time.Second, "measured time of each scenario per target")
	warmup := fs.Duration("warmup", time.Second, "unmeasured run before each measurement (0: none)")
	idle := fs.Int("idle", 10000, "idle connections of the idle scenarios")
	only := fs.String("only", "portcullis,haproxy,nginx,caddy", "proxies to run")
	keep := fs.Bool("keep", false, "keep the work directory (binaries, configurations, logs)")
	fs.Parse(args)

	r := &runner{}
	code := 0
	err := r.compare(*dur, *warmup, *idle, strings.Split(*only, ","), *keep)
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

// ensurePeers installs the missing peers and load generator from Debian's
// packages.
func ensurePeers(proxies []string) error {
	pkgs := map[string]string{"haproxy": "haproxy", "nginx": "nginx", "caddy": "caddy", "h2load": "nghttp2-client"}
	var missing []string
	for _, bin := range append(slices.Clone(proxies), "h2load") {
		if pkg, ok := pkgs[bin]; ok {
			if _, err := exec.LookPath(bin); err != nil {
				missing = append(missing, pkg)
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	fmt.Fprintf(os.Stderr, "bench/run: installing %s\n", strings.Join(missing, " "))
	for _, args := range [][]string{{"update", "-qq"}, append([]string{"install", "-y", "-qq"}, missing...)} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %w", strings.Join(args, " "), err)
		}
	}
	return nil
}

func (r *runner) compare(dur, warmup time.Duration, idle int, proxies []string, keep bool) error {
	for _, p := range proxies {
		if !slices.Contains([]string{"portcullis", "haproxy", "nginx", "caddy"}, p) {
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
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		r.stopping.Store(true)
		fmt.Fprintf(os.Stderr, "bench/run: %v: stopping\n", s)
		r.cleanup()
		os.Exit(130)
	}()
	if err := ensurePeers(proxies); err != nil {
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

	r.keep = keep
	r.dir, err = os.MkdirTemp("", "portcullis-compare-")
	if err != nil {
		return err
	}
	if err := os.Chmod(r.dir, 0o755); err != nil {
		return err
	}
	r.tck = clockTicks()
	_, tsErr := exec.LookPath("taskset")
	r.pin = tsErr == nil && runtime.NumCPU() >= 2
	if !r.pin {
		fmt.Fprintln(os.Stderr, "bench/run: no taskset or fewer than 2 CPUs: not pinning")
	}
	fmt.Fprintf(os.Stderr, "bench/run: building in %s\n", r.dir)
	if err := r.build(root, "./cmd/portcullis", "./bench/h3load", "./bench/backend", "./bench/idle", "./bench/tlsload"); err != nil {
		return err
	}
	backend, err := r.startBackend()
	if err != nil {
		return err
	}

	fmt.Printf("machine: %d CPUs (nproc), kernel %s, %s, open files %d, pinned: %s\n",
		runtime.NumCPU(), kernel(), goVersion(), lim.Cur, comparePinText(r.pin))
	fmt.Printf("peers: %s\n", peerVersions(proxies))
	fmt.Printf("each scenario and target: %v measured after %v of warm-up; idle: %d connections\n\n", dur, warmup, idle)

	targets := []*target{{name: "direct", plain: backend}}
	for _, p := range proxies {
		t, err := r.startProxy(p, backend, idle)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		targets = append(targets, t)
	}

	var rows []*crow
	var failed []string
	for _, sc := range compareScenarios {
		for _, t := range targets {
			if t.pid == 0 && !sc.direct || sc.tls && t.tls == "" || strings.Contains(sc.kind, "h3") && !t.h3 {
				continue
			}
			w := &crow{scenario: sc.name, target: t.name}
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

func peerVersions(proxies []string) string {
	var out []string
	ver := func(name string, args ...string) string {
		b, _ := exec.Command(name, args...).CombinedOutput()
		return firstLine(strings.TrimSpace(string(b)))
	}
	for _, p := range proxies {
		switch p {
		case "haproxy":
			out = append(out, ver("haproxy", "-v"))
		case "nginx":
			out = append(out, ver("nginx", "-v"))
		case "caddy":
			out = append(out, "caddy "+ver("caddy", "version"))
		}
	}
	out = append(out, ver("h2load", "--version"))
	return strings.Join(out, "; ")
}

// loadRun measures one load scenario against t.
func (r *runner) loadRun(t *target, sc cscenario, dur, warmup time.Duration, w *crow) error {
	host := t.plain
	scheme := "http"
	if sc.tls {
		host, scheme = t.tls, "https"
	}
	url := scheme + "://" + host + sc.path
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
	latFile := filepath.Join(r.dir, "latencies")
	res, err := r.loadOnce(sc, url, dur, n, latFile)
	if err != nil {
		return err
	}
	after, err := r.targetCPU(t)
	if err != nil {
		return err
	}
	w.requests, w.elapsed, w.p50, w.p99 = res.requests, res.elapsed, res.p50, res.p99
	w.cpu = after - before
	fmt.Fprintf(os.Stderr, "bench/run: %-26s %-10s %7.0f req/s  p50 %6.2f ms  p99 %6.2f ms  proxy CPU %.2f s\n",
		sc.name, t.name, w.reqPerSec(), ms(w.p50), ms(w.p99), w.cpu)
	return nil
}

type loadResult struct {
	requests, elapsed float64
	p50, p99          time.Duration
}

// loadOnce runs h2load or h3load once, for d or (n > 0) n requests.
func (r *runner) loadOnce(sc cscenario, url string, d time.Duration, n int, latFile string) (*loadResult, error) {
	if sc.kind == "h3load" || sc.kind == "tlsload" {
		w := &row{}
		res, _, err := r.goLoad(sc.kind, url, scenario{args: sc.args}, d, latFile)
		if err != nil {
			return nil, err
		}
		out := &loadResult{requests: res["requests"], elapsed: res["elapsed_s"]}
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

// printCompare prints the table. The ratios are portcullis's figure over
// the peer's: req/s; requests per proxy CPU second (speed per core); KiB
// per idle connection (below 1: portcullis uses less).
func printCompare(rows []*crow) {
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

// startProxy writes the proxy's configuration, starts it pinned to CPU 0
// and waits until both its ports accept connections.
func (r *runner) startProxy(name, backend string, idle int) (*target, error) {
	p1, err := freePort()
	if err != nil {
		return nil, err
	}
	p2, err := freePort()
	if err != nil {
		return nil, err
	}
	t := &target{name: name, plain: net.JoinHostPort("127.0.0.1", strconv.Itoa(p1)), tls: net.JoinHostPort("127.0.0.1", strconv.Itoa(p2))}
	dir := r.dir
	var conf, confName string
	var argv []string
	var env []string
	switch name {
	case "portcullis":
		t.h3 = true
		confName = "portcullis.yaml"
		conf = fmt.Sprintf(`global:
  user: nobody
  grace: 2s
frontends:
  plain:
    bind:
      - address: %s
    routes:
      - backend: bench
  tls:
    bind:
      - address: %s
        tls:
          certificates:
            - cert: cert.pem
              key: key.pem
        http3: true
        quic:
          shards: 1
          retry: never
    routes:
      - backend: bench
backends:
  bench:
    servers:
      - address: %s
`, t.plain, t.tls, backend)
		argv = []string{filepath.Join(dir, "portcullis"), "run", "-c", filepath.Join(dir, confName)}
		env = []string{"GOMAXPROCS=1"}
	case "haproxy":
		pem := filepath.Join(dir, "haproxy.pem")
		c, err1 := os.ReadFile(filepath.Join(dir, "cert.pem"))
		k, err2 := os.ReadFile(filepath.Join(dir, "key.pem"))
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		if err := os.WriteFile(pem, append(c, k...), 0o600); err != nil {
			return nil, err
		}
		confName = "haproxy.cfg"
		conf = fmt.Sprintf(`global
    nbthread 1
    maxconn %d
    # maxconn needs 2 descriptors per connection (client and server side)
    # to be guaranteed, more than the hard limit allows: run anyway (the
    # idle connections need one each).
    no strict-limits
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 60s
    timeout http-keep-alive 300s
    http-reuse always
frontend plain
    bind %s
    default_backend bench
frontend tls
    bind %s ssl crt %s alpn h2,http/1.1
    default_backend bench
backend bench
    server s1 %s
`, idle+200, t.plain, t.tls, pem, backend)
		argv = []string{"haproxy", "-db", "-f", filepath.Join(dir, confName)}
	case "nginx":
		confName = "nginx.conf"
		conf = fmt.Sprintf(`worker_processes 1;
worker_rlimit_nofile %d;
daemon off;
pid %[2]s/nginx.pid;
error_log %[2]s/nginx-error.log warn;
events { worker_connections %[3]d; }
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    client_body_temp_path %[2]s/nginx-body;
    proxy_temp_path %[2]s/nginx-proxy;
    upstream bench {
        server %[4]s;
        keepalive 64;
        keepalive_requests 100000000;
    }
    server {
        listen %[5]s;
        listen %[6]s ssl http2;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate %[2]s/cert.pem;
        ssl_certificate_key %[2]s/key.pem;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_max_temp_file_size 0;
        }
    }
}
`, idle+2000, dir, idle+1000, backend, t.plain, t.tls)
		argv = []string{"nginx", "-c", filepath.Join(dir, confName)}
	case "caddy":
		t.h3 = true
		confName = "Caddyfile"
		conf = fmt.Sprintf(`{
	admin off
	auto_https disable_redirects
	grace_period 1s
}
http://%s {
	bind 127.0.0.1
	reverse_proxy %s
}
https://%s {
	bind 127.0.0.1
	tls %s/cert.pem %s/key.pem
	reverse_proxy %s
}
`, t.plain, backend, t.tls, dir, dir, backend)
		argv = []string{"caddy", "run", "--adapter", "caddyfile", "--config", filepath.Join(dir, confName)}
		env = []string{"GOMAXPROCS=1", "HOME=" + dir, "XDG_DATA_HOME=" + dir + "/caddy-data", "XDG_CONFIG_HOME=" + dir + "/caddy-config"}
	}
	if err := os.WriteFile(filepath.Join(dir, confName), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := r.command(0, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := r.start(cmd); err != nil {
		return nil, err
	}
	t.cmd, t.pid = cmd, cmd.Process.Pid
	if name == "portcullis" {
		if err := waitReady(cmd, logPath, 20*time.Second); err != nil {
			return nil, err
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, a := range []string{t.plain, t.tls} {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if zombie(t.pid) || time.Now().After(deadline) {
				log, _ := os.ReadFile(logPath)
				return nil, fmt.Errorf("not listening on %s; its output:\n%s", a, log)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	fmt.Fprintf(os.Stderr, "bench/run: %s pid %d on %s (plain) and %s (TLS)\n", name, t.pid, t.plain, t.tls)
	return t, nil
}
