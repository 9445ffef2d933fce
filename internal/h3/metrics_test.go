package h3

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"

	"github.com/portcullis/portcullis/internal/quiclb"
	"github.com/portcullis/portcullis/internal/testutil"
)

type fakeTrace struct{}

func (fakeTrace) AddProducer() qlogwriter.Recorder { return nil }

func TestConnTracerCountsAndMisrouting(t *testing.T) {
	m := NewMetrics(mustFormat(t, nil), 4) // shard byte at offset 1
	var calls int
	next := func(ctx context.Context, isClient bool, id quic.ConnectionID) qlogwriter.Trace {
		calls++
		return fakeTrace{}
	}
	tr := m.ConnTracer(2, next)
	id := func(b ...byte) quic.ConnectionID { return quic.ConnectionIDFromBytes(b) }
	for _, c := range []struct {
		dcid     quic.ConnectionID
		isClient bool
	}{
		{id(0, 6, 1, 2, 3, 4, 5, 6), false}, // 6 % 4 = 2: steered here
		{id(0, 2, 1, 2, 3, 4, 5, 6), false}, // 2: here
		{id(0, 5, 1, 2, 3, 4, 5, 6), false}, // 5 % 4 = 1: misrouted
		{id(0), false},                      // too short to steer: the kernel's hash
		{id(0, 5, 1, 2, 3, 4, 5, 6), true},  // a dialed connection: not counted
	} {
		if got := tr(context.Background(), c.isClient, c.dcid); got != (fakeTrace{}) {
			t.Fatalf("trace %v, want next's", got)
		}
	}
	if calls != 5 {
		t.Errorf("next called %d times", calls)
	}
	s := m.Snapshot()[2]
	if s.Accepted != 4 || s.Misrouted != 1 {
		t.Errorf("shard 2: %+v, want 4 accepted, 1 misrouted", s)
	}
	if got := m.ConnTracer(0, nil)(context.Background(), false, id(0, 4, 1, 2, 3, 4, 5, 6, 7)); got != nil {
		t.Errorf("without next: trace %v, want nil (no per-packet tracing)", got)
	}
	if s := m.Snapshot()[0]; s.Accepted != 1 || s.Misrouted != 0 {
		t.Errorf("shard 0: %+v", s)
	}
}

type recorded struct {
	mu     sync.Mutex
	events []qlogwriter.Event
	closed bool
}

func (r *recorded) RecordEvent(e qlogwriter.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorded) Close() error {
	r.closed = true
	return nil
}

func TestTransportTracer(t *testing.T) {
	m := NewMetrics(mustFormat(t, nil), 2)
	next := &recorded{}
	r := m.TransportTracer(1, next)
	r.RecordEvent(qlog.PacketSent{Header: qlog.PacketHeader{PacketType: qlog.PacketTypeRetry}})
	r.RecordEvent(qlog.PacketSent{Header: qlog.PacketHeader{PacketType: qlog.PacketTypeInitial}})
	r.RecordEvent(qlog.PacketDropped{Trigger: qlog.PacketDropDOSPrevention})
	r.RecordEvent(qlog.VersionNegotiationSent{})
	if err := r.Close(); err != nil || !next.closed {
		t.Errorf("Close: %v, next closed %v", err, next.closed)
	}
	if len(next.events) != 4 {
		t.Errorf("next saw %d events, want 4", len(next.events))
	}
	if s := m.Snapshot()[1]; s.Retries != 1 || s.Dropped != 1 {
		t.Errorf("shard 1: %+v, want 1 Retry, 1 dropped", s)
	}
	// Out of range and without next: no panic, nothing counted.
	r = m.TransportTracer(7, nil)
	r.RecordEvent(qlog.PacketDropped{})
	r.Close()
}

func TestSnapshot(t *testing.T) {
	m := NewMetrics(mustFormat(t, nil), 3)
	if len(m.shards) != 3 {
		t.Fatalf("%d shards, want 3", len(m.shards))
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 1000 {
				m.shard(i % 3).packets.Add(2)
				m.Snapshot()
			}
		})
	}
	wg.Wait()
	if m.shard(-1) != nil || m.shard(3) != nil {
		t.Error("shards out of range have counters")
	}
	for i, s := range m.Snapshot() {
		want := uint64(8 * 2 * 333) // i%3 for i in 0..999: 334 zeros, 333 ones and twos
		if i == 0 {
			want = 8 * 2 * 334
		}
		if s.Shard != i || s.Packets != want {
			t.Errorf("shard %d: %+v, want %d packets", i, s, want)
		}
	}
}

func TestLogEvery(t *testing.T) {
	m := NewMetrics(mustFormat(t, nil), 2)
	var buf testutil.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.LogEvery(ctx, 5*time.Millisecond, log)
	}()
	waitFor := func(s string) {
		t.Helper()
		deadline := time.Now().Add(testutil.Scaled(5 * time.Second))
		for !strings.Contains(buf.String(), s) {
			if time.Now().After(deadline) {
				t.Fatalf("no line with %s; log:\n%s", s, buf.String())
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor("quic shards") // LogEvery has taken its first snapshot
	m.shard(1).packets.Add(9)
	waitFor(`packets="[0 9]"`)
	cancel()
	<-done
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		for _, want := range []string{"level=DEBUG", `msg="quic shards"`, "interval=5ms", "packets=", "sent=", "accepted=", "misrouted=", "retries=", "dropped="} {
			if !strings.Contains(line, want) {
				t.Fatalf("line %q lacks %q", line, want)
			}
		}
		// Increases, not totals: only one line has the 9.
		if !strings.Contains(line, `packets="[0 9]"`) && !strings.Contains(line, `packets="[0 0]"`) {
			t.Fatalf("line %q", line)
		}
	}
	if n := strings.Count(buf.String(), "[0 9]"); n != 1 {
		t.Fatalf("%d lines with the increase, want 1", n)
	}
	// A zero interval returns at once.
	m.LogEvery(context.Background(), 0, log)
}

// TestMetricsWithQuicGo hooks the tracers into a real Transport: one
// connection through a Retry, and one stray short-header packet.
func TestMetricsWithQuicGo(t *testing.T) {
	f := mustFormat(t, nil)
	m := NewMetrics(f, 1)
	p, err := NewHandshakes(testLimits(RetryAlways), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, serverOptions{
		transport: &quic.Transport{
			ConnectionIDGenerator: quiclb.NewCIDGenerator(f, 0),
			VerifySourceAddress:   p.VerifySourceAddress,
			Tracer:                m.TransportTracer(0, nil),
			// No StatelessResetKey: the stray packet is dropped, not reset.
		},
		config: quic.Config{Tracer: m.ConnTracer(0, nil)},
	})
	roundTrip(t, context.Background(), srv.addr)

	c, err := net.DialUDP("udp", nil, srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stray := append([]byte{0x40}, make([]byte, 40)...) // short header, unknown DCID
	deadline := time.Now().Add(testutil.Scaled(5 * time.Second))
	for m.Snapshot()[0].Dropped == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the stray packet was not counted as dropped")
		}
		c.Write(stray)
		time.Sleep(5 * time.Millisecond)
	}
	s := m.Snapshot()[0]
	if s.Accepted != 1 || s.Misrouted != 0 || s.Retries != p.Stats().Retries || s.Retries == 0 {
		t.Errorf("%+v; policy %+v", s, p.Stats())
	}
}
