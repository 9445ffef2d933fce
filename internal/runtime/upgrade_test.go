package runtime

import (
	"crypto/tls"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/portcullis/portcullis/internal/compile"
	"github.com/portcullis/portcullis/internal/handoff"
	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/internal/tickets"
)

// TestUpgradeTicketKeys: a TLS session from the old process resumes on
// the new one, which starts with the ticket keys handed off and compiles
// its own certificates' configurations; a process with keys of its own
// cannot resume it.
func TestUpgradeTicketKeys(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteCert(t, dir, "default.test")
	testutil.WriteCert(t, dir, "other.test", "*.other.test")
	const addr = "127.0.0.1:8443"
	var cur atomic.Pointer[compile.Bind]
	conf := tlsConfig(&cur)
	dial := ticketServer(t, conf, &tls.Config{})
	process := func(keys [][32]byte) *tickets.Keys {
		t.Helper()
		g, err := compileFile(t, dir, testutil.TwoCerts)
		if err != nil {
			t.Fatal(err)
		}
		k := tickets.New(keys)
		k.UseGraph(g.TLSConfigs())
		cur.Store(g.BindAt[addr])
		return k
	}

	old := process(nil)
	if dial() {
		t.Fatal("the first handshake resumed a session")
	}
	process(old.Current())
	if !dial() {
		t.Error("the new process with the old one's keys did not resume the session")
	}
	process(nil)
	if dial() {
		t.Error("a process with keys of its own resumed the session: the test shows nothing")
	}
}

// TestUpgradeQUICKeys: the new process's HTTP/3 binds take the keys the
// old one's transports use, random ones included, and it does not
// announce them as new random keys.
func TestUpgradeQUICKeys(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteCert(t, dir, "default.test")
	testutil.WriteCert(t, dir, "other.test", "*.other.test")
	g, err := compileFile(t, dir, testutil.TwoCerts)
	if err != nil {
		t.Fatal(err)
	}
	const addr = "127.0.0.1:8443"
	if !strings.Contains(strings.Join(g.Notes, "\n"), "random") {
		t.Fatalf("no note about random keys to drop: %q", g.Notes)
	}
	var reset, token [32]byte
	copy(reset[:], "the old process's reset key.....")
	copy(token[:], "the old process's token key.....")
	up := &handoff.Upgrade{QUIC: map[string]handoff.QUICBind{addr: {ResetKey: reset, TokenKey: token, Forward: -1}}}
	useQUICKeys(g, up)
	q := g.BindAt[addr].QUIC
	if [32]byte(*q.ResetKey) != reset || [32]byte(*q.TokenKey) != token {
		t.Error("the bind does not use the keys handed off")
	}
	if notes := strings.Join(g.Notes, "\n"); strings.Contains(notes, "random") {
		t.Errorf("notes still announce random keys: %s", notes)
	}
}
