package runtime

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"slices"
	"sync"
	"time"
)

// ticketKeys are the TLS session ticket keys of the QUIC listeners, set
// explicitly and rotated daily. crypto/tls rotates its automatic keys per
// Config once they are a day old, and quic-go works on a copy of the
// Config for every connection: after a day each copy would rotate on its
// own, and a ticket issued on one HTTP/3 connection could no longer resume
// the next. Explicit keys, rotated here for every copy made afterwards,
// keep resumption working for as long as the process runs.
type ticketKeys struct {
	mu      sync.Mutex
	keys    [][32]byte // newest first
	configs []*tls.Config
}

const (
	ticketKeyRotation = 24 * time.Hour
	ticketKeysKept    = 7 // a ticket stays valid for up to a week
)

func newTicketKeys() *ticketKeys {
	k := &ticketKeys{}
	k.keys = [][32]byte{newTicketKey()}
	return k
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
