package l4

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// udpEnablePktinfo asks the kernel to report each datagram's destination
// address on pc when pc is bound to a wildcard address, and reports
// whether it did. setsockopt needs no privilege, so this works after the
// privilege drop.
func udpEnablePktinfo(pc *net.UDPConn) (bool, error) {
	la, ok := pc.LocalAddr().(*net.UDPAddr)
	if !ok || !la.IP.IsUnspecified() {
		return false, nil
	}
	rc, err := pc.SyscallConn()
	if err != nil {
		return false, err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		domain, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err != nil {
			serr = fmt.Errorf("getsockopt SO_DOMAIN: %w", err)
			return
		}
		if domain == unix.AF_INET6 {
			if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1); err != nil {
				serr = fmt.Errorf("setsockopt IPV6_RECVPKTINFO: %w", err)
				return
			}
		}
		// Also on IPv6 sockets, for the IPv4 datagrams of a dual-stack
		// socket; an IPv6-only socket refuses nothing here either.
		if err := unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1); err != nil && domain == unix.AF_INET {
			serr = fmt.Errorf("setsockopt IP_PKTINFO: %w", err)
		}
	})
	if err == nil {
		err = serr
	}
	return err == nil, err
}

// udpPacketDestination returns the destination address and the arrival
// interface of a datagram from its control messages (IP_PKTINFO or
// IPV6_PKTINFO), or the zero Addr when they name none. It does not
// allocate.
func udpPacketDestination(oob []byte) (netip.Addr, uint32) {
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			break
		}
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo { int ipi_ifindex; struct in_addr
			// ipi_spec_dst, ipi_addr; }: ipi_addr is the header's
			// destination.
			return netip.AddrFrom4([4]byte(data[8:12])), binary.NativeEndian.Uint32(data[0:4])
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			// struct in6_pktinfo { struct in6_addr ipi6_addr; int
			// ipi6_ifindex; }
			return netip.AddrFrom16([16]byte(data[0:16])).Unmap(), binary.NativeEndian.Uint32(data[16:20])
		}
		oob = rest
	}
	return netip.Addr{}, 0
}

// udpReplyOOB is the control message that makes a reply leave from local,
// the address the client sent to, or nil when local is the zero Addr. The
// kernel routes the reply as usual; the interface is named only for IPv6
// link-local addresses, which need it. IPv4 uses IP_PKTINFO, which an IPv6
// socket also accepts for IPv4-mapped destinations.
func udpReplyOOB(local netip.Addr, ifindex uint32) []byte {
	switch {
	case !local.IsValid():
		return nil
	case local.Is4():
		cm := ipv4.ControlMessage{Src: local.AsSlice()}
		return cm.Marshal()
	}
	cm := ipv6.ControlMessage{Src: local.AsSlice()}
	if local.IsLinkLocalUnicast() {
		cm.IfIndex = int(ifindex)
	}
	return cm.Marshal()
}

// udpServerReader reads the replies on a flow's server socket without
// holding a buffer while it waits: a buffer is taken from udpBuffers only
// once the socket is readable, so that idle flows cost no buffer memory.
type udpServerReader struct {
	conn *net.UDPConn
	rc   syscall.RawConn
	read func(fd uintptr) bool // made once, so that next does not allocate

	buf *udpBuffer
	n   int
	err error
}

func newUDPServerReader(conn *net.UDPConn) (*udpServerReader, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &udpServerReader{conn: conn, rc: rc}
	r.read = func(fd uintptr) bool {
		buf := udpBuffers.Get().(*udpBuffer)
		for {
			n, err := unix.Read(int(fd), buf[:])
			switch err {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				udpBuffers.Put(buf)
				return false // wait until readable
			case nil:
				r.buf, r.n, r.err = buf, n, nil
			default:
				udpBuffers.Put(buf)
				r.buf, r.n, r.err = nil, 0, err
			}
			return true
		}
	}
	return r, nil
}

// next waits for the next datagram from the server and returns it in a
// buffer that the caller gives back to udpBuffers. It fails with the
// socket's error: ECONNREFUSED after an ICMP port unreachable, or
// net.ErrClosed once the socket is closed.
func (r *udpServerReader) next() (*udpBuffer, int, error) {
	if err := r.rc.Read(r.read); err != nil {
		return nil, 0, err
	}
	buf, n, err := r.buf, r.n, r.err
	r.buf = nil
	if err != nil {
		return nil, 0, &net.OpError{Op: "read", Net: "udp", Source: r.conn.LocalAddr(), Addr: r.conn.RemoteAddr(), Err: err}
	}
	return buf, n, nil
}
