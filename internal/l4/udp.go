package l4

import (
	"context"
	"errors"
	"github.com/portcullis/portcullis/internal/accesslog"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/metrics"
	"github.com/portcullis/portcullis/internal/upstream"
)

// DefaultUDPMaxFlows is UDP.MaxFlows when it is zero or negative: the
// flows one relay keeps alive at once (the configuration has no setting
// for it).
const DefaultUDPMaxFlows = 65536

const (
	// udpBufferSize holds the largest UDP payload (65535 bytes less the
	// headers) with room to spare.
	udpBufferSize = 64 << 10
	// udpLogEvery is the least time between two warnings of one kind from
	// one relay, so that a flood of datagrams cannot flood the log.
	udpLogEvery = 10 * time.Second
	// udpPendingBytes bounds what a flow holds while it waits for a server
	// (its first datagram is always kept): datagrams beyond it are dropped,
	// so that flows queued at max_conns cannot hold much memory.
	udpPendingBytes = 64 << 10
	// udpPendingDatagrams bounds the same by count.
	udpPendingDatagrams = 32
)

type udpBuffer = [udpBufferSize]byte

// udpBuffers holds read buffers. It pools array pointers, so that neither
// Get nor Put allocates.
var udpBuffers = sync.Pool{New: func() any { return new(udpBuffer) }}

// UDP relays datagrams between clients and the servers of a backend, per
// client flow: the datagrams from one client address (IP and port) to the
// frontend socket form a flow, which picks a server once and keeps it
// until it has been idle for IdleTimeout. Each flow has its own connected
// socket to its server; replies go back to the client from the address
// the client sent to.
//
// Flows are not PROXY protocol connections: upstream.Backend.SendProxy is
// not consulted (configuration refuses send_proxy on udp frontends).
//
// Set the fields before the first Serve and do not change them after
// (Backend's result may change: reloads swap the backend it returns).
// Serve may be called for several sockets of one frontend at once.
type UDP struct {
	// Frontend names the frontend in logs.
	Frontend string
	// Backend returns the current backend and its name. It is called once
	// per new flow, from the flow's goroutine (so concurrently), and a
	// reload therefore moves new flows only: a flow releases its server to
	// the backend that chose it. Nil, or a nil Backend: new flows are
	// dropped (and logged).
	Backend func() (*upstream.Backend, string)
	// IdleTimeout forgets a flow that has carried no datagram in either
	// direction for this long: its socket is closed and its server's
	// in-flight count released. Expiry is checked every IdleTimeout/4, so
	// a flow lives between IdleTimeout and 1.25 × IdleTimeout after its
	// last datagram. The frontend's idle_timeout, which the configuration
	// defaults. Zero or negative: never (a flow then ends only with its
	// socket or at Shutdown).
	IdleTimeout time.Duration
	// MaxFlows bounds the flows alive at once (each holds a socket and
	// counts against its server's max_conns); a datagram that would start
	// one more is dropped, counted in Stats and logged at most once per
	// 10 s. Zero or negative: DefaultUDPMaxFlows (65536).
	MaxFlows int
	// Log receives warnings (rate-limited) and debug events. Nil: none.
	Log *slog.Logger
	// AccessLog returns the access log of the flows starting now (called
	// once per flow). Nil, or a nil *Logger: none.
	AccessLog func() *accesslog.Logger
	// Gate, when not nil, counts every flow as a connection of its client
	// IP against the frontend's connection limits, from its first
	// datagram until it ends: a datagram that would start a flow over a
	// limit is dropped, and the refusals are summarized by the Gate. Its
	// Events also summarize the proxy's own failures to open a flow's
	// socket. Nil: no limits, and those summaries go to Log.
	Gate *limit.Gate
	// Metrics counts the flows and their bytes; nil: not counted.
	Metrics *metrics.Frontend

	init  sync.Once
	relay *udpRelay
}

// UDPStats counts a relay's flows and the datagrams it dropped since it
// started.
type UDPStats struct {
	// Flows is the number of flows alive now, including those still
	// waiting for a server.
	Flows int
	// DroppedMaxFlows counts datagrams that would have started a flow
	// beyond MaxFlows.
	DroppedMaxFlows uint64
	// DroppedNoServer counts datagrams of new flows that no server could
	// take (none usable, the backend's queue timed out, or the frontend
	// has no backend).
	DroppedNoServer uint64
	// DroppedPending counts datagrams that arrived while their flow was
	// still waiting for a server, beyond what a waiting flow holds.
	DroppedPending uint64
}

