package integration

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tcpEchoConfig is a tcp frontend "echo" on addr relaying to backend
// "echo" with settings (YAML lines indented by four spaces) and servers.
func tcpEchoConfig(addr, settings string, servers ...string) string {
	var b strings.Builder
	b.WriteString(l4Global)
	fmt.Fprintf(&b, `frontends:
  echo:
    mode: tcp
    bind:
      - address: %s
    routes:
      - backend: echo
backends:
  echo:
`, addr)
	b.WriteString(settings)
	b.WriteString("    servers:\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "      - address: %s\n", s)
	}
	return b.String()
}

// echoOnce opens a connection to addr, sends payload, and checks that the
// -tcp-echo server greets with its name and echoes the payload. It
// returns the server's name.
func echoOnce(addr string, payload []byte) (string, error) {
	c, err := net.DialTimeout("tcp", addr, scaled(5*time.Second))
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(scaled(10 * time.Second)))
	if _, err := c.Write(payload); err != nil {
		return "", err
	}
	// The greeting is "NAME\n" with a name of two characters (e1, e2, e3).
	got := make([]byte, 3+len(payload))
	if n, err := io.ReadFull(c, got); err != nil {
		return "", fmt.Errorf("read %d of %d bytes: %v", n, len(got), err)
	}
	name, echo := string(got[:2]), got[3:]
	if got[2] != '\n' || !bytes.Equal(echo, payload) {
		return name, fmt.Errorf("got %q, want a greeting and the %d bytes sent", got[:min(len(got), 40)], len(payload))
	}
	return name, nil
}

// TestL4TCPBalanceFailover relays 1,000 connections, 20 at a time,
// through a tcp frontend to three echo servers, each its own process, with
// round_robin and a tcp health check every 200ms. After the 300th
// connection it kills one server between connections: every connection
// must still get its echo (a connect refused by the dead server is
// retried on another), the three servers must share the connections
// evenly before the kill and the two others after it, and the log must
// show the retries and the dead server marked down once.
func TestL4TCPBalanceFailover(t *testing.T) {
	const (
		conns  = 1000
		conc   = 20
		killAt = 300
	)
	servers := []*upProc{
		startUp(t, "e1", "127.0.0.1:0", "-tcp-echo"),
		startUp(t, "e2", "127.0.0.1:0", "-tcp-echo"),
		startUp(t, "e3", "127.0.0.1:0", "-tcp-echo"),
	}
	victim := servers[1]
	const front = "127.0.0.1:7000"
	_, p := startL4(t, tcpEchoConfig(front, "    health_check: {interval: 200ms}\n",
		servers[0].addr, servers[1].addr, servers[2].addr), nil)
	mark := len(p.stderr.String())

	// Connections hold gate for reading while they run; the kill holds it
	// for writing, so that it falls between connections: a server killed
	// in the middle of a connection cuts it, which no proxy can undo.
	var gate sync.RWMutex
	var killed atomic.Bool
	type outcome struct {
		server     string
		afterKill  bool
		err        error
		connection int
	}
	results := make([]outcome, conns)
	var next, finished atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(next.Load()), 7))
			for {
				i := int(next.Add(1)) - 1
				if i >= conns {
					return
				}
				payload := fmt.Appendf(nil, "connection %d ", i)
				for range 100 + rng.IntN(2000) {
					payload = append(payload, byte('a'+rng.IntN(26)))
				}
				gate.RLock()
				after := killed.Load()
				name, err := echoOnce(front, payload)
				gate.RUnlock()
				results[i] = outcome{server: name, afterKill: after, err: err, connection: i}
				if finished.Add(1) == killAt {
					gate.Lock()
					victim.kill()
					killed.Store(true)
					gate.Unlock()
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)

	before, after := map[string]int{}, map[string]int{}
	var nBefore, nAfter, failed int
	for _, r := range results {
		if r.err != nil {
			if failed++; failed <= 5 {
				t.Errorf("connection %d (after the kill: %v): %v", r.connection, r.afterKill, r.err)
			}
			continue
		}
		if r.afterKill {
			after[r.server]++
			nAfter++
		} else {
			before[r.server]++
			nBefore++
		}
	}
	t.Logf("%d connections in %v; before the kill of %s: %v; after: %v", conns, took.Round(time.Millisecond), victim.name, before, after)
	if failed > 0 {
		t.Fatalf("%d of %d connections failed, want none", failed, conns)
	}
	if nBefore < killAt {
		t.Fatalf("%d connections before the kill, want at least %d", nBefore, killAt)
	}
	for _, s := range servers {
		if share := float64(before[s.name]) / float64(nBefore); share < 0.25 || share > 0.42 {
			t.Errorf("before the kill %s took %.0f%% of the connections (%v), want about a third with round_robin", s.name, 100*share, before)
		}
		if s == victim {
			if after[s.name] != 0 {
				t.Errorf("%s answered %d connections after it was killed", s.name, after[s.name])
			}
			continue
		}
		if share := float64(after[s.name]) / float64(nAfter); share < 0.40 || share > 0.60 {
			t.Errorf("after the kill %s took %.0f%% of the connections (%v), want about half", s.name, 100*share, after)
		}
	}

	// The log: connects refused by the dead server were retried on
	// another, it was marked down once, and no connection was given up.
	down := waitLogWith(t, p, mark, scaled(3*time.Second), `msg="server down"`, "server="+victim.addr)
	retries := logsWith(p, mark, `msg="retrying on another server"`, "failed="+victim.addr)
	if len(retries) == 0 {
		t.Errorf("no %q line names %s: were the connects to the dead server retried?", "retrying on another server", victim.addr)
	}
	if downs := logsWith(p, mark, `msg="server down"`); len(downs) != 1 {
		t.Errorf("want one \"server down\" line (for %s), got:\n%s", victim.addr, strings.Join(downs, "\n"))
	}
	if gaveUp := logsWith(p, mark, "closing connection"); len(gaveUp) > 0 {
		t.Errorf("portcullis closed connections it could not relay:\n%s", strings.Join(gaveUp, "\n"))
	}
	t.Logf("%d connects retried away from %s; %s", len(retries), victim.name, down)
}

// TestL4TCPHalfClose sends 1 MiB through a tcp frontend to a server that
// answers only once it has read the client's end of stream (the bytes
// reversed), and shuts down its own sending side: the end of stream must
// reach the server while the connection stays open the other way, and the
// whole 1 MiB answer must come back, followed by the end of stream.
func TestL4TCPHalfClose(t *testing.T) {
	rev := startUp(t, "rev", "127.0.0.1:0", "-tcp-reverse")
	const front = "127.0.0.1:7001"
	startL4(t, tcpEchoConfig(front, "", rev.addr), nil)

	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{1, 1 << 20} {
		payload := make([]byte, size)
		for i := range payload {
			payload[i] = byte(rng.UintN(256))
		}
		want := slices.Clone(payload)
		slices.Reverse(want)

		c, err := net.DialTimeout("tcp", front, scaled(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(scaled(10 * time.Second)))
		if _, err := c.Write(payload); err != nil {
			t.Fatalf("%d bytes: write: %v", size, err)
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatalf("%d bytes: CloseWrite: %v", size, err)
		}
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Errorf("%d bytes: after %d bytes of the answer: %v", size, len(got), err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%d bytes sent, then CloseWrite: got %d bytes back, want the %d bytes reversed (equal: %v)", size, len(got), len(want), len(got) == len(want))
		}
	}
}
