package proxy

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Tunnels are the upgraded connections (WebSocket, RFC 6455, after an
// HTTP/1.1 Upgrade) a process proxies. net/http forgets a connection once
// it is hijacked for the upgrade, so http.Server.Shutdown neither waits
// for them nor ends them: without Drain they would be cut wherever they
// are when the process exits, a message in flight included.
//
// A proxy that only copies bytes cannot close a WebSocket with a close
// frame of its own (it does not know where the frames of either side
// end), so Drain ends each tunnel at a quiet moment instead: when nothing
// has crossed it for QuietAfterReply and the last bytes went to the
// client (a request answered, nothing asked since), or when it has been
// idle for QuietIdle whatever went last. The client sees its connection
// end between messages and reconnects.
//
// The zero value is ready to use. Put it in the context of the servers'
// connections with WithTunnels; the proxy registers every tunnel it opens
// for a request whose context holds it.
type Tunnels struct {
	// QuietAfterReply and QuietIdle are the quiet periods described
	// above. Zero: 20 ms and 1 s.
	QuietAfterReply, QuietIdle time.Duration

	mu   sync.Mutex
	open map[*tunnel]struct{}
}

type tunnelsKey struct{}

// WithTunnels returns ctx with t, for the requests of connections served
// with it.
func WithTunnels(ctx context.Context, t *Tunnels) context.Context {
	return context.WithValue(ctx, tunnelsKey{}, t)
}

func tunnelsFrom(ctx context.Context) *Tunnels {
	t, _ := ctx.Value(tunnelsKey{}).(*Tunnels)
	return t
}

// Len is the number of tunnels open.
func (t *Tunnels) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.open)
}

// track registers rwc, the server side of a tunnel, until it is closed.
func (t *Tunnels) track(rwc io.ReadWriteCloser) io.ReadWriteCloser {
	tu := &tunnel{ReadWriteCloser: rwc, owner: t}
	tu.toClient.Store(time.Now().UnixNano())
	t.mu.Lock()
	if t.open == nil {
		t.open = map[*tunnel]struct{}{}
	}
	t.open[tu] = struct{}{}
	t.mu.Unlock()
	return tu
}

// Drain ends every tunnel at its next quiet moment and returns once none
// is left, or when ctx ends: then it closes those left and returns
// ctx.Err(). Tunnels opened meanwhile are drained too.
func (t *Tunnels) Drain(ctx context.Context) error {
	afterReply, idle := t.QuietAfterReply, t.QuietIdle
	if afterReply <= 0 {
		afterReply = 20 * time.Millisecond
	}
	if idle <= 0 {
		idle = time.Second
	}
	tick := time.NewTicker(min(afterReply/2, 10*time.Millisecond))
	defer tick.Stop()
	for {
		now := time.Now().UnixNano()
		t.mu.Lock()
		var quiet []*tunnel
		for tu := range t.open {
			if tu.quiet(now, afterReply, idle) {
				quiet = append(quiet, tu)
			}
		}
		left := len(t.open) - len(quiet)
		t.mu.Unlock()
		for _, tu := range quiet {
			tu.Close()
		}
		if left == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			t.closeAll()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (t *Tunnels) closeAll() {
	t.mu.Lock()
	all := make([]*tunnel, 0, len(t.open))
	for tu := range t.open {
		all = append(all, tu)
	}
	t.mu.Unlock()
	for _, tu := range all {
		tu.Close()
	}
}

// tunnel is the server side of one upgraded connection. Reads carry bytes
// toward the client, writes toward the server; it remembers when each
// last happened.
type tunnel struct {
	io.ReadWriteCloser
	owner              *Tunnels
	toClient, toServer atomic.Int64 // UnixNano of the last bytes each way
	once               sync.Once
}

func (tu *tunnel) Read(p []byte) (int, error) {
	n, err := tu.ReadWriteCloser.Read(p)
	if n > 0 {
		tu.toClient.Store(time.Now().UnixNano())
	}
	return n, err
}

func (tu *tunnel) Write(p []byte) (int, error) {
	tu.toServer.Store(time.Now().UnixNano())
	return tu.ReadWriteCloser.Write(p)
}

func (tu *tunnel) Close() error {
	err := tu.ReadWriteCloser.Close()
	tu.once.Do(func() {
		tu.owner.mu.Lock()
		delete(tu.owner.open, tu)
		tu.owner.mu.Unlock()
	})
	return err
}

// quiet reports whether the tunnel may be ended now (see Tunnels).
func (tu *tunnel) quiet(now int64, afterReply, idle time.Duration) bool {
	c, s := tu.toClient.Load(), tu.toServer.Load()
	last := max(c, s)
	if now-last >= int64(idle) {
		return true
	}
	return c >= s && now-c >= int64(afterReply)
}
