package l4

import (
	"context"
	"errors"
	"github.com/portcullis/portcullis/internal/accesslog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/metrics"
	"github.com/portcullis/portcullis/internal/upstream"
)

// errNoBackend is why a flow is dropped when the frontend has no backend.
var errNoBackend = errors.New("the frontend has no backend")

// udpFlow is one client's flow: a connected socket to the server it
// picked, and a goroutine that relays the server's replies to the client.
// Until the server is picked and the socket dialed, the flow holds the
// client's datagrams (a few) in pending.
type udpFlow struct {
	r      *udpRelay
	key    udpFlowKey
	oob    []byte        // sets a reply's source address; nil when key.pc has one address
	ticket *limit.Ticket // the flow's count of the Gate; nil without one

	ctx    context.Context // ends when the flow does: stops the wait for a server
	cancel context.CancelFunc

	// last is when the last datagram passed in either direction (relay
	// time).
	last atomic.Int64
	// ready is set, under mu, once conn, backend and m are: from then on
	// they do not change and datagrams go straight to conn.
	ready atomic.Bool

	mu           sync.Mutex
	ended        bool
	pending      [][]byte
	pendingBytes int
	conn         *net.UDPConn
	backend      *upstream.Backend
	m            *balance.Member

	// log is the flow's access-log line; nil without an access log.
	log *flowLog
}

// udpSendResult is what became of a client's datagram given to a flow.
type udpSendResult int

const (
	udpSent    udpSendResult = iota // written to the server socket
	udpQueued                       // held until the server is picked
	udpDropped                      // lost (the bound on pending datagrams, a send error)
	udpGone                         // the flow had ended: start a new one
	udpRefused                      // the server refused it: the flow ended, try another server
)

func newUDPFlow(r *udpRelay, key udpFlowKey, ifindex uint32, first []byte) *udpFlow {
	f := &udpFlow{r: r, key: key, oob: udpReplyOOB(key.local, ifindex)}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.last.Store(r.now())
	f.pending = [][]byte{append([]byte(nil), first...)}
	f.pendingBytes = len(first)
	if r.accessLog != nil || r.metrics != nil {
		f.log = newFlowLog(r, key)
	}
	r.metrics.Open(metrics.UDP)
	return f
}

// run connects the flow to a server, then relays the server's replies
// until the flow ends.
func (f *udpFlow) run(tried []*balance.Member) {
	defer f.r.wg.Done()
	rd, ok := f.connect(tried)
	f.cancel() // the wait for a server is over either way
	if !ok {
		return
	}
	f.relayReplies(rd)
}

// connect picks a server (the balancer's choice; by the client's IP when
// the backend hashes the source), dials a socket connected to it and sends
// the pending datagrams. It ends the flow when it fails.
func (f *udpFlow) connect(tried []*balance.Member) (*udpServerReader, bool) {
	var (
		b    *upstream.Backend
		name string
	)
	if f.r.backend != nil {
		b, name = f.r.backend()
	}
	f.log.setBackend(name)
	if b == nil {
		f.fail(name, errNoBackend)
		return nil, false
	}
	var hash uint64
	if b.HashSource() {
		hash = balance.HashString(f.key.client.Addr().Unmap().String())
	}
	for attempt := 0; ; attempt++ {
		m, err := b.Acquire(f.ctx, hash, tried)
		if err != nil {
			if f.ctx.Err() != nil { // ended elsewhere: expired, shut down
				f.end()
			} else {
				f.fail(name, err)
			}
			return nil, false
		}
		b.Server(m).Metrics().Request(attempt > 0)
		rd, err := f.dial(b, m)
		if err == nil {
			f.log.setServer(m.State.Address)
			if f.attach(rd.conn, b, m) {
				return rd, true
			}
			rd.conn.Close()
			b.Release(m)
			return nil, false // the flow ended meanwhile
		}
		b.Release(m)
		if f.ctx.Err() != nil {
			f.end()
			return nil, false
		}
		if limit.OutOfResources(err) {
			// The proxy's own failure (no descriptor for the socket, no
			// local port): not the server's, and every server would fail
			// alike but for the local ports.
			f.r.events.Note("cannot open a UDP flow's socket: the proxy is out of descriptors, memory or local ports; not held against the server. Raise the open-files limit (LimitNOFILE=, ulimit -n) or lower max_conns",
				err, "frontend", f.r.frontend, "backend", name)
			if !retryable(err) || attempt >= b.Retries() {
				f.drop(err)
				return nil, false
			}
			tried = append(tried, m)
			continue
		}
		b.Observe(m, false)
		tried = append(tried, m)
		if attempt >= b.Retries() {
			f.fail(name, err)
			return nil, false
		}
	}
}

// dial opens a socket connected to m. A UDP dial sends nothing: it
// resolves the address, binds an ephemeral port and connects the socket
// locally.
func (f *udpFlow) dial(b *upstream.Backend, m *balance.Member) (*udpServerReader, error) {
	d := net.Dialer{Timeout: b.ConnectTimeout()}
	c, err := d.DialContext(f.ctx, "udp", m.State.Address)
	if err != nil {
		return nil, err
	}
	rd, err := newUDPServerReader(c.(*net.UDPConn))
	if err != nil {
		c.Close()
		return nil, err
	}
	return rd, nil
}

