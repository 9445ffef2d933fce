package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// logDir makes a directory the unprivileged portcullis (nobody) may
// create files in, for access logs.
func logDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(sharedDir(t), "logs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	return dir
}

// withAccessLog adds an access_log block to the frontend named name of
// config.
func withAccessLog(config, name, format, to string) string {
	return strings.Replace(config, "  "+name+":\n", fmt.Sprintf("  %s:\n    access_log: {format: %s, to: %s}\n", name, format, to), 1)
}

// accessLine is a JSON access-log line.
type accessLine struct {
	Time       string  `json:"time"`
	ClientIP   string  `json:"client_ip"`
	ClientPort int     `json:"client_port"`
	Frontend   string  `json:"frontend"`
	Protocol   string  `json:"protocol"`
	TLSVersion string  `json:"tls_version"`
	Method     string  `json:"method"`
	Path       string  `json:"path"`
	Status     int     `json:"status"`
	BytesIn    int64   `json:"bytes_in"`
	BytesOut   int64   `json:"bytes_out"`
	Backend    string  `json:"backend"`
	Server     string  `json:"server"`
	Retries    int     `json:"retries"`
	RequestID  string  `json:"request_id"`
	QueueMS    float64 `json:"queue_ms"`
	ConnectMS  float64 `json:"connect_ms"`
	HeadersMS  float64 `json:"headers_ms"`
	TotalMS    float64 `json:"total_ms"`
	State      string  `json:"state"`
}

