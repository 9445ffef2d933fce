package attack

import (
	"context"
	"net/http"
	"testing"
)

func TestBigHeaderForwarded(t *testing.T) {
	b := &Backend{}
	res, err := BigHeader(context.Background(), BigHeaderOptions{Target: target(startBackend(t, b)), Size: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []BigRequest{res.Header, res.RequestLine} {
		if r.Status != 200 || !r.FromBackend || r.Sent != r.Total || r.Total < 256<<10 {
			t.Errorf("want 200 from the backend after the whole request, got %v", r)
		}
	}
	if got := b.Stats().Requests; got != 2 {
		t.Errorf("backend counted %d requests, want 2", got)
	}
}

func TestBigHeaderRejected(t *testing.T) {
	l := listen(t)
	srv := &http.Server{MaxHeaderBytes: 64 << 10, Handler: http.NotFoundHandler()}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	res, err := BigHeader(context.Background(), BigHeaderOptions{Target: target(l.Addr().String())})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []BigRequest{res.Header, res.RequestLine} {
		if r.Status != http.StatusRequestHeaderFieldsTooLarge || r.FromBackend || r.Sent == 0 || r.Total < 1<<20 {
			t.Errorf("want 431 from net/http, got %v", r)
		}
	}
	t.Log(res)
}
