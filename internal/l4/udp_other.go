//go:build !linux

package l4

import (
	"net"
	"net/netip"
)

// udpEnablePktinfo reports false: other systems send replies from the
// address the routing table prefers when a socket is bound to a wildcard
// address.
func udpEnablePktinfo(pc *net.UDPConn) (bool, error) { return false, nil }

func udpPacketDestination(oob []byte) (netip.Addr, uint32) { return netip.Addr{}, 0 }

func udpReplyOOB(local netip.Addr, ifindex uint32) []byte { return nil }

// udpServerReader reads the replies on a flow's server socket into a
// buffer it holds while it waits.
type udpServerReader struct {
	conn *net.UDPConn
}

func newUDPServerReader(conn *net.UDPConn) (*udpServerReader, error) {
	return &udpServerReader{conn: conn}, nil
}

// next waits for the next datagram from the server and returns it in a
// buffer that the caller gives back to udpBuffers.
func (r *udpServerReader) next() (*udpBuffer, int, error) {
	buf := udpBuffers.Get().(*udpBuffer)
	n, err := r.conn.Read(buf[:])
	if err != nil {
		udpBuffers.Put(buf)
		return nil, 0, err
	}
	return buf, n, nil
}
