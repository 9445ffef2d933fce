package h3

import (
	"encoding/binary"
	"net"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// countedConn is a shard's socket as quic-go sees it: the *net.UDPConn
// itself, every method promoted, so that quic-go still reads in batches
// (ReadBatch: recvmmsg), sends with GSO and sets ECN; it counts the
// datagrams it reads and the packets it writes into c.
type countedConn struct {
	*net.UDPConn
	batch *ipv4.PacketConn
	c     *shardCounters
}

// newCountedConn wraps udp, counting into c (nil: the shard is not
// counted, and udp is returned as it is).
func newCountedConn(udp *net.UDPConn, c *shardCounters) net.PacketConn {
	if c == nil {
		return udp
	}
	return &countedConn{UDPConn: udp, batch: ipv4.NewPacketConn(udp), c: c}
}

// ReadBatch reads up to len(ms) datagrams in one system call, as quic-go
// does with a *net.UDPConn.
func (c *countedConn) ReadBatch(ms []ipv4.Message, flags int) (int, error) {
	n, err := c.batch.ReadBatch(ms, flags)
	if n > 0 {
		c.c.packets.Add(uint64(n))
	}
	return n, err
}

// ReadFrom reads one datagram.
func (c *countedConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := c.UDPConn.ReadFrom(p)
	if err == nil {
		c.c.packets.Add(1)
	}
	return n, addr, err
}

// WriteMsgUDP writes one datagram, or several packets of one size at
// once (GSO, UDP_SEGMENT in oob).
func (c *countedConn) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (int, int, error) {
	n, oobn, err := c.UDPConn.WriteMsgUDP(b, oob, addr)
	if err == nil {
		c.c.sent.Add(segments(len(b), oob))
	}
	return n, oobn, err
}

// WriteTo writes one datagram.
func (c *countedConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	n, err := c.UDPConn.WriteTo(b, addr)
	if err == nil {
		c.c.sent.Add(1)
	}
	return n, err
}

// segments is the number of packets a write of size bytes with control
// messages oob sends: size / UDP_SEGMENT's size, rounded up, or 1.
func segments(size int, oob []byte) uint64 {
	for len(oob) >= unix.CmsgSpace(0) {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.CmsgLen(0) || l > len(oob) {
			break
		}
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_SEGMENT && l >= unix.CmsgLen(2) {
			seg := int(binary.NativeEndian.Uint16(oob[unix.CmsgLen(0):]))
			if seg > 0 && size > 0 {
				return uint64((size + seg - 1) / seg)
			}
			break
		}
		next := unix.CmsgSpace(l - unix.CmsgLen(0))
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	return 1
}
