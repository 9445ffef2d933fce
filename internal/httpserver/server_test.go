package httpserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
)

// start serves a Server for c on a loopback listener until the test
// ends, and returns the Server, its address and Serve's result.
func start(t *testing.T, c Config) (*Server, string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	s := New(c)
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(s.Close)
	return s, ln.Addr().String(), served
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testutil.Scaled(5 * time.Second))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestServerLifecycle serves a request, counts a connection that has not
// sent one yet as Fresh, and shuts down.
func TestServerLifecycle(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	s, addr, served := start(t, Config{Frontend: "web", Address: "test", Handler: h})

	silent, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	waitFor(t, "the silent connection counted as fresh", func() bool { return s.Fresh() == 1 })

	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 2))
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("response %d %q, want 200 ok", resp.StatusCode, body)
	}
	if n := s.Fresh(); n != 1 {
		t.Errorf("Fresh() = %d once the second connection made a request, want 1", n)
	}

	silent.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Scaled(5*time.Second))
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; !Closed(err) {
		t.Errorf("Serve after Shutdown: %v, want http.ErrServerClosed", err)
	}
	if Closed(errors.New("other")) {
		t.Error("Closed(other error) = true")
	}
}
