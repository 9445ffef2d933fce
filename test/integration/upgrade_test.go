package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Binary upgrades (SIGUSR2): the running process starts the executable at
// the path it was started from, which the test replaces with another build
// before each upgrade, hands it every socket and finishes its own
// connections. See docs/operations.md, "Binary upgrade".

// upgradeConfig serves frontend "web" on 127.0.0.1:80 and, with TLS and
// HTTP/3 on shards sockets, on 127.0.0.1:443, to upstream; user adds
// global.user nobody and QUIC key files (root-only, see upgradeSite).
func upgradeConfig(user bool, grace string, shards int, upstream string) string {
	var b strings.Builder
	b.WriteString("global:\n")
	keys := ""
	if user {
		b.WriteString("  user: nobody\n  group: nogroup\n")
		keys = "\n          stateless_reset_key_file: quic-reset.key\n          token_key_file: quic-token.key"
	}
	fmt.Fprintf(&b, `  grace: %s
frontends:
  web:
    bind:
      - address: 127.0.0.1:80
      - address: 127.0.0.1:443
        tls:
          certificates:
            - cert: site.pem
              key: site.key
        http3: true
        quic:
          shards: %d%s
    routes:
      - backend: app
backends:
  app:
    servers:
      - address: %s
`, grace, shards, keys, upstream)
	return b.String()
}

// upgradeSite is a site with upgradeConfig, its upstream (echoUpstream),
// and the executable the service is started from (the default build).
// With user, the TLS key and the QUIC key files are readable by root only:
// new processes, which run as nobody, use the bytes handed off.
func upgradeSite(t *testing.T, user bool, grace string, shards int) (*site, string) {
	t.Helper()
	up := echoUpstream(t)
	s := newSite(t, siteOptions{User: user, PrivateKey: user, App: [2]string{up.addr, up.addr}, API: up.addr})
	writeFile(t, s.config, upgradeConfig(user, grace, shards, up.addr), 0o644)
	if user {
		writeFile(t, filepath.Join(s.dir, "quic-reset.key"), strings.Repeat("5a", 32)+"\n", 0o600)
		writeFile(t, filepath.Join(s.dir, "quic-token.key"), strings.Repeat("a5", 32)+"\n", 0o600)
	}
	return s, executableDir(t, defaultBinary(t))
}

// builds alternates between two builds for successive upgrades: the new
// build and its version as "ready" logs it.
func builds(t *testing.T, upgrade int) (string, string) {
	if upgrade%2 == 1 {
		return binary(t, variantNext), "version=" + nextVersion
	}
	return defaultBinary(t), "version=(devel)"
}

// upgradeThrice runs three upgrades in a row under load, each to the
// other build, and checks each: the new process runs the new build and
// serves the other QUIC generation (1, 0, 1), the old one exits within
// grace, TLS sessions resume across the first, and no request of any kind
// fails.
func upgradeThrice(t *testing.T, s *site, c *chain, grace time.Duration, wantNNP bool) {
	t.Helper()
	res := newResumption(s)
	res.connect(t)
	l := startLoad(t, s)
	time.Sleep(300 * time.Millisecond)
	for i := 1; i <= 3; i++ {
		build, version := builds(t, i)
		installBinary(t, build, c.exe)
		mark := len(c.p.stderr.String())
		uploaded := l.uploads(t, s)
		old, new := c.upgrade(grace, wantNNP)
		uploaded()
		// With every packet reaching its process, clients leave the old
		// one at once (GOAWAY, end of their requests): it exits long
		// before the grace period ends.
		if took := old.exitedAt.Sub(old.signaled); took > scaled(grace/2) {
			t.Errorf("upgrade %d: the old process took %v to finish, want well under the grace period (%v)", i, took.Round(time.Millisecond), grace)
		}
		line := c.waitOutput(mark, scaled(2*time.Second), "msg=ready", fmt.Sprintf("pid=%d ", new.pid))
		if !strings.Contains(line, version) || !strings.Contains(line, fmt.Sprintf("replaces=%d", old.pid)) {
			t.Errorf("upgrade %d: the new process does not run the replaced executable (want %s, replacing %d): %s", i, version, old.pid, line)
		}
		started := c.waitOutput(mark, scaled(time.Second), "upgrade: started the new process", fmt.Sprintf("pid=%d", new.pid))
		if want := fmt.Sprintf("generation=%d", i%2); !strings.Contains(started, want) {
			t.Errorf("upgrade %d: %s", i, started)
		}
		if i == 1 {
			if tcp, quic := res.connect(t); !tcp || !quic {
				t.Errorf("after the upgrade, TLS sessions from before resumed: over TCP %v, over QUIC %v; want both (the ticket keys are handed off)", tcp, quic)
			}
		}
		time.Sleep(300 * time.Millisecond) // load on the new process alone
	}
	l.finish(t)
}