// udpRelay is the live state of a UDP: its flows and counters, apart from
// the configuration fields.
type udpRelay struct {
	frontend  string
	backend   func() (*upstream.Backend, string)
	accessLog func() *accesslog.Logger
	idle      time.Duration
	maxFlows  int
	log       *slog.Logger
	gate      *limit.Gate       // nil: no limits
	metrics   *metrics.Frontend // nil: not counted
	events    *limit.Events     // the Gate's, or one of its own
	epoch     time.Time         // flows record times as nanoseconds since epoch

	mu       sync.Mutex
	flows    map[udpFlowKey]*udpFlow
	closed   bool          // after Shutdown: no new flows
	sweeping bool          // the sweeper runs
	stop     chan struct{} // closed at Shutdown to stop the sweeper
	wg       sync.WaitGroup

	droppedMaxFlows atomic.Uint64
	droppedNoServer atomic.Uint64
	droppedPending  atomic.Uint64
	maxFlowsLog     udpLogLimit
	noServerLog     udpLogLimit
}

// udpFlowKey identifies a flow: the socket the client sent to, the
// client's address, and the address the client sent to when the socket
// is bound to a wildcard address (zero otherwise).
type udpFlowKey struct {
	pc     *net.UDPConn
	client netip.AddrPort
	local  netip.Addr
}

func (u *UDP) live() *udpRelay {
	u.init.Do(func() {
		r := &udpRelay{
			frontend:  u.Frontend,
			backend:   u.Backend,
			accessLog: u.AccessLog,
			idle:      u.IdleTimeout,
			maxFlows:  u.MaxFlows,
			log:       u.Log,
			gate:      u.Gate,
			metrics:   u.Metrics,
			epoch:     time.Now(),
			flows:     make(map[udpFlowKey]*udpFlow),
		}
		if r.maxFlows <= 0 {
			r.maxFlows = DefaultUDPMaxFlows
		}
		if r.log == nil {
			r.log = slog.New(slog.DiscardHandler)
		}
		if r.gate != nil && r.gate.Events != nil {
			r.events = r.gate.Events
		} else {
			r.events = limit.NewEvents(r.log, 0)
		}
		u.relay = r
	})
	return u.relay
}

// Stats reports the relay's flows and drops.
func (u *UDP) Stats() UDPStats {
	r := u.live()
	r.mu.Lock()
	n := len(r.flows)
	r.mu.Unlock()
	return UDPStats{
		Flows:           n,
		DroppedMaxFlows: r.droppedMaxFlows.Load(),
		DroppedNoServer: r.droppedNoServer.Load(),
		DroppedPending:  r.droppedPending.Load(),
	}
}

