package runtime

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"slices"
	"sync"
	"time"
)

// ticketKeys are the TLS session ticket keys of the process, set
// explicitly and rotated daily. crypto/tls rotates its automatic keys per
// Config once they are a day old, and quic-go works on a copy of the
// Config for every connection: after a day each copy would rotate on its
// own, and a ticket issued on one HTTP/3 connection could no longer resume
// the next. Explicit keys, rotated here for every copy made afterwards,
// keep resumption working for as long as the process runs, and across a
// binary upgrade, which hands them to the new process.
//
// They are set on the QUIC listeners' configurations (use) and on the
// certificates' configurations of the running graph (useGraph), which
// GetConfigForClient returns for every handshake, over TCP and QUIC:
// crypto/tls prefers the keys of the returned configuration.
type ticketKeys struct {
	mu      sync.Mutex
	keys    [][32]byte // newest first
	configs []*tls.Config
	// graph are the running graph's configurations.
	graph []*tls.Config
}

const (
	ticketKeyRotation = 24 * time.Hour
	ticketKeysKept    = 7 // a ticket stays valid for up to a week
)

// newTicketKeys starts with keys (newest first), handed over by the
// process a binary upgrade replaced, or with a new key.
func newTicketKeys(keys [][32]byte) *ticketKeys {
	k := &ticketKeys{}
	if len(keys) > ticketKeysKept {
		keys = keys[:ticketKeysKept]
	}
	k.keys = slices.Clone(keys)
	if len(k.keys) == 0 {
		k.keys = [][32]byte{newTicketKey()}
	}
	return k
}

// current returns the keys, newest first.
func (k *ticketKeys) current() [][32]byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.keys)
}

// useGraph gives the certificates' configurations of g, the graph going
// live, the current keys and keeps them current; those of the graph it
// replaces are no longer rotated.
func (k *ticketKeys) useGraph(g *Graph) {
	var confs []*tls.Config
	for _, b := range g.binds {
		if b.TLS != nil {
			confs = append(confs, b.TLS)
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range confs {
		c.SetSessionTicketKeys(k.keys)
	}
	k.graph = confs
}

func newTicketKey() [32]byte {
	var key [32]byte
	rand.Read(key[:])
	return key
}

// use gives c the current keys and keeps them current.
func (k *ticketKeys) use(c *tls.Config) {
	k.mu.Lock()
	defer k.mu.Unlock()
	c.SetSessionTicketKeys(k.keys)
	k.configs = append(k.configs, c)
}

// forget stops rotating the keys of c (its listener is closed).
func (k *ticketKeys) forget(c *tls.Config) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.configs = slices.DeleteFunc(k.configs, func(x *tls.Config) bool { return x == c })
}

// rotate puts a new key first; the older ones still decrypt tickets.
func (k *ticketKeys) rotate() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys = append([][32]byte{newTicketKey()}, k.keys[:min(len(k.keys), ticketKeysKept-1)]...)
	for _, c := range k.configs {
		c.SetSessionTicketKeys(k.keys)
	}
	for _, c := range k.graph {
		c.SetSessionTicketKeys(k.keys)
	}
}

// rotateEvery rotates until ctx ends.
func (k *ticketKeys) rotateEvery(ctx context.Context, d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			k.rotate()
		}
	}
}