// TestUpgradeSteered: started as root and dropping to nobody, with two
// steered QUIC shards (four sockets: two per generation), portcullis is
// upgraded three times in a row under HTTP/1.1, HTTP/2 and HTTP/3 load,
// with a WebSocket and an HTTP/3 connection kept open: no request fails.
// Connections of the old process end cleanly (WebSocket between two
// messages, HTTP/3 after GOAWAY), every new process sends MAINPID=, runs
// unprivileged (no_new_privs) and reads the root-only key from the
// handed-over bytes.
func TestUpgradeSteered(t *testing.T) {
	const grace = 5 * time.Second
	s, exe := upgradeSite(t, true, "5s", 2)
	p := start(t, asRoot(exe, s.config), startOptions{Outlived: true})
	p.waitReady()
	c := newChain(t, p, exe)
	if n := len(udpInodes(t, 443)); n != 4 {
		t.Fatalf("%d UDP sockets on 127.0.0.1:443, want 2 shards in each of 2 generations", n)
	}
	upgradeThrice(t, s, c, grace, true)
	if n := len(udpInodes(t, 443)); n != 4 {
		t.Errorf("%d UDP sockets on 127.0.0.1:443 after the upgrades, want the same 4", n)
	}
	// The first process bound its sockets before the drop; the new ones
	// inherited them.
	for _, src := range []string{`socket="bound before drop"`, "socket=inherited"} {
		if !logHas(p.stderr.String(), "msg=listening", "network=udp", src) {
			t.Errorf("no listening line says %s:\n%s", src, p.stderr.String())
		}
	}
	c.stop()
}

// TestUpgradeSocketActivation: with the sockets passed by socket
// activation and no privilege at all (no steering program: one UDP
// socket, which both processes read during an upgrade, the new one
// passing the old one's datagrams on), three upgrades in a row lose no
// request either.
func TestUpgradeSocketActivation(t *testing.T) {
	const grace = 5 * time.Second
	s, exe := upgradeSite(t, false, "5s", 1)
	files, env := activation(t, tcp80, tcp443, udp443)
	p := start(t, asNobody(t, exe, s.config), startOptions{Env: env, ExtraFiles: files, Outlived: true})
	closeFiles(files)
	p.waitReady()
	c := newChain(t, p, exe)
	upgradeThrice(t, s, c, grace, true)
	if n := len(udpInodes(t, 443)); n != 1 {
		t.Errorf("%d UDP sockets on 127.0.0.1:443, want the one passed", n)
	}
	if !logHas(p.stderr.String(), "msg=listening", "network=udp", "socket=systemd") {
		t.Errorf("the new processes do not say the UDP socket came from systemd:\n%s", p.stderr.String())
	}
	c.stop()
}