// attach gives the flow its server socket and sends what is pending. It
// reports false when the flow has ended meanwhile.
func (f *udpFlow) attach(conn *net.UDPConn, b *upstream.Backend, m *balance.Member) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ended {
		return false
	}
	f.conn, f.backend, f.m = conn, b, m
	for i, p := range f.pending {
		// A fresh socket has no ICMP error queued; other errors lose
		// the datagram, as the network may.
		if n, err := conn.Write(p); err == nil {
			f.log.addIn(n)
		}
		f.pending[i] = nil
	}
	f.pending, f.pendingBytes = nil, 0
	f.ready.Store(true)
	return true
}

// send relays a datagram from the client to the server.
func (f *udpFlow) send(b []byte) udpSendResult {
	f.last.Store(f.r.now())
	if !f.ready.Load() {
		f.mu.Lock()
		switch {
		case f.ended:
			f.mu.Unlock()
			return udpGone
		case !f.ready.Load():
			defer f.mu.Unlock()
			if len(f.pending) >= udpPendingDatagrams || f.pendingBytes+len(b) > udpPendingBytes {
				f.r.droppedPending.Add(1)
				return udpDropped
			}
			f.pending = append(f.pending, append([]byte(nil), b...))
			f.pendingBytes += len(b)
			return udpQueued
		}
		f.mu.Unlock()
	}
	n, err := f.conn.Write(b)
	switch {
	case err == nil:
		f.log.addIn(n)
		return udpSent
	case errors.Is(err, syscall.ECONNREFUSED):
		// The kernel reports an ICMP port unreachable from the server
		// on the next call on the socket, this one; the datagram was
		// not sent.
		f.refused()
		return udpRefused
	case errors.Is(err, net.ErrClosed):
		return udpGone // it expired just now
	}
	return udpDropped
}

// relayReplies sends the server's datagrams to the client until the flow
// ends.
func (f *udpFlow) relayReplies(rd *udpServerReader) {
	replied := false
	for {
		buf, n, err := rd.next()
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				f.refused()
			} else {
				f.end()
			}
			return
		}
		f.last.Store(f.r.now())
		if !replied {
			replied = true
			f.backend.Observe(f.m, true)
		}
		if f.oob != nil {
			_, _, err = f.key.pc.WriteMsgUDPAddrPort(buf[:n], f.oob, f.key.client)
		} else {
			_, err = f.key.pc.WriteToUDPAddrPort(buf[:n], f.key.client)
		}
		udpBuffers.Put(buf)
		if err == nil {
			f.log.addOut(n)
		}
		if errors.Is(err, net.ErrClosed) {
			f.end()
			return
		}
		// Other errors lose this reply only, as the network may.
	}
}

// refused ends the flow because its server refused a datagram (ICMP port
// unreachable: nothing listens there), which passive health checks count
// as a failure. The client's next datagram starts a new flow.
func (f *udpFlow) refused() {
	if ended, _ := f.close(true, accesslog.ServerData); ended {
		f.r.log.Debug("UDP flow ended: the server refused a datagram (port unreachable)",
			"frontend", f.r.frontend, "client", f.key.client.String(), "server", f.m.State.Address)
	}
}

// end closes the flow: it leaves the table, its socket closes (which ends
// its goroutine) and its server's in-flight count is released. It is safe
// to call more than once and from any goroutine.
func (f *udpFlow) end() { f.close(false, accesslog.Normal) }

// fail ends a flow that no server could take, and counts and logs the
// drop of its datagrams.
func (f *udpFlow) fail(backend string, err error) {
	st := connectState(err)
	if errors.Is(err, errNoBackend) {
		st = accesslog.NoServer
	}
	if ended, dropped := f.close(false, st); ended {
		f.r.dropNoServer(f, backend, dropped, err)
	}
}

// drop ends a flow that the proxy could not open (its own failure,
// summarized by the caller), counting the drop of its datagrams.
func (f *udpFlow) drop(err error) {
	if ended, dropped := f.close(false, accesslog.Resource); ended {
		f.r.droppedNoServer.Add(uint64(dropped))
		f.r.log.Debug("UDP flow dropped: the proxy could not open its socket", "frontend", f.r.frontend, "client", f.key.client.String(), "error", err)
	}
}

// close is end, reporting a failure to passive health checks first when
// refused is set, and writing the access-log line with state st. It
// reports whether this call ended the flow, and how many datagrams were
// still waiting for a server.
func (f *udpFlow) close(refused bool, st accesslog.State) (ended bool, dropped int) {
	f.mu.Lock()
	if f.ended {
		f.mu.Unlock()
		return false, 0
	}
	f.ended = true
	conn, b, m := f.conn, f.backend, f.m
	dropped = len(f.pending)
	f.pending = nil
	f.mu.Unlock()
	f.cancel()
	// Release the count first, then forget, then close: a datagram that
	// finds the socket closed then finds no flow and starts a new one,
	// which this flow no longer counts against.
	f.ticket.Release()
	f.r.forget(f)
	if conn != nil {
		if refused {
			b.Observe(m, false)
			b.Server(m).Metrics().Failure(metrics.Connect)
		}
		conn.Close()
		b.Release(m)
	}
	f.log.write(st)
	f.log.count(f.r.metrics)
	return true, dropped
}
