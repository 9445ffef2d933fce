package l4

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// TCP states of the kernel (include/net/tcp_states.h) in tcpi_state.
const (
	tcpEstablished = 1
	tcpSynSent     = 2
)

// synUnanswered reports whether a connecting socket has sent its SYN and
// got no answer yet (state SYN-SENT); otherwise it says what it found.
func synUnanswered(rc syscall.RawConn) (bool, string) {
	var info *unix.TCPInfo
	var err error
	if cerr := rc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); cerr != nil {
		err = cerr
	}
	switch {
	case err != nil:
		return false, fmt.Sprintf("the connect ended meanwhile (%v)", err)
	case info.State == tcpSynSent:
		return true, "SYN sent, no answer"
	case info.State == tcpEstablished:
		return false, "the server had answered, the proxy did not get to it in time: it is overloaded"
	}
	return false, fmt.Sprintf("the server had answered (TCP state %d), the proxy did not get to it in time: it is overloaded", info.State)
}
