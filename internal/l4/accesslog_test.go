package l4

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/accesslog"
	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/internal/upstream"
)

// TestUDPFlowLogged: a flow gives one line when it expires, with its
// datagrams' bytes each way, its server and the normal state.
func TestUDPFlowLogged(t *testing.T) {
	a := newUDPTestServer(t, "a")
	be := newUDPTestBackend(t, balance.RoundRobin, a.addr)
	path := filepath.Join(t.TempDir(), "udp.log")
	w := accesslog.NewWriter(path, 0, slog.New(slog.DiscardHandler))
	if err := w.Open(); err != nil {
		t.Fatal(err)
	}
	l := &accesslog.Logger{W: w, Format: accesslog.JSON}
	idle := testutil.Scaled(200 * time.Millisecond)
	u := &UDP{Frontend: "dns", Backend: func() (*upstream.Backend, string) { return be.Backend, "resolvers" }, IdleTimeout: idle,
		AccessLog: func() *accesslog.Logger { return l }}
	front := addrPort(t, startUDP(t, u, "127.0.0.1:0"))
	c := newUDPTestClient(t, front)
	c.reply("hello") // the server answers "a:hello"
	c.reply("again")
	udpWaitFor(t, "the flow to expire", func() bool { return u.Stats().Flows == 0 })
	// The sweeper writes the line just after the flow stops counting:
	// Shutdown waits for it.
	ctx, cancel := context.WithTimeout(context.Background(), udpBound())
	defer cancel()
	if err := u.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	w.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(b, []byte("\n")); n != 1 {
		t.Fatalf("%d lines, want 1: %s", n, b)
	}
	var e map[string]any
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"protocol": "udp", "frontend": "dns", "backend": "resolvers", "server": a.addr,
		"bytes_in": 10.0, "bytes_out": 14.0, "state": "--", "client_ip": "127.0.0.1"}
	for k, v := range want {
		if e[k] != v {
			t.Errorf("%s = %v, want %v (%s)", k, e[k], v, b)
		}
	}
}
