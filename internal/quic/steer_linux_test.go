package quic

import (
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// bindShards binds n UDP sockets to one loopback port with SO_REUSEPORT.
func bindShards(t *testing.T, n int) []*net.UDPConn {
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

func fds(t *testing.T, conns []*net.UDPConn) []int {
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

// skipOrFail skips a test that needs to load the steering program where
// that is not allowed, except in CI (CI=true), which runs as root.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// arrivals reports the shard of every datagram the sockets receive.
func arrivals(conns []*net.UDPConn) <-chan int {
	got := make(chan int, 64)
	for i, c := range conns {
		go func() {
			buf := make([]byte, 2048)
			for {
				if _, _, err := c.ReadFromUDP(buf); err != nil {
					return
				}
				got <- i
			}
		}()
	}
	return got
}

func next(got <-chan int) int {
	select {
	case i := <-got:
		return i
	case <-time.After(time.Second):
		return -1
	}
}

func TestSteeringByConnectionID(t *testing.T) {
	const shards, off = 4, 3 // first octet + a 2-byte server ID
	conns := bindShards(t, shards)
	st, err := LoadSteering(shards, off)
	if err != nil {
		skipOrFail(t, "cannot load the reuseport program here (needs CAP_BPF or CAP_SYS_ADMIN): %v", err)
	}
	defer st.Close()
	if err := st.Attach(fds(t, conns)); err != nil {
		t.Fatal(err)
	}
	got := arrivals(conns)
	// Send from many source ports, so that the kernel's hash alone would
	// spread each shard's packets over every socket.
	for src := 0; src < 8; src++ {
		client, err := net.DialUDP("udp", nil, conns[0].LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		for shard := 0; shard < shards; shard++ {
			dcid := []byte{0x0b, 0xaa, 0xbb, byte(shard + shards*src), 1, 2, 3, 4, 5, 6, 7, 8}
			short := append([]byte{0x40}, dcid...)
			short = append(short, make([]byte, 30)...)
			client.Write(short)
			if got := next(got); got != shard {
				t.Fatalf("short header for shard %d from source %d reached shard %d", shard, src, got)
			}
			long := append([]byte{0xc0, 0, 0, 0, 1, byte(len(dcid))}, dcid...)
			long = append(long, make([]byte, 30)...)
			client.Write(long)
			if got := next(got); got != shard {
				t.Fatalf("long header for shard %d from source %d reached shard %d", shard, src, got)
			}
		}
		client.Close()
	}
	for i, n := range st.Counters.Read(shards) {
		if n != 8*2 {
			t.Errorf("shard %d: the steering counter says %d packets, want 16", i, n)
		}
	}
}
