package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// startLineEcho starts an upstream that switches to an "echo" protocol:
// every line the client sends comes back, delay later.
func startLineEcho(t *testing.T, delay time.Duration) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			time.Sleep(delay)
			brw.WriteString(line)
			brw.Flush()
		}
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// tunnelFrontend proxies to the echo upstream at addr, registering
// tunnels with tu.
func tunnelFrontend(t *testing.T, addr string, tu *Tunnels) string {
	t.Helper()
	be := newTestBackend("echo", []string{addr}, testOptions{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv := httptest.NewUnstartedServer(be)
	srv.Config.ConnContext = func(ctx context.Context, _ net.Conn) context.Context { return WithTunnels(ctx, tu) }
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// dialTunnel opens an upgraded connection through the frontend.
func dialTunnel(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(scaled(10 * time.Second)))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	return c, br
}

// TestTunnelsDrainAtQuietMoment: a client that sends a line 50 ms after
// the echo of the previous one, which the server answers 60 ms late, sees
// its tunnel end between two lines: every line it sent was answered, and
// the next read ends with EOF.
func TestTunnelsDrainAtQuietMoment(t *testing.T) {
	tu := &Tunnels{}
	addr := tunnelFrontend(t, startLineEcho(t, 60*time.Millisecond), tu)
	c, br := dialTunnel(t, addr)
	eventually(t, "the tunnel registered", func() bool { return tu.Len() == 1 })

	ended := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			msg := fmt.Sprintf("line %d\n", i)
			if _, err := io.WriteString(c, msg); err != nil {
				ended <- fmt.Errorf("write %q: %w", msg, err)
				return
			}
			got, err := br.ReadString('\n')
			if err != nil || got != msg {
				ended <- fmt.Errorf("line %d: echo %q, %v: a message in flight was lost", i, got, err)
				return
			}
			// Between messages the client notices the end of the tunnel.
			c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if _, err := br.Peek(1); errors.Is(err, io.EOF) {
				ended <- nil
				return
			}
			c.SetReadDeadline(time.Now().Add(scaled(5 * time.Second)))
		}
	}()
	time.Sleep(250 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), scaled(5*time.Second))
	defer cancel()
	start := time.Now()
	if err := tu.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("Drain took %v, want the next quiet moment (every 110 ms)", took)
	}
	select {
	case err := <-ended:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(scaled(5 * time.Second)):
		t.Error("the client did not see its tunnel end")
	}
	if n := tu.Len(); n != 0 {
		t.Errorf("%d tunnels left after Drain", n)
	}
}

// TestTunnelsDrainDeadline: a tunnel that never falls quiet (the client
// sends all the time) is closed when the context ends.
func TestTunnelsDrainDeadline(t *testing.T) {
	tu := &Tunnels{QuietAfterReply: time.Hour, QuietIdle: time.Hour}
	addr := tunnelFrontend(t, startLineEcho(t, 0), tu)
	c, br := dialTunnel(t, addr)
	eventually(t, "the tunnel registered", func() bool { return tu.Len() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := tu.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Drain = %v, want the context's deadline", err)
	}
	io.WriteString(c, "after\n")
	if line, err := br.ReadString('\n'); err == nil {
		t.Errorf("the tunnel still echoes %q after Drain gave up", strings.TrimSpace(line))
	}
}
