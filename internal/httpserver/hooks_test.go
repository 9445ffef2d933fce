package httpserver

import (
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/proxy"
	"github.com/portcullis/portcullis/internal/testutil"
)

// summaries returns Events that summarize every 10ms into the returned
// buffer.
func summaries() (*limit.Events, *testutil.Buffer) {
	buf := &testutil.Buffer{}
	return limit.NewEvents(slog.New(slog.NewTextHandler(buf, nil)), 10*time.Millisecond), buf
}

func waitLog(t *testing.T, buf *testutil.Buffer, want ...string) {
	t.Helper()
	waitFor(t, strings.Join(want, ", "), func() bool {
		for _, l := range strings.Split(buf.String(), "\n") {
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(l, w)
			}
			if ok {
				return true
			}
		}
		return false
	})
}

func TestH2Errors(t *testing.T) {
	if h2Errors(nil, "web", "a") != nil {
		t.Error("a counter without Events")
	}
	ev, buf := summaries()
	count := h2Errors(ev, "web", "127.0.0.1:443")
	count("stream_PROTOCOL_ERROR_over_max_streams")
	count("conn_ENHANCE_YOUR_CALM_too_many_early_resets")
	count("conn_PROTOCOL_ERROR_bad_frame")
	waitLog(t, buf, `msg="limit reached, stream refused"`, "limit=h2_max_streams", "frontend=web", "address=127.0.0.1:443")
	waitLog(t, buf, `msg="limit reached, connection closed"`, "limit=cancelled_requests")
	waitLog(t, buf, `msg="HTTP/2 protocol error"`, "type=conn_PROTOCOL_ERROR_bad_frame")
}

// TestNoteHeadLimit checks which limit a connection that closed without
// a request is said to have met: header_timeout when a read timed out,
// max_header_bytes when it read more than that, none otherwise.
func TestNoteHeadLimit(t *testing.T) {
	ev, buf := summaries()
	gate := &limit.Gate{Conns: limit.NewConns(nil)}
	conn := func(send string, timeout bool) net.Conn {
		client, server := net.Pipe()
		t.Cleanup(func() { client.Close(); server.Close() })
		c := gate.Admit(server)
		go client.Write([]byte(send))
		b := make([]byte, len(send))
		if len(send) > 0 {
			c.Read(b)
		}
		if timeout {
			c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			c.Read(b)
		}
		return c
	}
	guard := func() *proxy.ConnGuard { return &proxy.ConnGuard{Events: ev, Frontend: "web", Address: "a"} }

	noteHeadLimit(conn("GET", true), guard(), 100)
	waitLog(t, buf, "limit=header_timeout", "frontend=web")
	noteHeadLimit(conn(strings.Repeat("x", 200), false), guard(), 100)
	waitLog(t, buf, "limit=max_header_bytes", "frontend=web")

	before := buf.String()
	noteHeadLimit(conn("GET", false), guard(), 100)
	client, server := net.Pipe()
	defer client.Close()
	noteHeadLimit(server, guard(), 100) // not a Gate's: nothing known
	time.Sleep(50 * time.Millisecond)
	if after := buf.String(); after != before {
		t.Errorf("noted a limit for a connection that met none:\n%s", strings.TrimPrefix(after, before))
	}
}