// TestUpgradeLayer4: a tcp connection open during an upgrade goes on
// through the old process until the grace period ends, while new
// connections reach the new one; datagrams to a udp frontend keep being
// answered (a client retries one whose answer was lost when the old
// process's flow ended).
func TestUpgradeLayer4(t *testing.T) {
	const grace = 2 * time.Second
	echo := startUp(t, "e1", "127.0.0.1:0", "-tcp-echo")
	dns := startUp(t, "d1", "127.0.0.1:0", "-udp-echo")
	dir := sharedDir(t)
	cfg := dir + "/portcullis.yaml"
	writeFile(t, cfg, l4Global+fmt.Sprintf(`frontends:
  echo:
    mode: tcp
    bind:
      - address: 127.0.0.1:7000
    routes:
      - backend: echo
  dns:
    mode: udp
    bind:
      - address: 127.0.0.1:7053
    routes:
      - backend: dns
backends:
  echo:
    servers:
      - address: %s
  dns:
    servers:
      - address: %s
`, echo.addr, dns.addr), 0o644)
	exe := executableDir(t, defaultBinary(t))
	p := start(t, asRoot(exe, cfg), startOptions{Outlived: true})
	p.waitReady()
	c := newChain(t, p, exe)

	held, err := net.DialTimeout("tcp", "127.0.0.1:7000", scaled(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	exchange := func(msg string) error {
		held.SetDeadline(time.Now().Add(scaled(2 * time.Second)))
		if _, err := held.Write([]byte(msg)); err != nil {
			return err
		}
		got := make([]byte, len(msg))
		_, err := io.ReadFull(held, got)
		if err == nil && string(got) != msg {
			err = fmt.Errorf("sent %q, got %q", msg, got)
		}
		return err
	}
	greeting := make([]byte, 3)
	if _, err := io.ReadFull(held, greeting); err != nil || string(greeting) != "e1\n" {
		t.Fatalf("greeting %q, %v", greeting, err)
	}
	if err := exchange("before\n"); err != nil {
		t.Fatal(err)
	}

	var datagrams, unanswered atomic.Int64
	var firstLost atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7053}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			payload := fmt.Sprintf("q%d", i)
			answered := false
			for try := 0; try < 5 && !answered; try++ {
				reply, _, err := udpExchange(conn, dst, payload, 200*time.Millisecond)
				answered = err == nil && reply == "d1:"+payload
			}
			datagrams.Add(1)
			if !answered {
				unanswered.Add(1)
				firstLost.CompareAndSwap(nil, payload)
			}
		}
	})

	installBinary(t, binary(t, variantNext), exe)
	old, _ := c.signalUpgrade()
	upgraded := time.Now()
	// The old process relays the connection it holds while it drains.
	for i := 0; time.Since(upgraded) < grace/2; i++ {
		if err := exchange(fmt.Sprintf("during %d\n", i)); err != nil {
			t.Fatalf("the connection opened before the upgrade, %v after it: %v", time.Since(upgraded).Round(time.Millisecond), err)
		}
		if name, err := echoOnce("127.0.0.1:7000", []byte("new connection")); err != nil || name != "e1" {
			t.Errorf("a new connection during the upgrade: %q, %v", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if old.exited() {
		t.Errorf("the old process exited while it still relayed a connection")
	}
	// At the end of the grace period it closes the connection and exits.
	select {
	case <-old.done:
	case <-time.After(grace + scaled(2*time.Second)):
		t.Fatalf("the old process still runs %v after the upgrade (grace %v)", time.Since(upgraded), grace)
	}
	held.SetReadDeadline(time.Now().Add(scaled(2 * time.Second)))
	if n, err := held.Read(make([]byte, 16)); err == nil {
		t.Errorf("the old connection is still open after the old process exited (read %d bytes)", n)
	}
	if name, err := echoOnce("127.0.0.1:7000", []byte("after")); err != nil || name != "e1" {
		t.Errorf("a new connection after the upgrade: %q, %v", name, err)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if n := unanswered.Load(); n > 0 || datagrams.Load() == 0 {
		t.Errorf("%d of %d datagrams were never answered (5 tries each); the first: %v", n, datagrams.Load(), firstLost.Load())
	}
	t.Logf("%d datagrams answered across the upgrade", datagrams.Load())
	c.stop()
}

// TestUpgradeFailure: an upgrade whose new executable does not start (a
// script that exits 1) is refused: the old process says why (log and
// STATUS=) and keeps serving. An upgrade while the process the previous
// one replaced still drains is refused too. Then an upgrade works.
func TestUpgradeFailure(t *testing.T) {
	const grace = 5 * time.Second
	s, exe := upgradeSite(t, true, "5s", 2)
	p := start(t, asRoot(exe, s.config), startOptions{Outlived: true})
	p.waitReady()
	c := newChain(t, p, exe)
	h3 := clientFor(t, s, "HTTP/3", 1)

	writeFile(t, exe+".new", "#!/bin/sh\necho 'this build is broken' >&2\nexit 1\n", 0o755)
	if err := unix.Rename(exe+".new", exe); err != nil {
		t.Fatal(err)
	}
	mark := len(p.stderr.String())
	p.signal(unix.SIGUSR2)
	if msg := c.notification("STATUS=upgrade failed, still serving: ", scaled(10*time.Second)); msg == "" {
		t.Fatalf("no STATUS=upgrade failed notification; notifications: %q", p.notify.all())
	}
	line := c.waitOutput(mark, scaled(time.Second), "level=ERROR", "upgrade failed; this process keeps serving")
	if !strings.Contains(line, "exited before it was ready") {
		t.Errorf("the log does not say why: %s", line)
	}
	c.waitOutput(mark, scaled(time.Second), "this build is broken")
	for _, m := range p.notify.all() {
		if strings.Contains(m, "MAINPID=") {
			t.Errorf("a MAINPID= notification after a failed upgrade: %q", m)
		}
	}
	if p.exited() {
		t.Fatalf("the process exited after a failed upgrade: %s", p.describe())
	}
	if err := checkBody(get(h3, "https://127.0.0.1/after-failure")); err != nil {
		t.Errorf("HTTP/3 after the failed upgrade: %v", err)
	}
	if r := curl(t, s, "--http1.1", "http://127.0.0.1/after-failure"); r.status != 200 {
		t.Errorf("HTTP/1.1 after the failed upgrade: %v", r)
	}

	// A slow request keeps the old process draining after the next
	// upgrade: a second upgrade meanwhile is refused.
	installBinary(t, binary(t, variantNext), exe)
	slow := make(chan result, 1)
	go func() { slow <- get(clientFor(t, s, "HTTP/2", 1), "https://127.0.0.1/slow?ms=1500") }()
	time.Sleep(100 * time.Millisecond)
	first, second := c.signalUpgrade()
	mark = len(p.stderr.String())
	unix.Kill(second.pid, unix.SIGUSR2)
	if msg := c.notification("STATUS=upgrade refused, still serving: an upgrade is in progress", scaled(5*time.Second)); msg == "" {
		t.Errorf("no STATUS=upgrade refused notification while the old process drains; log:\n%s", p.stderr.String()[mark:])
	}
	if first.exited() {
		t.Errorf("the old process exited before its slow request was answered")
	}
	if r := <-slow; checkBody(r) != nil {
		t.Errorf("the slow request in flight during the upgrade: %v", r)
	}
	select {
	case <-first.done:
	case <-time.After(grace):
		t.Fatalf("the old process still runs after its last request")
	}
	installBinary(t, defaultBinary(t), exe)
	c.upgrade(grace, true)
	if err := checkBody(get(h3, "https://127.0.0.1/after-upgrade")); err != nil {
		t.Errorf("HTTP/3 after the upgrade: %v", err)
	}
	c.stop()
}

// TestUpgradeDuringReloadDrain: an upgrade while a listener that a reload
// removed still drains is fine: that listener stays with the old process,
// which answers its request in flight before it exits, and is not handed
// over. The new process then reloads the file from disk like any other.
func TestUpgradeDuringReloadDrain(t *testing.T) {
	const grace = 5 * time.Second
	up := echoUpstream(t)
	dir := sharedDir(t)
	cfg := dir + "/portcullis.yaml"
	config := func(binds ...string) string {
		var b strings.Builder
		b.WriteString("global:\n  user: nobody\n  group: nogroup\n  grace: 5s\nfrontends:\n  web:\n    bind:\n")
		for _, a := range binds {
			fmt.Fprintf(&b, "      - address: %s\n", a)
		}
		fmt.Fprintf(&b, "    routes:\n      - backend: app\nbackends:\n  app:\n    servers:\n      - address: %s\n", up.addr)
		return b.String()
	}
	writeFile(t, cfg, config("127.0.0.1:80", "127.0.0.1:8081"), 0o644)
	exe := executableDir(t, defaultBinary(t))
	p := start(t, asRoot(exe, cfg), startOptions{Outlived: true})
	p.waitReady()
	c := newChain(t, p, exe)
	client := &http.Client{Timeout: scaled(10 * time.Second)}

	slow := make(chan result, 1)
	go func() { slow <- get(client, "http://127.0.0.1:8081/slow?ms=2000") }()
	time.Sleep(200 * time.Millisecond)
	writeFile(t, cfg, config("127.0.0.1:80"), 0o644)
	p.signal(unix.SIGHUP)
	if c.notification("STATUS=serving the reloaded configuration", scaled(5*time.Second)) == "" {
		t.Fatalf("the reload removing 127.0.0.1:8081 was not applied; log:\n%s", p.stderr.String())
	}
	checkRefused(t, "127.0.0.1:8081", "after the reload")

	installBinary(t, binary(t, variantNext), exe)
	old, new := c.upgrade(grace, true)
	if r := <-slow; checkBody(r) != nil {
		t.Errorf("the request in flight on the listener the reload removed: %v", r)
	}
	if took := old.exitedAt.Sub(old.signaled); took < time.Second {
		t.Errorf("the old process exited %v after the upgrade began, before its draining listener's request was done", took)
	}
	checkRefused(t, "127.0.0.1:8081", "after the upgrade")
	if err := checkBody(get(client, "http://127.0.0.1/after-upgrade")); err != nil {
		t.Errorf("after the upgrade: %v", err)
	}

	writeFile(t, cfg, config("127.0.0.1:80", "127.0.0.1:8082"), 0o644)
	unix.Kill(new.pid, unix.SIGHUP)
	if c.notification("STATUS=serving the reloaded configuration", scaled(5*time.Second)) == "" {
		t.Fatalf("the new process did not apply a reload; log:\n%s", p.stderr.String())
	}
	if err := checkBody(get(client, "http://127.0.0.1:8082/reloaded")); err != nil {
		t.Errorf("a listener the new process's reload added: %v", err)
	}
	c.stop()
}
