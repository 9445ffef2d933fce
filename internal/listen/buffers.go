package listen

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// SizeBuffers sets f's receive and send buffers to at least rcv and snd
// bytes (quic-go wants 7 MiB; sized before privileges are dropped, it does
// not try, and fail, to raise them itself),
// using SO_RCVBUFFORCE/SO_SNDBUFFORCE where the process may (CAP_NET_ADMIN)
// and the sysctl-capped SO_RCVBUF/SO_SNDBUF otherwise. It returns an error
// naming the sysctl to raise when the kernel capped a buffer below size.
func SizeBuffers(f *os.File, rcv, snd int) error {
	fd := int(f.Fd())
	var short []string
	for _, b := range []struct {
		force, plain int
		sysctl       string
		size         int
	}{
		{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, "net.core.rmem_max", rcv},
		{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, "net.core.wmem_max", snd},
	} {
		size := b.size
		if size <= 0 {
			continue
		}
		// The kernel doubles the value set and reports the doubled value.
		if got, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, b.plain); got >= size {
			continue
		}
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, b.force, size) != nil {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, b.plain, size)
		}
		if got, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, b.plain); got < size {
			short = append(short, fmt.Sprintf("%s to at least %d (got %d KiB of %d KiB)", b.sysctl, size, got/1024, size/1024))
		}
	}
	if len(short) > 0 {
		return fmt.Errorf("the kernel capped the UDP buffers: raise %s (sysctl -w), or start with CAP_NET_ADMIN", strings.Join(short, " and "))
	}
	return nil
}
