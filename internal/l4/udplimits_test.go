package l4

import (
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/internal/upstream"
)

// TestUDPGatePerClient counts each flow as a connection of its client IP:
// with max_conns_per_client 1, a second flow from the same IP (another
// port) is dropped until the first has expired.
func TestUDPGatePerClient(t *testing.T) {
	a := newUDPTestServer(t, "a")
	be := newUDPTestBackend(t, balance.RoundRobin, a.addr)
	log, logs := testLog()
	gate := newGate(log, 0, 1)
	idle := testutil.Scaled(300 * time.Millisecond)
	u := &UDP{Frontend: "limited", Backend: func() (*upstream.Backend, string) { return be.Backend, "game" }, IdleTimeout: idle, Gate: gate}
	front := addrPort(t, startUDP(t, u, "127.0.0.1:0"))

	first := newUDPTestClient(t, front)
	first.reply("hello")
	second := newUDPTestClient(t, front)
	second.send("refused")
	if got, _, err := second.recv(idle / 2); err == nil {
		t.Fatalf("a second flow of the same client IP was relayed (%q), want it dropped at max_conns_per_client 1", got)
	}
	if st := u.Stats(); st.Flows != 1 || gate.Conns.Open() != 1 {
		t.Fatalf("%d flows, %d counted; want 1 and 1", st.Flows, gate.Conns.Open())
	}
	waitFor(t, "the refusal summarized", func() bool {
		return len(logLines(logs, `msg="limit reached, connection closed"`, "limit=max_conns_per_client")) == 1
	})

	// Once the first flow has expired, the second may start.
	udpWaitFor(t, "the first flow expired", func() bool { return u.Stats().Flows == 0 })
	if n := gate.Conns.Open(); n != 0 {
		t.Fatalf("%d flows counted after expiry, want 0", n)
	}
	if name := second.ask("again"); name != "a" {
		t.Errorf("answered by %q, want a", name)
	}
}
