package h3

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/quic-go/quic-go"
	"golang.org/x/sys/unix"
)

// cmsg returns one control message of level and type with data.
func cmsg(level, typ int32, data []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

func TestSegments(t *testing.T) {
	seg := binary.NativeEndian.AppendUint16(nil, 1200)
	ecn := cmsg(unix.IPPROTO_IP, unix.IP_TOS, []byte{2, 0, 0, 0})
	gso := cmsg(unix.IPPROTO_UDP, unix.UDP_SEGMENT, seg)
	for _, c := range []struct {
		name string
		size int
		oob  []byte
		want uint64
	}{
		{"no control message", 1200, nil, 1},
		{"ECN only", 1200, ecn, 1},
		{"GSO, three full segments", 3600, gso, 3},
		{"GSO, a short last segment", 3000, gso, 3},
		{"ECN then GSO", 2500, append(append([]byte{}, ecn...), gso...), 3},
		{"truncated", 3000, gso[:unix.CmsgLen(0)+1], 1},
	} {
		if got := segments(c.size, c.oob); got != c.want {
			t.Errorf("%s: segments(%d) = %d, want %d", c.name, c.size, got, c.want)
		}
	}
}

// onlyBatches is a countedConn whose ReadFrom fails the test: quic-go must
// find ReadBatch, WriteMsgUDP and SyscallConn through the wrapper, as on a
// *net.UDPConn.
type onlyBatches struct {
	*countedConn
	readFrom *atomic.Int64
}

func (c onlyBatches) ReadFrom(p []byte) (int, net.Addr, error) {
	c.readFrom.Add(1)
	return c.countedConn.ReadFrom(p)
}

// TestCountedConnServesQUIC: a quic-go server on a counted socket completes
// a handshake and echoes a stream; the shard counts the packets both ways,
// and quic-go read in batches, never one datagram at a time.
func TestCountedConnServesQUIC(t *testing.T) {
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var c shardCounters
	var readFrom atomic.Int64
	conn := onlyBatches{newCountedConn(udp, &c).(*countedConn), &readFrom}
	tr := &quic.Transport{Conn: conn}
	defer tr.Close()
	ln, err := tr.Listen(serverTLS(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		qc, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		s, err := qc.AcceptStream(context.Background())
		if err != nil {
			return
		}
		io.Copy(s, s)
		s.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	qc, err := quic.DialAddr(ctx, udp.LocalAddr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{testALPN}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	s, err := qc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 100_000)
	go func() { s.Write(msg); s.Close() }()
	got, err := io.ReadAll(s)
	if err != nil || len(got) != len(msg) {
		t.Fatalf("echo: %d bytes, %v", len(got), err)
	}
	in, out := c.packets.Load(), c.sent.Load()
	if in < 10 || out < 80 { // 100 kB back is at least 80 packets of 1250 bytes
		t.Errorf("counted %d packets in and %d out, want the handshake and 100 kB each way", in, out)
	}
	if n := readFrom.Load(); n != 0 {
		t.Errorf("quic-go read %d datagrams one at a time: it did not find ReadBatch", n)
	}
}
