package l4

import (
	"bytes"
	"crypto/sha256"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
)

func unusedPipes() int {
	splicePipes.mu.Lock()
	defer splicePipes.mu.Unlock()
	return len(splicePipes.free)
}

// TestSplicePipesReaped checks that the pipes of finished transfers are
// kept a while, then closed: an idle proxy holds no pipe.
func TestSplicePipesReaped(t *testing.T) {
	b := newFakeBackend(serve(t, plainEcho))
	addr := startTCP(t, &TCP{Frontend: "reap", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: singleTable(b), Log: slog.New(slog.DiscardHandler)})
	settlePipes(t)
	before := openFDs(t).pipes

	c := dial(t, addr)
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<14)
	if sum, n, err := roundTrip(c, payload); err != nil || n != int64(len(payload)) || sum != sha256.Sum256(payload) {
		t.Fatalf("relayed %d of %d bytes, %v", n, len(payload), err)
	}
	if unusedPipes() == 0 {
		t.Fatal("no pipe kept for the next transfer")
	}
	start := time.Now()
	waitFor(t, "unused pipes closed", func() bool { return unusedPipes() == 0 })
	if d := time.Since(start); d > 2*pipeIdle+testutil.Scaled(500*time.Millisecond) {
		t.Errorf("unused pipes closed after %v, want within %v", d, 2*pipeIdle)
	}
	if n := openFDs(t).pipes; n != before {
		t.Errorf("%d pipe descriptors open, %d before the transfer", n, before)
	}
}

// TestSpliceWithoutPipes relays through an established connection while
// the process cannot open a descriptor: the bytes go through user space.
func TestSpliceWithoutPipes(t *testing.T) {
	b := newFakeBackend(serve(t, echo))
	addr := startTCP(t, &TCP{Frontend: "nopipe", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: singleTable(b), Log: slog.New(slog.DiscardHandler)})
	c := dial(t, addr)
	echoed(t, c, "before")

	defer exhaustDescriptors(t, 0)()
	payload := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{3}).Read(payload)
	sum, n, err := roundTrip(c, payload)
	if err != nil || n != int64(len(payload)) || sum != sha256.Sum256(payload) {
		t.Fatalf("without descriptors: relayed %d of %d bytes (digest ok: %v), %v", n, len(payload), sum == sha256.Sum256(payload), err)
	}
}
