package attack

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// waitSent waits, at most for limit, until c's send queue is empty (the
// peer has acknowledged every byte), so that a reset that follows does not
// discard data not yet sent.
func waitSent(c *net.TCPConn, limit time.Duration) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		queued := 0
		rc.Control(func(fd uintptr) {
			queued, err = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
		})
		if err != nil || queued == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}