// fileLines returns the lines of path (none when it does not exist).
func fileLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// waitLines waits until the files hold n lines together, then a little
// longer to catch any extra line, and returns them all.
func waitLines(t *testing.T, n int, paths ...string) []string {
	t.Helper()
	deadline := time.Now().Add(scaled(5 * time.Second))
	for {
		var all []string
		for _, p := range paths {
			all = append(all, fileLines(t, p)...)
		}
		if len(all) >= n || time.Now().After(deadline) {
			time.Sleep(300 * time.Millisecond)
			all = all[:0]
			for _, p := range paths {
				all = append(all, fileLines(t, p)...)
			}
			return all
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func parseJSONLines(t *testing.T, lines []string) []accessLine {
	t.Helper()
	out := make([]accessLine, len(lines))
	for i, l := range lines {
		if err := json.Unmarshal([]byte(l), &out[i]); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i, err, l)
		}
	}
	return out
}

var requestIDRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// TestAccessLogProtocols: 100 HTTP/1.1, 50 HTTP/2 and 30 HTTP/3 requests
// give exactly 180 JSON lines, each with its protocol, a server of the
// backend, and timings in order.
func TestAccessLogProtocols(t *testing.T) {
	a := startUp(t, "a", "127.0.0.1:0")
	b := startUp(t, "b", "127.0.0.1:0")
	dir := logDir(t)
	path := filepath.Join(dir, "access.log")
	s, _ := startLB(t, withAccessLog(lbConfig("", lbServer{addr: a.addr}, lbServer{addr: b.addr}), "web", "json", path))
	counts := map[string]int{"HTTP/1.1": 100, "HTTP/2": 50, "HTTP/3": 30}
	for proto, n := range counts {
		c := clientFor(t, s, proto, 4)
		for _, r := range load(c, n, 4, func(i int) string { return fmt.Sprintf("/%s/%d?q=%d", strings.ReplaceAll(proto, "/", ""), i, i) }, 0, nil) {
			if r.err != nil || r.status != 200 {
				t.Fatalf("%s: %v", proto, r)
			}
		}
	}
	lines := waitLines(t, 180, path)
	if len(lines) != 180 {
		t.Fatalf("%d lines, want 180", len(lines))
	}
	got := map[string]int{}
	ids := map[string]bool{}
	dialed := 0
	for _, e := range parseJSONLines(t, lines) {
		got[e.Protocol]++
		wantPrefix := "/" + strings.ReplaceAll(e.Protocol, "/", "") + "/"
		switch {
		case !strings.HasPrefix(e.Path, wantPrefix):
			t.Errorf("protocol %s for path %s", e.Protocol, e.Path)
		case e.Server != a.addr && e.Server != b.addr:
			t.Errorf("server %q, want %s or %s", e.Server, a.addr, b.addr)
		case e.Status != 200 || e.State != "--" || e.Backend != "pool" || e.Frontend != "web" || e.Method != "GET":
			t.Errorf("status %d state %q backend %q frontend %q method %q", e.Status, e.State, e.Backend, e.Frontend, e.Method)
		case e.QueueMS < 0 || e.ConnectMS < 0 || e.HeadersMS < e.ConnectMS || e.TotalMS < e.HeadersMS || e.TotalMS <= 0:
			t.Errorf("timings out of order: queue %v connect %v headers %v total %v", e.QueueMS, e.ConnectMS, e.HeadersMS, e.TotalMS)
		case e.BytesOut <= 0 || e.ClientIP != "127.0.0.1" || e.ClientPort == 0 || e.TLSVersion != "TLSv1.3":
			t.Errorf("bytes out %d, client %s:%d, tls %q", e.BytesOut, e.ClientIP, e.ClientPort, e.TLSVersion)
		case !requestIDRE.MatchString(e.RequestID) || ids[e.RequestID]:
			t.Errorf("request id %q: want 32 hex digits, unique", e.RequestID)
		}
		ids[e.RequestID] = true
		if e.ConnectMS > 0 {
			dialed++
		}
	}
	for proto, n := range counts {
		if got[proto] != n {
			t.Errorf("%d %s lines, want %d", got[proto], proto, n)
		}
	}
	if dialed == 0 {
		t.Error("no line has a connect time: the first requests open connections to the servers")
	}
}

// TestAccessLogStates: a queue timeout, a client that gives up before
// the response headers and a server that resets in the middle of the body
// each get their termination state.
func TestAccessLogStates(t *testing.T) {
	slow := startUp(t, "slow", "127.0.0.1:0", "-delay", "1s")
	dir := logDir(t)
	path := filepath.Join(dir, "access.log")
	s, _ := startLB(t, withAccessLog(lbConfig("    queue_timeout: 300ms\n", lbServer{addr: slow.addr, extra: "max_conns: 1"}), "web", "json", path))
	c := clientFor(t, s, "HTTP/1.1", 4)

	first := make(chan result)
	go func() { first <- get(c, "/holds-the-slot") }()
	time.Sleep(200 * time.Millisecond)
	if r := get(c, "/queued"); r.status != http.StatusServiceUnavailable {
		t.Errorf("queued request: %v, want 503 after the queue timeout", r)
	}
	if r := <-first; r.status != 200 {
		t.Errorf("first request: %v", r)
	}
	impatient := clientFor(t, s, "HTTP/1.1", 1)
	impatient.Timeout = 300 * time.Millisecond
	if r := get(impatient, "/abort"); r.err == nil {
		t.Errorf("want the client to give up: %v", r)
	}
	time.Sleep(scaled(time.Second)) // the slot frees when the server answers
	if r := get(c, "/reset"); r.err == nil {
		t.Errorf("want the reset to reach the client: %v", r)
	}
	lines := waitLines(t, 4, path)
	byPath := map[string]accessLine{}
	for _, e := range parseJSONLines(t, lines) {
		byPath[e.Path] = e
	}
	for p, want := range map[string]string{"/holds-the-slot": "--", "/queued": "sQ", "/abort": "CH", "/reset": "SD"} {
		if e, ok := byPath[p]; !ok || e.State != want {
			t.Errorf("%s: state %q, want %q (%+v)", p, e.State, want, e)
		}
	}
	if e := byPath["/queued"]; e.Status != 503 || e.QueueMS < 250 {
		t.Errorf("/queued: status %d after %vms in the queue, want 503 after about 300ms", e.Status, e.QueueMS)
	}
	if e := byPath["/reset"]; e.Status != 200 || e.BytesOut != 10 {
		t.Errorf("/reset: status %d, %d bytes out; want 200 and the 10 bytes before the reset", e.Status, e.BytesOut)
	}
	if len(lines) != 4 {
		t.Errorf("%d lines, want 4:\n%s", len(lines), strings.Join(lines, "\n"))
	}
}

// combinedRE is the usual regular expression of Apache's combined log
// format.
var combinedRE = regexp.MustCompile(`^(\S+) (\S+) (\S+) \[([\w:/]+\s[+\-]\d{4})\] "(\S+) (\S+) (\S+)" (\d{3}) (\d+|-) "([^"]*)" "([^"]*)"$`)

// TestAccessLogCombinedRotate writes the combined format while
// logrotate's way of rotating (mv, then SIGUSR1) happens in the middle of
// a load: every request has one line, in one of the two files, and every
// line parses as Apache's combined format.
func TestAccessLogCombinedRotate(t *testing.T) {
	a := startUp(t, "a", "127.0.0.1:0")
	dir := logDir(t)
	path := filepath.Join(dir, "access.log")
	s, p := startLB(t, withAccessLog(lbConfig("", lbServer{addr: a.addr}), "web", "combined", path))
	c := clientFor(t, s, "HTTP/2", 4)
	mark := len(p.stderr.String())
	const n = 400
	results := load(c, n, 4, func(i int) string { return fmt.Sprintf("/r/%d", i) }, n/2, func() {
		if err := os.Rename(path, path+".1"); err != nil {
			t.Error(err)
		}
		p.signal(syscall.SIGUSR1)
	})
	for _, r := range results {
		if r.err != nil || r.status != 200 {
			t.Fatalf("%v", r)
		}
	}
	waitLogWith(t, p, mark, scaled(5*time.Second), "access logs reopened")
	lines := waitLines(t, n, path+".1", path)
	if len(lines) != n {
		t.Fatalf("%d lines across both files, want %d", len(lines), n)
	}
	old, cur := fileLines(t, path+".1"), fileLines(t, path)
	if len(old) == 0 || len(cur) == 0 {
		t.Errorf("%d lines before the rotation, %d after: want both", len(old), len(cur))
	}
	for _, l := range lines {
		m := combinedRE.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("not Apache's combined format: %s", l)
		}
		if m[1] != "127.0.0.1" || m[5] != "GET" || !strings.HasPrefix(m[6], "/r/") || m[7] != "HTTP/2" || m[8] != "200" || !strings.HasPrefix(m[11], "Go-http-client") {
			t.Errorf("fields: %q", m[1:])
		}
	}
}

