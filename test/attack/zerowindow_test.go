package attack

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

func hello(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello\n") }

func TestZeroWindowH2C(t *testing.T) {
	addr := startH2C(t, &http2.Server{MaxConcurrentStreams: 10}, http.HandlerFunc(hello))
	ready := 0
	res, err := ZeroWindow(context.Background(), ZeroWindowOptions{
		Target: target(addr), Conns: 2, Streams: 15, Hold: scaled(500 * time.Millisecond),
		Ready: func() { ready++ },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res)
	if ready != 1 || res.Conns != 2 || res.Opened != 30 {
		t.Fatalf("want Ready once, 2 connections, 30 streams; got %d, %v", ready, res)
	}
	if !res.MaxConcurrentStreamsSet || res.MaxConcurrentStreams != 10 {
		t.Errorf("want SETTINGS_MAX_CONCURRENT_STREAMS 10, got %v", res)
	}
	// net/http answers with HEADERS, then cannot send the body: the 10
	// streams per connection it accepted stay open; it rejects the rest.
	if res.Answered != 20 || res.Count(StreamHeld) != 20 {
		t.Errorf("want 20 answered and held, got %v", res)
	}
	if n := res.Count(StreamRefused) + res.Count(StreamReset); n != 10 {
		t.Errorf("want 10 streams refused or reset, got %v", res)
	}
	for _, s := range res.Streams {
		if s.How == StreamHeld && s.After < scaled(500*time.Millisecond)/2 {
			t.Errorf("stream %d held for only %v", s.ID, s.After)
		}
	}
}

func TestZeroWindowTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(hello))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tg := target(srv.Listener.Addr().String())
	tg.TLS = true
	res, err := ZeroWindow(context.Background(), ZeroWindowOptions{
		Target: tg, Conns: 1, Streams: 5, Hold: scaled(300 * time.Millisecond),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Conns != 1 || res.Accepted() != 5 || res.Count(StreamHeld) != 5 || !res.MaxConcurrentStreamsSet {
		t.Fatalf("want 5 streams accepted and held, a stream limit; got %v", res)
	}
}

func TestZeroWindowNoH2(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(hello)) // HTTP/1.1 only
	srv.Config.ErrorLog = quiet
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tg := target(srv.Listener.Addr().String())
	tg.TLS = true
	res, err := ZeroWindow(context.Background(), ZeroWindowOptions{Target: tg, Conns: 1, Streams: 1, Hold: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.ConnErrors != 1 || res.FirstErr == nil {
		t.Fatalf("want the connection to fail without h2, got %v", res)
	}
}
