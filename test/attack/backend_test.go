package attack

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestBackendCounts(t *testing.T) {
	b := &Backend{Name: "b1"}
	addr := startBackend(t, b)
	stats := httptest.NewServer(b.StatsHandler())
	t.Cleanup(stats.Close)
	c := &http.Client{Transport: &http.Transport{}}
	for range 3 {
		resp, err := c.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "b1\n" || resp.Header.Get(BackendHeader) != "b1" {
			t.Fatalf("got %q, %s: %q", body, BackendHeader, resp.Header.Get(BackendHeader))
		}
	}
	s, err := FetchBackendStats(context.Background(), stats.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if s != (BackendStats{Conns: 1, Open: 1, Used: 1, Requests: 3}) {
		t.Errorf("want one keep-alive connection, open, and 3 requests; got %v", s)
	}
}
