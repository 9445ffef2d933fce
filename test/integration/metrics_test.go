package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// metricsConfig is lbConfig with one server, a tcp frontend "echo" on
// 127.0.0.1:7000 relaying to the -tcp-echo server echo, and the admin
// listener (which serves /metrics).
func metricsConfig(server, echo string) string {
	c := lbConfig("", lbServer{addr: server})
	c = strings.Replace(c, "frontends:\n", "admin:\n  listen: "+adminListen+"\nfrontends:\n", 1)
	return strings.Replace(c, "backends:\n", fmt.Sprintf(`  echo:
    mode: tcp
    bind:
      - address: 127.0.0.1:7000
    routes:
      - backend: echo
backends:
  echo:
    servers:
      - address: %s
`, echo), 1)
}

// scrape returns the exposition at /metrics on the admin listener.
func scrape(t *testing.T) string {
	t.Helper()
	c := &http.Client{Timeout: scaled(10 * time.Second), Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + adminListen + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %v\n%s", resp.StatusCode, err, b)
	}
	return string(b)
}

// samples parses an exposition: the value of each series, by its name
// and labels as the exposition writes them (sorted by label name).
func samples(t *testing.T, text string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("exposition line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// series names a series as the exposition writes it: name{k="v",...},
// labels sorted by name.
func series(name string, kv ...string) string {
	var pairs []string
	for i := 0; i+1 < len(kv); i += 2 {
		pairs = append(pairs, fmt.Sprintf("%s=%q", kv[i], kv[i+1]))
	}
	sort.Strings(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

// checkSamples reports every series of want whose value differs in got
// (absent counts as 0).
func checkSamples(t *testing.T, when string, got map[string]float64, want map[string]float64) {
	t.Helper()
	for k, w := range want {
		if g := got[k]; g != w {
			t.Errorf("%s: %s = %v, want %v", when, k, g, w)
		}
	}
}

// promtoolCheck runs promtool check metrics on an exposition.
func promtoolCheck(t *testing.T, text string) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		need(t, "promtool (Debian package prometheus)")
		return
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// waitSample waits until series k has value v.
func waitSample(t *testing.T, k string, v float64) {
	t.Helper()
	for deadline := time.Now().Add(scaled(5 * time.Second)); ; time.Sleep(20 * time.Millisecond) {
		if got := samples(t, scrape(t))[k]; got == v {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", k, got, v)
		}
	}
}

// TestMetricsCountTheMix sends a known mix of requests over HTTP/1.1,
// HTTP/2 and HTTP/3, and one tcp connection with a known number of bytes,
// and reads exactly that mix at /metrics on the admin listener, in an
// exposition promtool accepts; the counters keep their values across a
// reload and a binary upgrade.
func TestMetricsCountTheMix(t *testing.T) {
	a := startUp(t, "a", "127.0.0.1:0")
	e := startUp(t, "e1", "127.0.0.1:0", "-tcp-echo")
	s := newSite(t, siteOptions{User: true, App: [2]string{"127.0.0.1:1", "127.0.0.1:2"}, API: "127.0.0.1:3"})
	writeFile(t, s.config, metricsConfig(a.addr, e.addr), 0o644)
	exe := executableDir(t, defaultBinary(t))
	p := start(t, asRoot(exe, s.config), startOptions{Outlived: true})
	p.waitReady()
	chain := newChain(t, p, exe)

	const n1, n2, n3 = 20, 10, 5
	mix := []struct {
		proto, path string
		n, status   int
	}{{"HTTP/1.1", "/", n1, 200}, {"HTTP/2", "/status/404", n2, 404}, {"HTTP/3", "/", n3, 200}}
	for _, m := range mix {
		c := clientFor(t, s, m.proto, 1)
		for i := range m.n {
			if r := get(c, fmt.Sprintf("%s?i=%d", m.path, i)); r.err != nil || r.status != m.status {
				t.Fatalf("%s: %v, want %d", m.proto, r, m.status)
			}
		}
		c.CloseIdleConnections()
	}
	payload := bytes.Repeat([]byte("x"), 1000)
	if _, err := echoOnce("127.0.0.1:7000", payload); err != nil {
		t.Fatalf("tcp echo: %v", err)
	}
	web := func(name string, kv ...string) string {
		return series("portcullis_"+name, append([]string{"frontend", "web"}, kv...)...)
	}
	// The connections have ended (their bytes are counted then).
	for _, proto := range []string{"http1", "http2", "http3"} {
		waitSample(t, web("frontend_connections_open", "protocol", proto), 0)
	}
	waitSample(t, series("portcullis_frontend_connections_open", "frontend", "echo", "protocol", "tcp"), 0)

	srv := []string{"backend", "pool", "server", a.addr}
	want := map[string]float64{
		web("frontend_requests_total", "protocol", "http1", "code_class", "2xx"):                        n1,
		web("frontend_requests_total", "protocol", "http2", "code_class", "4xx"):                        n2,
		web("frontend_requests_total", "protocol", "http3", "code_class", "2xx"):                        n3,
		web("frontend_requests_total", "protocol", "http1", "code_class", "4xx"):                        0,
		web("frontend_requests_total", "protocol", "http2", "code_class", "2xx"):                        0,
		web("frontend_request_duration_seconds_count", "protocol", "http1"):                             n1,
		web("frontend_request_duration_seconds_count", "protocol", "http2"):                             n2,
		web("frontend_request_duration_seconds_count", "protocol", "http3"):                             n3,
		web("frontend_connections_accepted_total", "protocol", "http1"):                                 1,
		web("frontend_connections_accepted_total", "protocol", "http2"):                                 1,
		web("frontend_connections_accepted_total", "protocol", "http3"):                                 1,
		series("portcullis_server_requests_total", srv...):                                              n1 + n2 + n3,
		series("portcullis_server_response_duration_seconds_count", srv...):                             n1 + n2 + n3,
		series("portcullis_server_failures_total", append(srv, "cause", "connect")...):                  0,
		series("portcullis_server_in_flight", srv...):                                                   0,
		series("portcullis_server_state", append(srv, "state", "up")...):                                1,
		series("portcullis_backend_queue_length", "backend", "pool"):                                    0,
		series("portcullis_frontend_connections_accepted_total", "frontend", "echo", "protocol", "tcp"): 1,
		// The client sent the payload; the server greeted ("e1\n") and
		// echoed it.
		series("portcullis_frontend_received_bytes_total", "frontend", "echo", "protocol", "tcp"): 1000,
		series("portcullis_frontend_sent_bytes_total", "frontend", "echo", "protocol", "tcp"):     1003,
		series("portcullis_server_requests_total", "backend", "echo", "server", e.addr):           1,
	}
	text := scrape(t)
	got := samples(t, text)
	checkSamples(t, "after the mix", got, want)
	// The kernel picks the shard of a new connection's first packet.
	var handshakes, in, out float64
	for shard := range 8 { // at most 8 shards (docs/quic.md)
		labels := []string{"address", "127.0.0.1:443", "frontend", "web", "shard", fmt.Sprint(shard)}
		handshakes += got[series("portcullis_quic_handshakes_total", labels...)]
		in += got[series("portcullis_quic_packets_received_total", labels...)]
		out += got[series("portcullis_quic_packets_sent_total", labels...)]
	}
	if handshakes != 1 {
		t.Errorf("%v QUIC handshakes counted on the shards, want 1 (one HTTP/3 connection)", handshakes)
	}
	// A handshake and n3 requests take several packets each way.
	if in < float64(n3) || out < float64(n3) {
		t.Errorf("QUIC packets: %v in, %v out, want at least %d each way", in, out, n3)
	}
	if got["go_goroutines"] == 0 || got["process_open_fds"] == 0 {
		t.Errorf("the Go and process collectors are missing")
	}
	promtoolCheck(t, text)
	if t.Failed() {
		t.Logf("exposition:\n%s", text)
	}

	// A reload keeps every counter, and counts itself.
	mark := len(p.stderr.String())
	p.signal(syscall.SIGHUP)
	waitLogWith(t, p, mark, scaled(5*time.Second), "msg=reloaded")
	want[series("portcullis_reloads_total", "result", "ok")] = 1
	got = samples(t, scrape(t))
	checkSamples(t, "after a reload", got, want)
	if got["portcullis_reload_last_success_timestamp_seconds"] < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("the last reload's time is %v", got["portcullis_reload_last_success_timestamp_seconds"])
	}

	// So does a binary upgrade, which the new process counts.
	chain.upgrade(2*time.Second, true)
	want[series("portcullis_upgrades_total", "result", "ok")] = 1
	got = samples(t, scrape(t))
	checkSamples(t, "after a binary upgrade", got, want)

	// And counting goes on from there.
	c := clientFor(t, s, "HTTP/1.1", 1)
	if r := get(c, "/after-upgrade"); r.err != nil || r.status != 200 {
		t.Fatalf("after the upgrade: %v", r)
	}
	waitSample(t, web("frontend_requests_total", "protocol", "http1", "code_class", "2xx"), n1+1)
	chain.stop()
}
