package attack

import (
	"context"
	"testing"
)

func TestBadChunkReachesBackend(t *testing.T) {
	b := &Backend{}
	res, err := BadChunk(context.Background(), BadChunkOptions{Target: target(startBackend(t, b))})
	if err != nil {
		t.Fatal(err)
	}
	// With no proxy in front, the backend itself fails to read the body.
	if len(res.Replies) != 3 || res.Count(400) != 3 {
		t.Fatalf("want 3 × 400, got %v", res)
	}
	for _, r := range res.Replies {
		if !r.FromBackend {
			t.Errorf("reply %v does not carry %s", r, BackendHeader)
		}
	}
	if got := b.Stats().Requests; got != 3 {
		t.Errorf("backend counted %d requests, want 3", got)
	}
}

func TestBadChunkClosed(t *testing.T) {
	l := listen(t)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	res, err := BadChunk(context.Background(), BadChunkOptions{Target: target(l.Addr().String()), Requests: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.Count(0) != 2 || (res.Replies[0].End != EndClosed && res.Replies[0].End != EndReset) {
		t.Fatalf("want 2 connections closed without a status, got %v", res)
	}
	t.Log(res)
}
