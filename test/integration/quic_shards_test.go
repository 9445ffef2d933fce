package integration

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Connections per run of the rebinding tests, and requests after the
// rebinding on each.
const (
	rebindConns = 50
	rebindAfter = 3
)

// startSteered starts portcullis as root, dropping to nobody, with four
// steered shards on 127.0.0.1:443, and checks that it says so, that it
// bound eight sockets (four per generation), and that it holds no
// capability after the drop.
func startSteered(t *testing.T) (*site, *proc) {
	t.Helper()
	s := quicSite(t, true, 4)
	p := start(t, asRoot(defaultBinary(t), s.config), startOptions{})
	p.waitReady()
	// READY=1 may arrive before the log lines written ahead of it.
	line := waitLogWith(t, p, 0, scaled(5*time.Second), "msg=listening", "network=udp", "address=127.0.0.1:443")
	if !strings.Contains(line, " shards=4 ") || !strings.Contains(line, `steering="by connection ID`) {
		t.Fatalf("the listening line for udp 127.0.0.1:443 does not say shards=4 with steering: %s", line)
	}
	if log := p.stderr.String(); strings.Contains(log, "one shard instead of several") {
		t.Errorf("it fell back to one shard although started as root:\n%s", log)
	}
	// The steering program runs in the kernel; the process keeps nothing.
	checkUnprivileged(t, p.pid(), true)
	inodes := udpInodes(t, 443)
	if held := socketFDs(t, p.pid(), inodes); len(inodes) != 8 || len(held) != 8 {
		t.Fatalf("%d UDP sockets on 127.0.0.1:443, %d of them held by portcullis; want 4 shards in each of 2 socket sets (generations)", len(inodes), len(held))
	}
	return s, p
}

// TestQUICShardsNATRebinding: HTTP/3 clients whose NAT moves them to a new
// source port in the middle of their connections keep their connections
// with four shards, because the steering program sends their packets to
// the shard that owns the connection by connection ID, whatever the new
// 4-tuple hashes to. With the program detached from outside the process
// (unsteered), most of them are lost: that proves it is the steering that
// keeps them, and that the run would catch its absence.
func TestQUICShardsNATRebinding(t *testing.T) {
	s, p := startSteered(t)

	t.Run("steered", func(t *testing.T) {
		errs := rebindRun(t, s, "steered", rebindConns, rebindAfter, false)
		if n, first := failures(errs); n > 0 {
			t.Errorf("%d of %d connections failed after a NAT rebinding with steering; want none:%s", n, rebindConns, first)
		}
	})

	t.Run("unsteered", func(t *testing.T) {
		detachSteering(t, p.pid())
		// The kernel now hashes over both socket sets, and nobody reads
		// the spare one: about half of the handshakes fail (left out).
		defer shortDials()()
		errs := rebindRun(t, s, "unsteered", rebindConns, rebindAfter, true)
		n, first := failures(errs)
		t.Logf("without steering, %d of the %d connections established failed after the rebinding (about 7 in 8 expected with 4 shards in each of 2 sets):%s", n, len(errs), first)
		// A rebound connection hashes to any of the 8 sockets: it fails
		// unless it lands on its own, with probability 7/8.
		if len(errs) < 10 || n < len(errs)/2 {
			t.Errorf("%d of the %d connections established failed after the rebinding without steering; want at least 10 established and half of them failing (about 7 in 8): the test no longer shows what steering does", n, len(errs))
		}
	})
	p.stop()
}

// shortDials shortens the QUIC handshake timeout of the test's clients
// until the function it returns is called.
func shortDials() func() {
	old := quicDialTimeout
	quicDialTimeout = scaled(time.Second)
	return func() { quicDialTimeout = old }
}

// TestQUICShardsMigration: clients that migrate their connections to a
// new local socket (RFC 9000, section 9: probe the new path, then switch)
// keep them, several times over, with four steered shards. The new path
// uses a spare connection ID from a NEW_CONNECTION_ID frame, so this also
// checks that those carry the shard byte. Unsteered, migrations fail.
func TestQUICShardsMigration(t *testing.T) {
	const conns, moves = 10, 3
	s, p := startSteered(t)

	// run opens conns connections and migrates each moves times, with a
	// request after each move; it returns the first failure of each.
	run := func(name string) []error {
		errs := make([]error, conns)
		var wg sync.WaitGroup
		for i := range conns {
			wg.Go(func() {
				c, err := dialH3(s, quicTarget)
				if err != nil {
					errs[i] = err
					return
				}
				defer c.close()
				if err := c.get(fmt.Sprintf("/%s/%d/start", name, i)); err != nil {
					t.Errorf("connection %d before migrating: %v", i, err)
					return
				}
				for m := range moves {
					local, err := c.migrate()
					if err == nil {
						err = c.get(fmt.Sprintf("/%s/%d/moved/%d", name, i, m+1))
					}
					if got := c.conn.LocalAddr().String(); err == nil && got != local {
						err = fmt.Errorf("the request went from %s, want the new socket %s", got, local)
					}
					if err != nil {
						errs[i] = fmt.Errorf("connection %d, migration %d: %w", i, m+1, err)
						return
					}
				}
			})
		}
		wg.Wait()
		return errs
	}

	t.Run("steered", func(t *testing.T) {
		if n, first := failures(run("steered")); n > 0 {
			t.Errorf("%d of %d connections failed to migrate %d times with steering; want none:%s", n, conns, moves, first)
		}
	})

	t.Run("unsteered", func(t *testing.T) {
		detachSteering(t, p.pid())
		defer shortDials()() // half of the handshakes reach the spare socket set
		n, first := failures(run("unsteered"))
		t.Logf("without steering, %d of %d connections failed within %d migrations:%s", n, conns, moves, first)
		// Each move lands on the owning shard with probability 1/4: a
		// connection survives 3 moves with probability 1/64.
		if n < conns/2 {
			t.Errorf("only %d of %d connections failed to migrate without steering; want at least %d", n, conns, conns/2)
		}
	})
	p.stop()
}

