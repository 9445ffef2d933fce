package handoff

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// TestToChildKeepsSocketsNonBlocking: handing a socket to the new process
// leaves it in non-blocking mode for this one, which still accepts on it
// (os.File.Fd would switch the shared file description to blocking), and
// numbers the descriptors from 3.
func TestToChildKeepsSocketsNonBlocking(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File() // as bound at startup
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	nonBlocking := func() bool {
		t.Helper()
		rc, err := ln.(*net.TCPListener).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var flags int
		rc.Control(func(fd uintptr) { flags, _ = unix.FcntlInt(fd, unix.F_GETFL, 0) })
		return flags&unix.O_NONBLOCK != 0
	}
	if !nonBlocking() {
		t.Fatal("the listener is blocking to start with")
	}
	c := &ToChild{}
	defer c.Close()
	for want := 3; want <= 4; want++ {
		n, err := c.Pass(f)
		if err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Errorf("passed as fd %d, want %d", n, want)
		}
	}
	for _, cf := range c.Files() {
		cf.Fd() // what exec.Cmd does with ExtraFiles
	}
	if !nonBlocking() {
		t.Error("passing the socket to a child made this process's listener blocking")
	}
}
