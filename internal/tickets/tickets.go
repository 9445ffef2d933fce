// Package tickets holds the TLS session ticket keys of a process, set
// explicitly and rotated daily. crypto/tls rotates its automatic keys per
// Config once they are a day old, and quic-go works on a copy of the
// Config for every connection: after a day each copy would rotate on its
// own, and a ticket issued on one HTTP/3 connection could no longer resume
// the next. Explicit keys, rotated here for every copy made afterwards,
// keep resumption working for as long as the process runs, and across a
// binary upgrade, which hands them to the new process (handoff.Upgrade).
//
// They are set on the QUIC listeners' configurations (Use) and on the
// certificates' configurations of the running graph (UseGraph), which
// GetConfigForClient returns for every handshake, over TCP and QUIC:
// crypto/tls prefers the keys of the returned configuration.
package tickets

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"slices"
	"sync"
	"time"
)

const (
	// Rotation is how often a new key is made.
	Rotation = 24 * time.Hour
	// Kept is how many keys are kept, the newest included: a ticket stays
	// valid for up to Kept rotations (a week).
	Kept = 7
)

// Keys are the session ticket keys of a process and the configurations
// that use them. Its methods are safe for concurrent use.
type Keys struct {
	mu      sync.Mutex
	keys    [][32]byte // newest first
	configs []*tls.Config
	// graph are the running graph's configurations.
	graph []*tls.Config
}

// New starts with keys (newest first, at most Kept of them used), handed
// over by the process a binary upgrade replaced, or with a new key when
// keys is empty.
func New(keys [][32]byte) *Keys {
	k := &Keys{}
	if len(keys) > Kept {
		keys = keys[:Kept]
	}
	k.keys = slices.Clone(keys)
	if len(k.keys) == 0 {
		k.keys = [][32]byte{newKey()}
	}
	return k
}

// Current returns the keys, newest first.
func (k *Keys) Current() [][32]byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.keys)
}

// UseGraph gives confs, the certificates' configurations of the graph
// going live, the current keys and keeps them current; those of the
// previous call (the graph it replaces) are no longer rotated.
func (k *Keys) UseGraph(confs []*tls.Config) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range confs {
		c.SetSessionTicketKeys(k.keys)
	}
	k.graph = confs
}

// Use gives c the current keys and keeps them current until Forget.
func (k *Keys) Use(c *tls.Config) {
	k.mu.Lock()
	defer k.mu.Unlock()
	c.SetSessionTicketKeys(k.keys)
	k.configs = append(k.configs, c)
}

// Forget stops rotating the keys of c (its listener is closed).
func (k *Keys) Forget(c *tls.Config) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.configs = slices.DeleteFunc(k.configs, func(x *tls.Config) bool { return x == c })
}

// Track is Use that returns its Forget (the shape of h3.Server.TrackTLS).
func (k *Keys) Track(c *tls.Config) (forget func()) {
	k.Use(c)
	return func() { k.Forget(c) }
}

// Rotate puts a new key first; the older ones, up to Kept in all, still
// decrypt tickets.
func (k *Keys) Rotate() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys = append([][32]byte{newKey()}, k.keys[:min(len(k.keys), Kept-1)]...)
	for _, c := range k.configs {
		c.SetSessionTicketKeys(k.keys)
	}
	for _, c := range k.graph {
		c.SetSessionTicketKeys(k.keys)
	}
}

// RotateEvery rotates every d until ctx ends.
func (k *Keys) RotateEvery(ctx context.Context, d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			k.Rotate()
		}
	}
}

func newKey() [32]byte {
	var key [32]byte
	rand.Read(key[:])
	return key
}
