package h3

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"

	"github.com/portcullis/portcullis/internal/quiclb"
)

// Metrics counts what each shard of one bind sees. Every counter is an
// atomic; the hooks below cost nothing per packet of an established
// connection.
//
// Where the numbers come from, and why (quic-go v0.65):
//
//   - Packets and Sent are counted by the socket quic-go is given
//     (countedConn, or the ForwardConn of an unsteered bind): a type that
//     embeds the *net.UDPConn, so that quic-go still finds every method it
//     looks for (OOBCapablePacketConn: batched reads, GSO, ECN, DF), and
//     that counts the datagrams of each batch read and the packets of each
//     write (a GSO write carries several). An atomic add per batch or
//     write; nothing per packet.
//   - quic-go's only per-packet hook is the per-connection qlog tracer
//     (Config.Tracer). Once it returns a trace, quic-go builds and boxes a
//     qlog event for every packet sent and received, with its frames, and
//     more. And it could not see misrouting anyway: a short-header packet
//     that reaches the wrong shard matches no connection there, so no
//     connection's tracer sees it; the Transport answers it with a
//     stateless reset, which it does not trace, or drops it, tracing the
//     drop without the packet's connection ID.
//
// So:
//
//   - Accepted and Misrouted: ConnTracer wraps Config.Tracer, which quic-go
//     calls once per new server connection with the Destination
//     Connection ID of the client's first Initial (the one the steering
//     program steered by). It counts the connection, checks that it
//     landed on the shard the steering rule picks for that DCID
//     (quiclb.ShardFor), and returns the wrapped tracer's trace, nil by default,
//     which keeps per-packet tracing off.
//   - Retries and Dropped: TransportTracer is the Transport.Tracer, which
//     quic-go only calls off the established-connection path: for each
//     Retry sent and each packet dropped before it reached a connection.
type Metrics struct {
	format quiclb.CIDFormat
	shards []shardCounters
}

// shardCounters are one shard's counters, padded to a cache line so that
// shards do not share one.
type shardCounters struct {
	packets, sent, accepted, misrouted, retries, dropped atomic.Uint64
	_                                                    [64 - 6*8]byte
}

// ShardStats are one shard's counters since the process started.
type ShardStats struct {
	// Shard is the shard's index.
	Shard int
	// Packets is how many packets the shard's socket received (read by
	// quic-go; those forwarded to the other process of an upgrade are
	// not among them).
	Packets uint64
	// Sent is how many packets the shard's socket sent (each segment of
	// a GSO write counts).
	Sent uint64
	// Accepted is how many connections quic-go accepted a client's
	// Initial for and started a handshake, on this shard; failed
	// handshakes included.
	Accepted uint64
	// Misrouted is how many of those connections arrived on another shard
	// than the one the steering rule picks for their first Initial's
	// Destination Connection ID. Nonzero means packets are not steered
	// (the kernel's hash chose the socket); then short-header packets of
	// a client whose address changes also reach the wrong shard, which
	// answers with a stateless reset.
	Misrouted uint64
	// Retries is how many Retry packets the shard sent.
	Retries uint64
	// Dropped is how many packets the shard's Transport dropped before
	// they reached a connection: unparseable, for an unknown connection
	// and not answered with a stateless reset, or over a queue limit
	// under load.
	Dropped uint64
}

// NewMetrics returns counters for the shards of one bind, whose
// connection IDs are in format f. shards must be the number of sockets the
// steering program chooses among (1 without it).
func NewMetrics(f quiclb.CIDFormat, shards int) *Metrics {
	return &Metrics{format: f, shards: make([]shardCounters, max(shards, 1))}
}

func (m *Metrics) shard(i int) *shardCounters {
	if i < 0 || i >= len(m.shards) {
		return nil
	}
	return &m.shards[i]
}

// ConnTracerFunc is the type of quic.Config.Tracer.
type ConnTracerFunc = func(ctx context.Context, isClient bool, connID quic.ConnectionID) qlogwriter.Trace

