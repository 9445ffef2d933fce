package l4

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// BenchmarkTCPRelay streams 1 MiB per operation through the proxy to an
// echo server over loopback and reads it back: MB/s counts the MiB once,
// though it crosses the proxy in both directions.
func BenchmarkTCPRelay(b *testing.B) {
	srv := newFakeBackend(serve(b, func(c net.Conn) { io.Copy(c, c) }))
	log := slog.New(slog.DiscardHandler)
	addr := startTCP(b, &TCP{Frontend: "bench", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: singleTable(srv), Log: log})
	c := dial(b, addr)
	c.SetDeadline(time.Time{})
	payload := make([]byte, 1<<20)
	back := make([]byte, 64<<10)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	done := make(chan error, 1)
	for b.Loop() {
		go func() {
			_, err := c.Write(payload)
			done <- err
		}()
		for n := 0; n < len(payload); {
			k, err := c.Read(back)
			if err != nil {
				b.Fatal(err)
			}
			n += k
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTCPConnect measures a whole proxied connection: accept,
// connect, relay one byte each way, close.
func BenchmarkTCPConnect(b *testing.B) {
	srv := newFakeBackend(serve(b, echo))
	log := slog.New(slog.DiscardHandler)
	addr := startTCP(b, &TCP{Frontend: "bench", HeaderTimeout: testHeaderTimeout, IdleTimeout: testTCPIdleTimeout, Table: singleTable(srv), Log: log})
	buf := make([]byte, 1)
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp4", addr)
		if err != nil {
			b.Fatal(err)
		}
		c.Write(buf)
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
