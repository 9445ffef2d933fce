package l4

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// newProgressProbe returns a probe that sums the bytes received and the
// bytes acknowledged by the peer on both sockets, as the kernel counts
// them in TCP_INFO, or nil when either is not a TCP socket.
func newProgressProbe(a, b net.Conn) progressProbe {
	ra, ok := rawConn(a)
	if !ok {
		return nil
	}
	rb, ok := rawConn(b)
	if !ok {
		return nil
	}
	return func() (uint64, bool) {
		na, oka := tcpBytes(ra)
		nb, okb := tcpBytes(rb)
		return na + nb, oka && okb
	}
}

func rawConn(c net.Conn) (syscall.RawConn, bool) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil, false
	}
	rc, err := tc.SyscallConn()
	return rc, err == nil
}

// tcpBytes returns tcpi_bytes_received + tcpi_bytes_acked of the socket.
func tcpBytes(rc syscall.RawConn) (uint64, bool) {
	var info *unix.TCPInfo
	var err error
	cerr := rc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if cerr != nil || err != nil {
		return 0, false
	}
	return info.Bytes_received + info.Bytes_acked, true
}
