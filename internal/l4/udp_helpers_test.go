package l4

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/testutil"
	"github.com/portcullis/portcullis/internal/upstream"
)

// udpBound turns a hang into a failure; no test waits for it to pass.
func udpBound() time.Duration { return testutil.Scaled(10 * time.Second) }

// udpTestServer answers each datagram with "<name>:<payload>", a payload
// "stream:N" with N datagrams "<name>:stream:i", 40 ms apart, and a
// payload "quiet…" with nothing (as a syslog server).
type udpTestServer struct {
	name string
	pc   *net.UDPConn
	addr string
}

func newUDPTestServer(t testing.TB, name string) *udpTestServer {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &udpTestServer{name: name, pc: pc, addr: pc.LocalAddr().String()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		out := make([]byte, 0, 64<<10)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			p := buf[:n]
			if bytes.HasPrefix(p, []byte("quiet")) {
				continue
			}
			if k, ok := bytes.CutPrefix(p, []byte("stream:")); ok {
				count, _ := strconv.Atoi(string(k))
				go func() {
					for i := range count {
						if _, err := pc.WriteToUDPAddrPort(fmt.Appendf(nil, "%s:stream:%d", name, i), from); err != nil {
							return
						}
						time.Sleep(40 * time.Millisecond)
					}
				}()
				continue
			}
			out = append(append(append(out[:0], name...), ':'), p...)
			if _, err := pc.WriteToUDPAddrPort(out, from); err != nil && errors.Is(err, net.ErrClosed) {
				return
			}
		}
	}()
	t.Cleanup(func() { s.close(); <-done })
	return s
}

// close closes the server's socket: its port answers ICMP port unreachable.
func (s *udpTestServer) close() { s.pc.Close() }

// newUDPTestBackend is a backend of addrs balanced by algorithm, with
// passive health that marks a server down at its first failure.
func newUDPTestBackend(t testing.TB, algorithm balance.Algorithm, addrs ...string) *testBackend {
	t.Helper()
	return newBackend(backendOptions{Options: upstream.Options{Algorithm: algorithm}, downOnFailure: true}, addrs...)
}

// udpWaitFor polls cond until it holds, failing the test after udpBound.
func udpWaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(udpBound())
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func udpTestLog() (*slog.Logger, *testutil.Buffer) {
	buf := new(testutil.Buffer)
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// udpLogCount counts the log lines that contain every part.
func udpLogCount(log *testutil.Buffer, parts ...string) int {
	n := 0
lines:
	for _, l := range strings.Split(log.String(), "\n") {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue lines
			}
		}
		if l != "" {
			n++
		}
	}
	return n
}

// startUDP serves u on a socket bound to address and returns the socket.
// Cleanup closes the socket, shuts u down and checks that Serve returned
// nil.
func startUDP(t testing.TB, u *UDP, address string) *net.UDPConn {
	t.Helper()
	la, err := net.ResolveUDPAddr("udp", address)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp", la)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- u.Serve(pc) }()
	t.Cleanup(func() {
		pc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), udpBound())
		defer cancel()
		if err := u.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-ctx.Done():
			t.Error("Serve did not return after its socket closed")
		}
	})
	return pc
}

// udpTestClient is a client socket, unconnected so that each reply's
// source address can be checked.
type udpTestClient struct {
	t  testing.TB
	pc *net.UDPConn
	to netip.AddrPort
}

func newUDPTestClient(t testing.TB, to netip.AddrPort) *udpTestClient {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return &udpTestClient{t: t, pc: pc, to: to}
}

func (c *udpTestClient) send(payload string) {
	c.t.Helper()
	if _, err := c.pc.WriteToUDPAddrPort([]byte(payload), c.to); err != nil {
		c.t.Fatal(err)
	}
}

// recv returns the next reply and where it came from, or an error after
// wait.
func (c *udpTestClient) recv(wait time.Duration) (string, netip.AddrPort, error) {
	buf := make([]byte, 64<<10)
	c.pc.SetReadDeadline(time.Now().Add(wait))
	n, from, err := c.pc.ReadFromUDPAddrPort(buf)
	return string(buf[:n]), netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), err
}

// udpShort quotes s, cut to a readable length for failure messages.
func udpShort(s string) string {
	if len(s) > 40 {
		return fmt.Sprintf("%q… (%d bytes)", s[:40], len(s))
	}
	return strconv.Quote(s)
}

// reply sends payload and returns the name of the server that answered,
// checking that the answer came from the frontend's address.
func (c *udpTestClient) reply(payload string) string {
	c.t.Helper()
	c.send(payload)
	got, from, err := c.recv(udpBound())
	if err != nil {
		c.t.Fatalf("reply to %s: %v", udpShort(payload), err)
	}
	if from != c.to {
		c.t.Fatalf("reply to %s came from %s, want the frontend's address %s", udpShort(payload), from, c.to)
	}
	name, p, _ := strings.Cut(got, ":")
	if p != payload {
		c.t.Fatalf("reply to %s: %s", udpShort(payload), udpShort(got))
	}
	return name
}

// ask retries payload (the first datagrams of a new flow may be lost, as
// UDP allows) until a reply arrives, and returns the server's name.
func (c *udpTestClient) ask(payload string) string {
	c.t.Helper()
	deadline := time.Now().Add(udpBound())
	for time.Now().Before(deadline) {
		c.send(payload)
		got, from, err := c.recv(100 * time.Millisecond)
		if err != nil {
			continue
		}
		name, p, _ := strings.Cut(got, ":")
		if from != c.to || p != payload {
			c.t.Fatalf("reply to %q: %q from %s", payload, got, from)
		}
		return name
	}
	c.t.Fatalf("no reply to %q", payload)
	return ""
}

func addrPort(t testing.TB, pc *net.UDPConn) netip.AddrPort {
	t.Helper()
	ap := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// udpOpenFiles counts the process's open file descriptors.
func udpOpenFiles(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(ents)
}

// udpGoroutines returns the stacks of goroutines running the relay's code.
func udpGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(strings.ToLower(g), "internal/l4.(*udp") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
