package h3

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/portcullis/portcullis/internal/testutil"
)

// udpFile binds a UDP socket on 127.0.0.1:0 and returns its file (the
// caller's, as a Shard's) and address.
func udpFile(t *testing.T) (*os.File, string) {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	f, err := udp.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, udp.LocalAddr().String()
}

// get makes one HTTP/3 request on a new connection and returns the body.
func get(t *testing.T, addr string) (string, error) {
	t.Helper()
	tr := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Scaled(2*time.Second))
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+addr+"/", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestServer serves HTTP/3 on one shard with its hooks, refuses what
// Admit refuses, stops accepting, shuts down and closes.
func TestServer(t *testing.T) {
	file, addr := udpFile(t)
	var admitted, released, conns, tracked, untracked atomic.Int32
	var refuse atomic.Bool
	s := &Server{
		Address:   addr,
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }),
		TLSConfig: serverTLS(t),
		TrackTLS: func(c *tls.Config) func() {
			tracked.Add(1)
			return func() { untracked.Add(1) }
		},
		Shards: []Shard{{File: file, Name: "shard 0"}},
		Format: mustFormat(t, nil),
		Limits: HandshakeLimits{Retry: RetryNever, RetryRate: 10, RetryInProgress: 5, MaxHandshakes: 10},
		Admit: func(net.Addr) (func(), bool) {
			if refuse.Load() {
				return nil, false
			}
			admitted.Add(1)
			return func() { released.Add(1) }, true
		},
		ConnContext: func(ctx context.Context, c *quic.Conn) context.Context {
			conns.Add(1)
			return ctx
		},
		OnError: func(err error) { t.Errorf("OnError: %v", err) },
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Forward() == nil || tracked.Load() != 1 {
		t.Fatalf("one shard without steering: Forward %v, TrackTLS called %d times; want a ForwardConn, once", s.Forward(), tracked.Load())
	}

	if body, err := get(t, addr); body != "hello" || err != nil {
		t.Fatalf("GET: %q, %v", body, err)
	}
	deadline := time.Now().Add(testutil.Scaled(5 * time.Second))
	for released.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if admitted.Load() != 1 || released.Load() != 1 || conns.Load() != 1 || s.Handshakes().InProgress() != 0 {
		t.Fatalf("admitted %d, released %d, ConnContext %d, handshakes in progress %d; want 1, 1, 1, 0",
			admitted.Load(), released.Load(), conns.Load(), s.Handshakes().InProgress())
	}

	refuse.Store(true)
	if _, err := get(t, addr); err == nil {
		t.Fatal("a connection Admit refuses was served")
	}
	if admitted.Load() != 1 || s.Handshakes().InProgress() != 0 {
		t.Fatalf("after a refusal: admitted %d, handshakes in progress %d", admitted.Load(), s.Handshakes().InProgress())
	}

	refuse.Store(false)
	s.StopAccepting()
	if _, err := get(t, addr); err == nil {
		t.Fatal("a new connection was served after StopAccepting")
	}
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Scaled(2*time.Second))
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	s.Close()
	s.Close()
	if untracked.Load() != 1 {
		t.Errorf("TrackTLS's function called %d times; want once", untracked.Load())
	}
}

// TestServerStartFails reports the shard that cannot be served and closes
// what it started.
func TestServerStartFails(t *testing.T) {
	good, _ := udpFile(t)
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	bad, err := tcp.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	var untracked atomic.Int32
	s := &Server{
		Handler:   http.NotFoundHandler(),
		TLSConfig: serverTLS(t),
		TrackTLS:  func(*tls.Config) func() { return func() { untracked.Add(1) } },
		Shards:    []Shard{{File: good, Name: "shard 0"}, {File: bad, Name: "shard 1"}},
		Format:    mustFormat(t, nil),
		Limits:    HandshakeLimits{Retry: RetryNever, RetryRate: 10, RetryInProgress: 5, MaxHandshakes: 10},
	}
	err = s.Start()
	if err == nil || !strings.HasPrefix(err.Error(), "shard 1: ") {
		t.Fatalf("Start: %v; want an error naming shard 1", err)
	}
	if untracked.Load() != 1 {
		t.Errorf("after a failed Start, TrackTLS's function was called %d times; want once", untracked.Load())
	}
}
