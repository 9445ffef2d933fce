package runtime

import (
	"crypto/tls"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// TestUpgradeTicketKeys: a TLS session from the old process resumes on
// the new one, which starts with the ticket keys handed over and compiles
// its own certificates' configurations; a process with keys of its own
// cannot resume it.
func TestUpgradeTicketKeys(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir, "default.test")
	writeCert(t, dir, "other.test", "*.other.test")
	const addr = "127.0.0.1:8443"
	var cur atomic.Pointer[Bind]
	conf := tlsConfig(&cur)
	dial := ticketServer(t, conf, &tls.Config{})
	process := func(keys [][32]byte) *ticketKeys {
		t.Helper()
		g, err := compileFile(t, dir, twoCerts)
		if err != nil {
			t.Fatal(err)
		}
		k := newTicketKeys(keys)
		k.useGraph(g)
		cur.Store(g.binds[addr])
		return k
	}

	old := process(nil)
	if dial() {
		t.Fatal("the first handshake resumed a session")
	}
	process(old.current())
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
	writeCert(t, dir, "default.test")
	writeCert(t, dir, "other.test", "*.other.test")
	g, err := compileFile(t, dir, twoCerts)
	if err != nil {
		t.Fatal(err)
	}
	const addr = "127.0.0.1:8443"
	if !strings.Contains(strings.Join(g.notes, "\n"), "random") {
		t.Fatalf("no note about random keys to drop: %q", g.notes)
	}
	var reset, token [32]byte
	copy(reset[:], "the old process's reset key.....")
	copy(token[:], "the old process's token key.....")
	up := &upgradeHandoff{QUIC: map[string]quicHandoff{addr: {ResetKey: reset, TokenKey: token, Forward: -1}}}
	up.applyKeys(g)
	q := g.binds[addr].QUIC
	if [32]byte(*q.resetKey) != reset || [32]byte(*q.tokenKey) != token {
		t.Error("the bind does not use the keys handed over")
	}
	if notes := strings.Join(g.notes, "\n"); strings.Contains(notes, "random") {
		t.Errorf("notes still announce random keys: %s", notes)
	}
}

// TestToChildKeepsSocketsNonBlocking: handing a socket to the new process
// leaves it in non-blocking mode for this one, which still accepts on it
// (os.File.Fd would switch the shared file description to blocking), and
// numbers the descriptors from 3.
func TestToChildKeepsSocketsNonBlocking(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File() // as bound at startup
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	nonBlocking := func() bool {
		t.Helper()
		rc, err := ln.(*net.TCPListener).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var flags int
		rc.Control(func(fd uintptr) { flags, _ = unix.FcntlInt(fd, unix.F_GETFL, 0) })
		return flags&unix.O_NONBLOCK != 0
	}
	if !nonBlocking() {
		t.Fatal("the listener is blocking to start with")
	}
	c := &toChild{}
	defer c.close()
	for want := 3; want <= 4; want++ {
		n, err := c.pass(f)
		if err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Errorf("passed as fd %d, want %d", n, want)
		}
	}
	for _, cf := range c.files {
		cf.Fd() // what exec.Cmd does with ExtraFiles
	}
	if !nonBlocking() {
		t.Error("passing the socket to a child made this process's listener blocking")
	}
}
