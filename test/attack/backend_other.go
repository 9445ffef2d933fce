//go:build !linux

package attack

import (
	"net"
	"time"
)

// waitSent gives the kernel a moment to send what was written to c, so
// that a reset that follows does not discard it (Linux asks the kernel
// instead).
func waitSent(c *net.TCPConn, limit time.Duration) {
	time.Sleep(min(limit, 100*time.Millisecond))
}