// TestQUICShardsUnprivileged: started as nobody with only
// CAP_NET_BIND_SERVICE (AmbientCapabilities=), portcullis cannot load the
// steering program, so it serves HTTP/3 on one shard instead of the four
// configured, says so once with the reason and the remedy, and binds one
// UDP socket only. One shard is fully functional, NAT rebinding included.
func TestQUICShardsUnprivileged(t *testing.T) {
	s := quicSite(t, false, 4)
	p := start(t, asAmbient(t, defaultBinary(t), s.config), startOptions{})
	p.waitReady()

	listening := waitLogWith(t, p, 0, scaled(5*time.Second), "msg=listening", "network=udp", "address=127.0.0.1:443")
	if strings.Contains(listening, "shards=") {
		t.Errorf("the listening line for udp 127.0.0.1:443 names shards: %s", listening)
	}
	log := p.stderr.String() // the warning comes before the listening line
	var warns []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "one shard instead of several") {
			warns = append(warns, l)
		}
	}
	if len(warns) != 1 {
		t.Errorf("%d lines say it falls back to one shard; want exactly one:\n%s", len(warns), log)
	} else {
		for _, want := range []string{"level=WARN", "address=127.0.0.1:443", "shards_wanted=4", "CAP_BPF", "start as root", "shards: 1"} {
			if !strings.Contains(warns[0], want) {
				t.Errorf("the one-shard warning lacks %q: %s", want, warns[0])
			}
		}
		if !regexp.MustCompile(`reason=("[^"]+"|[^" ]+)`).MatchString(warns[0]) {
			t.Errorf("the one-shard warning gives no reason: %s", warns[0])
		}
	}
	if n := len(udpInodes(t, 443)); n != 1 {
		t.Errorf("%d UDP sockets on 127.0.0.1:443, want 1", n)
	}
	checkUnprivileged(t, p.pid(), false)

	if r := h3Get(t, s, "https://localhost/one-shard"); r.status != 200 || !strings.Contains(r.body, "\npath: /one-shard\n") {
		t.Errorf("HTTP/3 on one shard: want 200 from the upstream, got:\n%v", r)
	}
	if n, first := failures(rebindRun(t, s, "one-shard", 10, 2, false)); n > 0 {
		t.Errorf("%d of 10 connections failed after a NAT rebinding on one shard; want none:%s", n, first)
	}
	p.stop()
}

// TestQUICShardsSocketActivation: one UDP socket passed by systemd is one
// shard, whatever quic shards says: no steering is needed, none is
// attempted (the process has no privilege anyway), and nothing is
// complained about. It serves HTTP/3 on that socket.
func TestQUICShardsSocketActivation(t *testing.T) {
	s := quicSite(t, false, 4)
	files, env := activation(t, tcp443, udp443)
	p := start(t, asNobody(t, defaultBinary(t), s.config), startOptions{Env: env, ExtraFiles: files})
	closeFiles(files)
	p.waitReady()

	if r := h3Get(t, s, "https://localhost/activated"); r.status != 200 || !strings.Contains(r.body, "\npath: /activated\n") {
		t.Errorf("HTTP/3 on the passed socket: want 200 from the upstream, got:\n%v", r)
	}
	if n := len(udpInodes(t, 443)); n != 1 {
		t.Errorf("%d UDP sockets on 127.0.0.1:443, want the 1 passed", n)
	}
	checkUnprivileged(t, p.pid(), false)
	p.stop() // after the exit, stderr is complete
	log := p.stderr.String()
	if !logHas(log, "msg=listening", "network=udp", "address=127.0.0.1:443", "socket=systemd") || logHas(log, "msg=listening", "network=udp", "shards=") {
		t.Errorf("want one listening line for the passed udp 127.0.0.1:443 (socket=systemd), without shards:\n%s", log)
	}
	for _, bad := range []string{"level=WARN", "level=ERROR", "shard"} {
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, bad) && !strings.Contains(l, "msg=listening") {
				t.Errorf("unexpected log line (one passed socket is one shard, nothing to say): %s", l)
			}
		}
	}
}