// Serve relays the datagrams that arrive on pc, a socket bound at startup
// (Serve never binds), until pc is closed; then it ends the flows of pc
// and returns nil. It does not close pc. After Shutdown it returns nil at
// once.
//
// When pc is bound to a wildcard address (":53"), Serve asks the kernel
// for each datagram's destination address (IP_PKTINFO, IPV6_PKTINFO) and
// sends the replies from it, so that a client that sent to one of the
// host's addresses hears back from that address and not from the one the
// routing table prefers.
func (u *UDP) Serve(pc *net.UDPConn) error {
	r := u.live()
	if !r.serving() {
		return nil
	}
	defer r.endSocket(pc)
	pktinfo, err := udpEnablePktinfo(pc)
	if err != nil {
		r.log.Warn("UDP replies may come from another address than the client sent to: the socket is bound to a wildcard address and cannot report each datagram's destination; bind the frontend to each address instead",
			"frontend", r.frontend, "address", pc.LocalAddr().String(), "error", err)
	}
	buf := udpBuffers.Get().(*udpBuffer)
	defer udpBuffers.Put(buf)
	var oob []byte
	if pktinfo {
		oob = make([]byte, 256)
	}
	var backoff time.Duration
	for {
		var (
			n       int
			client  netip.AddrPort
			local   netip.Addr
			ifindex uint32
			err     error
		)
		if pktinfo {
			var oobn int
			n, oobn, _, client, err = pc.ReadMsgUDPAddrPort(buf[:], oob)
			local, ifindex = udpPacketDestination(oob[:oobn])
		} else {
			n, client, err = pc.ReadFromUDPAddrPort(buf[:])
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Not expected on an unconnected socket (ICMP errors are
			// not reported to it); back off so that a persistent error
			// cannot spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			r.log.Warn("UDP read failed; retrying", "frontend", r.frontend, "address", pc.LocalAddr().String(), "retry_in", backoff, "error", err)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		r.relay(udpFlowKey{pc: pc, client: client, local: local}, ifindex, buf[:n])
	}
}

// Shutdown stops creating flows, closes every flow's socket (releasing its
// server) and waits until the relay's goroutines are gone or ctx ends,
// returning ctx's error then. The caller closes the sockets given to
// Serve, before or after.
func (u *UDP) Shutdown(ctx context.Context) error {
	r := u.live()
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		if r.stop != nil {
			close(r.stop)
		}
	}
	flows := make([]*udpFlow, 0, len(r.flows))
	for _, f := range r.flows {
		flows = append(flows, f)
	}
	r.mu.Unlock()
	for _, f := range flows {
		f.end()
	}
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// serving starts the sweeper if it does not run yet (none without an
// idle timeout). It reports false after Shutdown.
func (r *udpRelay) serving() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	if !r.sweeping && r.idle > 0 {
		r.sweeping = true
		r.stop = make(chan struct{})
		r.wg.Add(1)
		go r.sweep(r.stop)
	}
	return true
}

// now is the time in nanoseconds since r.epoch, on the monotonic clock.
func (r *udpRelay) now() int64 { return int64(time.Since(r.epoch)) }

// relay sends a datagram from a client to its flow's server, starting
// the flow if there is none.
func (r *udpRelay) relay(key udpFlowKey, ifindex uint32, b []byte) {
	var tried []*balance.Member
	// A second round happens only when the flow ended under the send (it
	// expired, or its server refused the datagram); a third cannot.
	for range 3 {
		r.mu.Lock()
		f := r.flows[key]
		if f == nil {
			r.start(key, ifindex, b, tried) // unlocks r.mu
			return
		}
		r.mu.Unlock()
		switch res := f.send(b); res {
		case udpSent, udpQueued, udpDropped:
			return
		case udpRefused:
			// The server is gone (ICMP port unreachable): the
			// datagram was not sent; a new flow takes it elsewhere.
			tried = append(tried, f.m)
		}
	}
}

// start creates the flow of key with b as its first datagram. It is
// called with r.mu held and unlocks it.
func (r *udpRelay) start(key udpFlowKey, ifindex uint32, b []byte, tried []*balance.Member) {
	if r.closed {
		r.mu.Unlock()
		return
	}
	if len(r.flows) >= r.maxFlows {
		r.mu.Unlock()
		r.droppedMaxFlows.Add(1)
		if ok, held := r.maxFlowsLog.allow(r.now()); ok {
			r.log.Warn("UDP flow table full: dropping datagrams of new flows; existing flows go on. Idle flows are forgotten after idle_timeout: lower it to make room sooner",
				"frontend", r.frontend, "max_flows", r.maxFlows, "client", key.client.String(), "dropped_since_last_warning", held)
		}
		return
	}
	var ticket *limit.Ticket
	if r.gate != nil {
		if ticket = r.gate.HoldAddr(key.client.Addr()); ticket == nil {
			r.mu.Unlock()
			return // over a limit: summarized by the Gate
		}
	}
	f := newUDPFlow(r, key, ifindex, b)
	f.ticket = ticket
	r.flows[key] = f
	r.wg.Add(1)
	r.mu.Unlock()
	go f.run(tried)
}

// forget removes f from the flow table, if it is still there.
func (r *udpRelay) forget(f *udpFlow) {
	r.mu.Lock()
	if r.flows[f.key] == f {
		delete(r.flows, f.key)
	}
	r.mu.Unlock()
}

// endSocket ends the flows of pc, whose replies can no longer be sent.
func (r *udpRelay) endSocket(pc *net.UDPConn) {
	var flows []*udpFlow
	r.mu.Lock()
	for k, f := range r.flows {
		if k.pc == pc {
			flows = append(flows, f)
		}
	}
	r.mu.Unlock()
	for _, f := range flows {
		f.end()
	}
}

// sweep ends idle flows until stop is closed.
func (r *udpRelay) sweep(stop <-chan struct{}) {
	defer r.wg.Done()
	tick := time.NewTicker(max(r.idle/4, time.Millisecond))
	defer tick.Stop()
	var idle []*udpFlow
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		limit := r.now() - int64(r.idle)
		r.mu.Lock()
		for _, f := range r.flows {
			if f.last.Load() <= limit {
				idle = append(idle, f)
			}
		}
		r.mu.Unlock()
		for i, f := range idle {
			f.end()
			idle[i] = nil
		}
		idle = idle[:0]
	}
}

// dropNoServer counts the datagrams of a new flow that no server could
// take, and logs it (rate-limited).
func (r *udpRelay) dropNoServer(f *udpFlow, backend string, datagrams int, err error) {
	r.droppedNoServer.Add(uint64(datagrams))
	if ok, held := r.noServerLog.allow(r.now()); ok {
		r.log.Warn("UDP datagram dropped: no server can take a new flow",
			"frontend", r.frontend, "backend", backend, "client", f.key.client.String(), "error", err, "dropped_since_last_warning", held)
	}
}

// udpLogLimit lets one warning through per udpLogEvery and counts the
// ones it holds back.
type udpLogLimit struct {
	next atomic.Int64 // relay time before which warnings are held back
	held atomic.Uint64
}

// allow reports whether a warning may be logged at now (relay time) and,
// if so, how many were held back since the last one.
func (l *udpLogLimit) allow(now int64) (ok bool, held uint64) {
	next := l.next.Load()
	if now < next || !l.next.CompareAndSwap(next, now+int64(udpLogEvery)) {
		l.held.Add(1)
		return false, 0
	}
	return true, l.held.Swap(0)
}
