package testutil

import (
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// ReusePortUDP binds n UDP sockets to one loopback port with
// SO_REUSEPORT, closed when the test ends.
func ReusePortUDP(t testing.TB, n int) []*net.UDPConn {
	t.Helper()
	var conns []*net.UDPConn
	addr := "127.0.0.1:0"
	for i := 0; i < n; i++ {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			t.Fatal(err)
		}
		ua, _ := net.ResolveUDPAddr("udp", addr)
		sa := &unix.SockaddrInet4{Port: ua.Port, Addr: [4]byte{127, 0, 0, 1}}
		if err := unix.Bind(fd, sa); err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(fd), "shard")
		c, err := net.FilePacketConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c.(*net.UDPConn))
		addr = c.LocalAddr().String()
		t.Cleanup(func() { c.Close() })
	}
	return conns
}

// FDs returns the descriptors of conns.
func FDs(t testing.TB, conns []*net.UDPConn) []int {
	var out []int
	for _, c := range conns {
		rc, err := c.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		rc.Control(func(fd uintptr) { out = append(out, int(fd)) })
	}
	return out
}

// SkipOrFail skips a test that needs to load the steering program where
// that is not allowed, except in CI (CI=true), which runs as root.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}
