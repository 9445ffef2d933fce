package listen

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// UDPBufferSize is the receive and send buffer size given to QUIC sockets
// before privileges are dropped: the 7 MiB quic-go asks for, so that it
// does not try (and fail, unprivileged) to raise them itself.
const UDPBufferSize = 7 << 20

// SizeBuffers sets f's receive and send buffers to at least size bytes,
// using SO_RCVBUFFORCE/SO_SNDBUFFORCE where the process may (CAP_NET_ADMIN)
// and the sysctl-capped SO_RCVBUF/SO_SNDBUF otherwise. It returns an error
// naming the sysctl to raise when the kernel capped a buffer below size.
func SizeBuffers(f *os.File, size int) error {
	fd := int(f.Fd())
	var short []string
	for _, b := range []struct {
		force, plain int
		sysctl       string
	}{
		{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, "net.core.rmem_max"},
		{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, "net.core.wmem_max"},
	} {
		// The kernel doubles the value set and reports the doubled value.
		if got, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, b.plain); got >= size {
			continue
		}
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, b.force, size) != nil {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, b.plain, size)
		}
		if got, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, b.plain); got < size {
			short = append(short, fmt.Sprintf("%s (got %d KiB)", b.sysctl, got/1024))
		}
	}
	if len(short) > 0 {
		return fmt.Errorf("UDP buffers are smaller than the %d KiB QUIC wants: raise %v to at least %d (sysctl -w), or start with CAP_NET_ADMIN", size/1024, short, size)
	}
	return nil
}