// ConnTracer returns the quic.Config.Tracer for shard's listener. It counts
// Accepted and Misrouted and returns next's trace (next nil: no trace, so
// quic-go records no per-packet events). A Config returned by
// GetConfigForClient needs it too: quic-go uses that Config's Tracer.
func (m *Metrics) ConnTracer(shard int, next ConnTracerFunc) ConnTracerFunc {
	c := m.shard(shard)
	return func(ctx context.Context, isClient bool, connID quic.ConnectionID) qlogwriter.Trace {
		if c != nil && !isClient {
			c.accepted.Add(1)
			// quic-go passes the DCID of the client's first Initial,
			// also after a Retry (it is kept in the token). The Retry
			// went out from the shard that Initial was steered to, with a
			// connection ID of that shard, so both lead to one shard.
			if want, ok := quiclb.ShardFor(m.format, connID.Bytes(), len(m.shards)); ok && want != shard {
				c.misrouted.Add(1)
			}
		}
		if next == nil {
			return nil
		}
		return next(ctx, isClient, connID)
	}
}

// TransportTracer returns the quic.Transport.Tracer for shard. It counts
// Retries and Dropped and passes every event on to next, if not nil.
func (m *Metrics) TransportTracer(shard int, next qlogwriter.Recorder) qlogwriter.Recorder {
	return &transportRecorder{c: m.shard(shard), next: next}
}

type transportRecorder struct {
	c    *shardCounters
	next qlogwriter.Recorder
}

func (r *transportRecorder) RecordEvent(e qlogwriter.Event) {
	if r.c != nil {
		switch e := e.(type) {
		case qlog.PacketSent:
			if e.Header.PacketType == qlog.PacketTypeRetry {
				r.c.retries.Add(1)
			}
		case qlog.PacketDropped:
			r.c.dropped.Add(1)
		}
	}
	if r.next != nil {
		r.next.RecordEvent(e)
	}
}

func (r *transportRecorder) Close() error {
	if r.next != nil {
		return r.next.Close()
	}
	return nil
}

// Snapshot returns every shard's counters, in shard order.
func (m *Metrics) Snapshot() []ShardStats {
	out := make([]ShardStats, len(m.shards))
	for i := range m.shards {
		c := &m.shards[i]
		out[i] = ShardStats{
			Shard:     i,
			Packets:   c.packets.Load(),
			Sent:      c.sent.Load(),
			Accepted:  c.accepted.Load(),
			Misrouted: c.misrouted.Load(),
			Retries:   c.retries.Load(),
			Dropped:   c.dropped.Load(),
		}
	}
	return out
}

// LogEvery writes one debug line to log (nil: slog.Default()) every
// interval until ctx ends, with each counter's per-shard increase over
// that interval as a list in shard order:
//
//	level=DEBUG msg="quic shards" interval=10s packets="[812 790 805 799]" sent="[903 871 880 866]" accepted="[3 4 2 5]" misrouted="[0 0 0 0]" retries="[0 0 0 0]" dropped="[0 0 0 0]"
//
// An interval of zero or less writes nothing.
func (m *Metrics) LogEvery(ctx context.Context, interval time.Duration, log *slog.Logger) {
	if interval <= 0 {
		return
	}
	if log == nil {
		log = slog.Default()
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	prev := m.Snapshot()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cur := m.Snapshot()
		if log.Enabled(ctx, slog.LevelDebug) {
			n := len(cur)
			packets, sent, accepted, misrouted := make([]uint64, n), make([]uint64, n), make([]uint64, n), make([]uint64, n)
			retries, dropped := make([]uint64, n), make([]uint64, n)
			for i, s := range cur {
				p := prev[i]
				packets[i] = s.Packets - p.Packets
				sent[i] = s.Sent - p.Sent
				accepted[i] = s.Accepted - p.Accepted
				misrouted[i] = s.Misrouted - p.Misrouted
				retries[i] = s.Retries - p.Retries
				dropped[i] = s.Dropped - p.Dropped
			}
			log.LogAttrs(ctx, slog.LevelDebug, "quic shards",
				slog.Duration("interval", interval),
				slog.Any("packets", packets),
				slog.Any("sent", sent),
				slog.Any("accepted", accepted),
				slog.Any("misrouted", misrouted),
				slog.Any("retries", retries),
				slog.Any("dropped", dropped))
		}
		prev = cur
	}
}
