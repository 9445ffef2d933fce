package tickets

import (
	"crypto/tls"
	"testing"
)

// TestRotate: a rotation puts a new key first and keeps at most Kept, and
// New keeps at most Kept of the keys handed off.
func TestRotate(t *testing.T) {
	k := New(nil)
	first := k.Current()
	if len(first) != 1 {
		t.Fatalf("New(nil) has %d keys, want 1", len(first))
	}
	k.Use(&tls.Config{})
	for range Kept + 2 {
		k.Rotate()
	}
	cur := k.Current()
	if len(cur) != Kept {
		t.Fatalf("%d keys after %d rotations, want %d", len(cur), Kept+2, Kept)
	}
	if cur[0] == first[0] || cur[Kept-1] == first[0] {
		t.Error("the first key is still kept after more than Kept rotations")
	}
	if n := len(New(append(cur, cur...)).Current()); n != Kept {
		t.Errorf("New with %d keys kept %d, want %d", 2*Kept, n, Kept)
	}
}
