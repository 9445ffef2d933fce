package health

import (
	"bytes"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"

	"github.com/portcullis/portcullis/internal/balance"
)

// scaled multiplies d by PORTCULLIS_TEST_TIMEOUT_SCALE (default 1), for
// slow machines. It scales check intervals and the time tests wait; no
// test waits for a timeout to pass.
var scaled = testutil.Scaled

// waitFor polls cond until it holds or within has passed.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: still waiting for %s", within, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// logSink collects log output as text lines.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

// lines returns the logged lines that contain msg="<msg>".
func (s *logSink) lines(msg string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, l := range strings.Split(s.buf.String(), "\n") {
		if strings.Contains(l, `msg="`+msg+`"`) {
			out = append(out, l)
		}
	}
	return out
}

// expectLogged fails unless exactly n lines with msg were logged, each
// containing want. It waits a little for the n-th line: a change of health
// is visible before its log line is written.
func (s *logSink) expectLogged(t *testing.T, msg string, n int, want string) {
	t.Helper()
	deadline := time.Now().Add(scaled(time.Second))
	for len(s.lines(msg)) < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	got := s.lines(msg)
	if len(got) != n {
		t.Fatalf("%d %q lines logged, want %d:\n%s", len(got), msg, n, strings.Join(got, "\n"))
	}
	for _, l := range got {
		if !strings.Contains(l, want) {
			t.Errorf("log line %q does not contain %q", l, want)
		}
	}
}

func newLog() (*slog.Logger, *logSink) {
	s := &logSink{}
	return slog.New(slog.NewTextHandler(s, &slog.HandlerOptions{Level: slog.LevelDebug})), s
}

// arrival is one check request as the server saw it.
type arrival struct {
	status  int  // the status it was answered with
	healthy bool // the server's health when it arrived
}

// checkServer is a real HTTP server on 127.0.0.1:0 that answers every
// request with a status the test sets, and records each request with the
// health of st at that moment. Checks run one after another, so the health
// seen by a check reflects the results of all the checks before it.
type checkServer struct {
	addr    string
	st      *balance.State
	status  atomic.Int64
	arrived chan struct{} // one token per request, never blocks

	mu   sync.Mutex
	seen []arrival
	reqs []request
}

// request is what a check request carried.
type request struct {
	host, path, userAgent string
	close                 bool // Connection: close
}

func newCheckServer(t *testing.T, status int) *checkServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cs := &checkServer{addr: l.Addr().String(), arrived: make(chan struct{}, 1)}
	cs.st = balance.NewState(cs.addr)
	cs.status.Store(int64(status))
	srv := httptest.NewUnstartedServer(cs)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return cs
}

func (cs *checkServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	status := int(cs.status.Load())
	cs.mu.Lock()
	cs.seen = append(cs.seen, arrival{status, cs.st.Healthy()})
	cs.reqs = append(cs.reqs, request{r.Host, r.URL.Path, r.UserAgent(), r.Close})
	cs.mu.Unlock()
	select {
	case cs.arrived <- struct{}{}:
	default:
	}
	if status >= 300 && status < 400 {
		w.Header().Set("Location", "/elsewhere")
	}
	w.WriteHeader(status)
	w.Write([]byte("body of a health check response\n"))
}

func (cs *checkServer) setStatus(s int) { cs.status.Store(int64(s)) }

func (cs *checkServer) arrivals() []arrival {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return append([]arrival(nil), cs.seen...)
}

func (cs *checkServer) requests() []request {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return append([]request(nil), cs.reqs...)
}

// count is the number of requests answered with status.
func (cs *checkServer) count(status int) int {
	n := 0
	for _, a := range cs.arrivals() {
		if a.status == status {
			n++
		}
	}
	return n
}

// healthSeen is the health seen by the requests answered with status, in
// order.
func (cs *checkServer) healthSeen(status int) []bool {
	var out []bool
	for _, a := range cs.arrivals() {
		if a.status == status {
			out = append(out, a.healthy)
		}
	}
	return out
}

// waitArrival waits for the next request to the server.
func (cs *checkServer) waitArrival(t *testing.T) {
	t.Helper()
	select {
	case <-cs.arrived: // an old token: drain it
	default:
	}
	select {
	case <-cs.arrived:
	case <-time.After(scaled(2 * time.Second)):
		t.Fatal("no health check request arrived")
	}
}

// monitorOf starts a monitor of cs's server and stops it at the end of the
// test.
func monitorOf(t *testing.T, st *balance.State, active *Active, passive Passive, log *slog.Logger) *Monitor {
	t.Helper()
	m := NewMonitor("b/"+st.Address, st, active, passive, log)
	m.Start()
	t.Cleanup(m.Stop)
	return m
}

// The configuration's defaults (config.DefaultRise, DefaultFall,
// DefaultExpectStatus, DefaultCheckTimeout, DefaultPassiveCooldown), for
// settings a test passes without depending on them.
const (
	defaultRise, defaultFall           = 2, 3
	defaultStatusMin, defaultStatusMax = 200, 399
	defaultTimeout                     = time.Second
	defaultCooldown                    = 10 * time.Second
)

// fastCheck is an HTTP check with a short interval, accepting the
// configuration's default status range.
func fastCheck(rise, fall int) *Active {
	return &Active{
		Kind:      "http",
		Path:      "/healthz",
		StatusMin: defaultStatusMin,
		StatusMax: defaultStatusMax,
		Interval:  scaled(30 * time.Millisecond),
		Timeout:   scaled(25 * time.Millisecond),
		Rise:      rise,
		Fall:      fall,
	}
}

// run returns the length of the first run of v in flags, and whether the
// run ended (a value other than v follows it).
func run(flags []bool, v bool) (n int, ended bool) {
	i := 0
	for i < len(flags) && flags[i] != v {
		i++
	}
	for i < len(flags) && flags[i] == v {
		n++
		i++
	}
	return n, i < len(flags)
}

// quiet is the logger of tests that do not look at the log.
var quiet = slog.New(slog.DiscardHandler)