// TestAccessLogTCP: one relayed tcp connection gives one line, with the
// bytes each way.
func TestAccessLogTCP(t *testing.T) {
	e := startUp(t, "e1", "127.0.0.1:0", "-tcp-echo")
	dir := logDir(t)
	path := filepath.Join(dir, "tcp.log")
	const front = "127.0.0.1:7010"
	startL4(t, withAccessLog(tcpEchoConfig(front, "", e.addr), "echo", "json", path), nil)
	payload := []byte(strings.Repeat("x", 1000))
	if name, err := echoOnce(front, payload); err != nil || name != "e1" {
		t.Fatalf("echo: %q %v", name, err)
	}
	lines := waitLines(t, 1, path)
	if len(lines) != 1 {
		t.Fatalf("%d lines, want 1:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	l := parseJSONLines(t, lines)[0]
	if l.Protocol != "tcp" || l.Frontend != "echo" || l.Backend != "echo" || l.Server != e.addr || l.State != "--" ||
		l.BytesIn != 1000 || l.BytesOut != 1003 || l.ClientIP != "127.0.0.1" || l.TotalMS < l.ConnectMS {
		t.Errorf("tcp line: %+v (want 1000 bytes in, 1003 out: the greeting and the echo)", l)
	}
}

// TestAccessLogBeforeDrop: a log file in a directory only root may write
// to is opened before the drop to nobody, and written through that
// descriptor; the file it created belongs to nobody, who reopens it.
func TestAccessLogBeforeDrop(t *testing.T) {
	a := startUp(t, "a", "127.0.0.1:0")
	path := filepath.Join(sharedDir(t), "access.log") // root's, mode 0755
	s, _ := startLB(t, withAccessLog(lbConfig("", lbServer{addr: a.addr}), "web", "logfmt", path))
	c := clientFor(t, s, "HTTP/1.1", 2)
	for _, r := range load(c, 10, 2, func(i int) string { return fmt.Sprintf("/d/%d", i) }, 0, nil) {
		if r.err != nil || r.status != 200 {
			t.Fatalf("%v", r)
		}
	}
	lines := waitLines(t, 10, path)
	if len(lines) != 10 {
		t.Fatalf("%d lines, want 10", len(lines))
	}
	for _, l := range lines {
		if !strings.Contains(l, " protocol=HTTP/1.1 ") || !strings.Contains(l, " status=200 ") || !strings.Contains(l, " server="+a.addr+" ") {
			t.Errorf("logfmt line: %s", l)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := user.Lookup("nobody")
	if st := fi.Sys().(*syscall.Stat_t); strconv.Itoa(int(st.Uid)) != u.Uid || fi.Mode().Perm() != 0o640 {
		t.Errorf("the file is owned by uid %d with mode %v; want nobody's, 0640", st.Uid, fi.Mode().Perm())
	}
}

// TestAccessLogUpgrade: the access-log file (root's, in a directory only
// root may write to) is handed to the new process of a binary upgrade,
// which logs to it as nobody: every connection before and after has its
// line.
func TestAccessLogUpgrade(t *testing.T) {
	e := startUp(t, "e1", "127.0.0.1:0", "-tcp-echo")
	dir := sharedDir(t)
	path := filepath.Join(dir, "access.log")
	writeFile(t, path, "", 0o640) // root's: nobody could not open it
	const front = "127.0.0.1:7011"
	cfg := filepath.Join(dir, "portcullis.yaml")
	writeFile(t, cfg, withAccessLog(tcpEchoConfig(front, "", e.addr), "echo", "json", path), 0o644)
	exe := executableDir(t, defaultBinary(t))
	p := start(t, asRoot(exe, cfg), startOptions{Outlived: true})
	p.waitReady()
	c := newChain(t, p, exe)
	echo := func(n int) {
		for range n {
			if name, err := echoOnce(front, []byte("hello")); err != nil || name != "e1" {
				t.Fatalf("echo: %q %v", name, err)
			}
		}
	}
	echo(3)
	c.upgrade(2*time.Second, true)
	echo(4)
	c.stop()
	lines := fileLines(t, path)
	if len(lines) != 7 {
		t.Fatalf("%d lines, want 7 (3 before the upgrade, 4 after):\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for _, l := range parseJSONLines(t, lines) {
		if l.Protocol != "tcp" || l.State != "--" || l.BytesIn != 5 || l.BytesOut != 8 {
			t.Errorf("line %+v", l)
		}
	}
}

// TestAccessLogReload: a reload in the middle of a load keeps the
// writer of the file it still names: every request has exactly one line.
func TestAccessLogReload(t *testing.T) {
	a := startUp(t, "a", "127.0.0.1:0", "-delay", "5ms") // the load lasts about 750ms
	path := filepath.Join(logDir(t), "access.log")
	config := func(settings string) string {
		return withAccessLog(lbConfig(settings, lbServer{addr: a.addr}), "web", "json", path)
	}
	s, p := startLB(t, config(""))
	c := clientFor(t, s, "HTTP/2", 4)
	const n = 600
	done := make(chan []result)
	third := make(chan struct{})
	go func() {
		done <- load(c, n, 4, func(i int) string { return fmt.Sprintf("/r/%d", i) }, n/3, func() { close(third) })
	}()
	<-third
	if line := reload(t, s, p, config("    retries: 1\n")); !strings.Contains(line, "msg=reloaded") {
		t.Fatalf("reload: %s", line)
	}
	reloaded := time.Now()
	results := <-done
	for _, r := range results {
		if r.err != nil || r.status != 200 {
			t.Fatalf("%v", r)
		}
	}
	if last := results[n-1].start; !last.After(reloaded) {
		t.Errorf("the load ended before the reload was applied: the test proves nothing")
	}
	if lines := waitLines(t, n, path); len(lines) != n {
		t.Errorf("%d lines, want %d", len(lines), n)
	}
}
