package runtime

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/internal/h3"
	"github.com/portcullis/portcullis/internal/testutil"
)

// TestQUICHandshakeLimitsReload serves HTTP/3 with retry always and
// max_handshakes 10: a request goes through Retry and leaves no handshake
// counted. A reload changes the retry mode and the handshake limits of the
// running transports, keeping its count; a reload that changes
// handshake_timeout or the quic idle_timeout, which the transports hold,
// is refused and names them.
func TestQUICHandshakeLimitsReload(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteCert(t, dir, "default.test")
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "backend "+r.URL.Path)
	}))
	t.Cleanup(backend.Close)
	addr := freePort(t)
	file := func(quic string) string {
		return fmt.Sprintf(`global:
  grace: 1s
frontends:
  site:
    bind:
      - address: %s
        tls:
          certificates:
            - cert: default.test.pem
              key: default.test.key
        http3: true
        quic: {shards: 1, %s}
    routes:
      - backend: app
backends:
  app:
    servers:
      - address: %s
`, addr, quic, backend.Listener.Addr())
	}
	s, reload := serveFile(t, dir, file("retry: always, max_handshakes: 10"))
	unit := func() *quicUnit {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.units[unitQUIC+" "+addr].(*quicUnit)
	}
	u := unit()
	want := h3.HandshakeLimits{Retry: h3.RetryAlways, RetryRate: 1000, RetryInProgress: 5, MaxHandshakes: 10}
	if got := u.srv.Handshakes().Limits(); got != want {
		t.Fatalf("limits %+v, want %+v", got, want)
	}

	if body := h3Body(t, "https://"+addr+"/one"); body != "backend /one" {
		t.Fatalf("HTTP/3 answered %q", body)
	}
	if st := u.srv.Handshakes().Stats(); st.Retries == 0 || st.InProgress != 0 {
		t.Errorf("after one request with retry always: %+v; want a Retry sent and no handshake in progress", st)
	}

	if err := reload(file("retry: never, max_handshakes: 50, retry_rate: 20")); err != nil {
		t.Fatal(err)
	}
	want = h3.HandshakeLimits{Retry: h3.RetryNever, RetryRate: 20, RetryInProgress: 25, MaxHandshakes: 50}
	if unit() != u || u.srv.Handshakes().Limits() != want {
		t.Fatalf("after the reload: same unit %v, limits %+v; want the running unit with %+v", unit() == u, u.srv.Handshakes().Limits(), want)
	}

	for _, c := range []struct{ quic, want string }{
		{"handshake_timeout: 2s", "handshake_timeout (running: 5s; new: 2s)"},
		{"idle_timeout: 30s", "idle_timeout (running: 0s; new: 30s)"},
	} {
		err := reload(file(c.quic))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "restart") {
			t.Errorf("reload with %s: %v; want it refused, naming %s", c.quic, err, c.want)
		}
	}
	if u.srv.Handshakes().Limits() != want {
		t.Errorf("a refused reload changed the limits: %+v", u.srv.Handshakes().Limits())
	}
}
