package l4

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/upstream"
)

// BenchmarkUDPRelay relays round trips between clients and an echo server
// through the relay: each op is one datagram each way, and datagrams/s
// counts both. "direct" is the same load without the relay, for scale.
// The echo server and the clients do not allocate, so allocs/op is the
// relay's.
func BenchmarkUDPRelay(b *testing.B) {
	for _, tc := range []struct {
		size, clients int
		direct        bool
	}{
		{size: 64, clients: 1},
		{size: 1400, clients: 1},
		{size: 64, clients: 8},
		{size: 64, clients: 1, direct: true},
		{size: 64, clients: 8, direct: true},
	} {
		name := fmt.Sprintf("size=%d/clients=%d", tc.size, tc.clients)
		if tc.direct {
			name += "/direct"
		}
		b.Run(name, func(b *testing.B) { benchUDPRelay(b, tc.size, tc.clients, tc.direct) })
	}
}

func benchUDPRelay(b *testing.B, size, clients int, direct bool) {
	echo := udpBenchEcho(b)
	target := echo
	if !direct {
		be := newUDPTestBackend(b, balance.RoundRobin, echo.String())
		u := &UDP{Frontend: "bench", IdleTimeout: testUDPIdleTimeout, Backend: func() (*upstream.Backend, string) { return be.Backend, "echo" }}
		target = startUDP(b, u, "127.0.0.1:0").LocalAddr().(*net.UDPAddr)
	}
	conns := make(chan *net.UDPConn, clients)
	for range clients {
		c, err := net.DialUDP("udp", nil, target)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		// Warm up: the flow exists and the buffer pool is filled.
		for range 100 {
			udpBenchRoundTrip(b, c, make([]byte, size), make([]byte, 64<<10))
		}
		conns <- c
	}
	b.ReportAllocs()
	b.SetBytes(int64(2 * size))
	b.ResetTimer()
	start := time.Now()
	// clients goroutines share b.N round trips.
	var wg sync.WaitGroup
	for i := range clients {
		ops := b.N / clients
		if i < b.N%clients {
			ops++
		}
		c := <-conns
		wg.Go(func() {
			out, in := make([]byte, size), make([]byte, 64<<10)
			for j := range ops {
				if j%4096 == 0 {
					c.SetReadDeadline(time.Now().Add(udpBound()))
				}
				udpBenchRoundTrip(b, c, out, in)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(2*b.N)/elapsed.Seconds(), "datagrams/s")
}

// udpBenchRoundTrip sends out and waits for its echo.
func udpBenchRoundTrip(b *testing.B, c *net.UDPConn, out, in []byte) {
	if _, err := c.Write(out); err != nil {
		b.Fatal(err)
	}
	n, err := c.Read(in)
	if err != nil {
		b.Fatal(err)
	}
	if n != len(out) {
		b.Fatalf("echo of %d bytes, want %d", n, len(out))
	}
}

// udpBenchEcho is an echo server that does not allocate per datagram.
func udpBenchEcho(b *testing.B) *net.UDPAddr {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			pc.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	b.Cleanup(func() { pc.Close(); <-done })
	return pc.LocalAddr().(*net.UDPAddr)
}
