package listen

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// dupOf returns a duplicate of a real socket's descriptor, the way a
// socket reaches portcullis from systemd: the original is closed, the
// duplicate keeps the socket open.
func dupOf(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(s uintptr) { fd, dupErr = unix.Dup(int(s)) }); err != nil {
		t.Fatal(err)
	}
	if dupErr != nil {
		t.Fatal(dupErr)
	}
	return fd
}

// socketFD opens a real socket on address and returns a duplicate of its
// descriptor: a listening one for tcp, a bound one for udp.
func socketFD(t *testing.T, network, address string) int {
	t.Helper()
	switch network {
	case "tcp":
		l, err := net.Listen("tcp", address)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return dupOf(t, l.(*net.TCPListener))
	case "udp":
		c, err := net.ListenPacket("udp", address)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return dupOf(t, c.(*net.UDPConn))
	}
	t.Fatalf("network %q", network)
	return -1
}

// pass describes a real socket as systemd would pass it.
func pass(t *testing.T, network, address, name string) *Passed {
	t.Helper()
	fd := socketFD(t, network, address)
	p, err := FromFD(fd, name, "systemd")
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	closeOnCleanup(t, p.File)
	return p
}

func TestFromFD(t *testing.T) {
	t.Run("tcp", func(t *testing.T) {
		fd := socketFD(t, "tcp", "127.0.0.1:0")
		p, err := FromFD(fd, "web", "systemd")
		if err != nil {
			unix.Close(fd)
			t.Fatal(err)
		}
		closeOnCleanup(t, p.File)
		if p.Network != "tcp" || p.Name != "web" || p.Source != "systemd" || p.Addr.Addr() != netip.MustParseAddr("127.0.0.1") || p.Addr.Port() == 0 {
			t.Errorf("got %+v, want tcp web systemd 127.0.0.1:PORT", p)
		}
		if int(p.File.Fd()) != fd {
			t.Errorf("File has fd %d, want %d", p.File.Fd(), fd)
		}
		checkCloseOnExec(t, fd)
		if got := checkAccepts(t, p.File); got != p.Addr {
			t.Errorf("the socket listens on %v, Passed says %v", got, p.Addr)
		}
	})
	t.Run("udp", func(t *testing.T) {
		p := pass(t, "udp", "127.0.0.1:0", "quic")
		if p.Network != "udp" || p.Name != "quic" || p.Addr.Addr() != netip.MustParseAddr("127.0.0.1") || p.Addr.Port() == 0 {
			t.Errorf("got %+v, want udp quic 127.0.0.1:PORT", p)
		}
		checkCloseOnExec(t, int(p.File.Fd()))
		if got := checkReceives(t, p.File); got != p.Addr {
			t.Errorf("the socket is bound to %v, Passed says %v", got, p.Addr)
		}
	})
	t.Run("ipv4-mapped", func(t *testing.T) {
		fd := mappedListener(t)
		p, err := FromFD(fd, "web", "systemd")
		if err != nil {
			unix.Close(fd)
			t.Fatal(err)
		}
		closeOnCleanup(t, p.File)
		if p.Addr.Addr() != netip.MustParseAddr("::ffff:127.0.0.1") {
			t.Errorf("Addr = %v, want the IPv4-mapped ::ffff:127.0.0.1 the socket has", p.Addr)
		}
	})
}

// checkCloseOnExec checks that a passed socket is not leaked into child
// processes.
func checkCloseOnExec(t *testing.T, fd int) {
	t.Helper()
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("fd %d is inherited by child processes: want close-on-exec", fd)
	}
}

// mappedListener returns a listening IPv6 socket bound to the IPv4-mapped
// loopback address ::ffff:127.0.0.1, as a dual-stack ListenStream= can be.
func mappedListener(t *testing.T) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Skip("no IPv6:", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
		t.Skip("no dual-stack sockets:", err)
	}
	sa := &unix.SockaddrInet6{Addr: netip.MustParseAddr("::ffff:127.0.0.1").As16()}
	if err := unix.Bind(fd, sa); err != nil {
		t.Skip("cannot bind ::ffff:127.0.0.1:", err)
	}
	if err := unix.Listen(fd, 8); err != nil {
		t.Fatal(err)
	}
	ok = true
	return fd
}

func TestFromFDRejects(t *testing.T) {
	// Each fd stays open after a rejection; the caller closes it.
	check := func(t *testing.T, fd int, wants ...string) {
		t.Helper()
		defer unix.Close(fd)
		p, err := FromFD(fd, "web", "systemd")
		if err == nil {
			p.File.Close()
			t.Fatalf("FromFD accepted it: %+v", p)
		}
		for _, want := range append(wants, fmt.Sprintf("fd %d", fd), `"web"`) {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
	}
	t.Run("tcp not listening", func(t *testing.T) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			unix.Close(fd)
			t.Fatal(err)
		}
		check(t, fd, "is not listening", "Accept=no")
	})
	t.Run("not a socket", func(t *testing.T) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		fd, err := unix.Dup(int(r.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		check(t, fd, "is not a socket")
	})
	t.Run("unix socket not listening", func(t *testing.T) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fds[1])
		check(t, fds[0], "is not listening")
	})
	t.Run("unix datagram socket", func(t *testing.T) {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fds[1])
		check(t, fds[0], "not a stream socket")
	})
}

func TestMatchesAddress(t *testing.T) {
	tests := []struct {
		passed, spec string
		want         bool
	}{
		{"127.0.0.1:443", "127.0.0.1:443", true},
		{"127.0.0.1:443", "127.0.0.1:8443", false},
		{"127.0.0.1:443", "127.0.0.2:443", false},
		{"[::1]:443", "[::1]:443", true},
		{"[::ffff:127.0.0.1]:443", "127.0.0.1:443", true}, // IPv4-mapped counts as IPv4
		{"[::ffff:127.0.0.1]:443", "[::1]:443", false},

		// ":port" is every address: a wildcard socket of either family.
		{"[::]:443", ":443", true},
		{"0.0.0.0:443", ":443", true},
		{"[::ffff:0.0.0.0]:443", ":443", true},
		{"[::]:443", ":8443", false},
		{"127.0.0.1:443", ":443", false}, // one address is not every address
		{"[::]:443", "0.0.0.0:443", false},
		{"0.0.0.0:443", "0.0.0.0:443", true},
	}
	for _, tt := range tests {
		p := &Passed{Addr: netip.MustParseAddrPort(tt.passed)}
		if got := p.MatchesAddress(tt.spec); got != tt.want {
			t.Errorf("socket on %s matches bind %s = %v, want %v", tt.passed, tt.spec, got, tt.want)
		}
	}
}

func TestAcquireUsesPassedSockets(t *testing.T) {
	tcp := pass(t, "tcp", "127.0.0.1:0", "web-tcp")
	udp := pass(t, "udp", "127.0.0.1:0", "web-udp")
	specs := []Spec{
		{Frontend: "web", Network: "udp", Address: udp.Addr.String(), Purpose: "HTTP/3"},
		{Frontend: "web", Network: "tcp", Address: tcp.Addr.String(), Purpose: "HTTPS"},
	}
	// bind is true: a passed socket is still preferred to binding anew.
	socks, err := Acquire(specs, []*Passed{tcp, udp}, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(socks) != 2 {
		t.Fatalf("got %d sockets, want 2", len(socks))
	}
	for i, want := range []*Passed{udp, tcp} {
		s := socks[i]
		if s.File != want.File || s.Name != want.Name || s.Source != "systemd" || s.Spec != specs[i] {
			t.Errorf("%v got socket %q from %s, want the passed %q", specs[i], s.Name, s.Source, want.Name)
		}
	}
}

func TestAcquireMatchesIPv4Mapped(t *testing.T) {
	fd := mappedListener(t)
	p, err := FromFD(fd, "dual", "systemd")
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	closeOnCleanup(t, p.File)
	spec := webSpec("tcp", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p.Addr.Port()).String())
	socks, err := Acquire([]Spec{spec}, []*Passed{p}, false)
	if err != nil {
		t.Fatal(err)
	}
	if socks[0].File != p.File {
		t.Errorf("bind %s did not get the socket on %v", spec.Address, p.Addr)
	}
}

// synthetic describes a wildcard socket without opening one: tests listen
// on loopback only. Its File is a pipe, which Acquire only hands on.
func synthetic(t *testing.T, network, addr, name string) *Passed {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	closeOnCleanup(t, r)
	return &Passed{File: r, Name: name, Network: network, Addr: netip.MustParseAddrPort(addr), Source: "systemd"}
}

func TestAcquireMatchesWildcard(t *testing.T) {
	v6 := synthetic(t, "tcp", "[::]:8443", "https")
	v4 := synthetic(t, "udp", "0.0.0.0:8443", "quic")
	socks, err := Acquire([]Spec{webSpec("tcp", ":8443"), webSpec("udp", ":8443")}, []*Passed{v4, v6}, false)
	if err != nil {
		t.Fatal(err)
	}
	if socks[0].File != v6.File || socks[1].File != v4.File {
		t.Errorf(":8443 did not get the wildcard sockets of its type: got %q and %q", socks[0].Name, socks[1].Name)
	}
}

func TestAcquireWrongTypeNotMatched(t *testing.T) {
	udp := pass(t, "udp", "127.0.0.1:0", "quic")
	spec := webSpec("tcp", udp.Addr.String()) // same address, other type
	_, err := Acquire([]Spec{spec}, []*Passed{udp}, false)
	if err == nil {
		t.Fatal("a tcp bind took a udp socket")
	}
	bind, other := bindErrors(t, err)
	if len(bind) != 1 || bind[0].Spec != spec || !strings.Contains(bind[0].Error(), "no socket was passed") {
		t.Errorf("BindErrors = %v, want one for %v saying no socket was passed", bind, spec)
	}
	if len(other) != 1 || !strings.Contains(other[0].Error(), "udp "+udp.Addr.String()) {
		t.Errorf("other errors = %v, want the unused udp socket named", other)
	}
}

func TestAcquireUnusedPassedSocket(t *testing.T) {
	used := pass(t, "tcp", "127.0.0.1:0", "web")
	extra := pass(t, "udp", "127.0.0.1:0", "extra")
	_, err := Acquire([]Spec{webSpec("tcp", used.Addr.String())}, []*Passed{used, extra}, true)
	if err == nil {
		t.Fatal("Acquire accepted a passed socket that no bind uses")
	}
	bind, other := bindErrors(t, err)
	if len(bind) != 0 || len(other) != 1 {
		t.Fatalf("errors = %v, want exactly one, about the unused socket", err)
	}
	msg := other[0].Error()
	for _, want := range []string{
		"systemd passed socket",
		fmt.Sprintf("fd %d", extra.File.Fd()),
		`name "extra"`,
		"udp " + extra.Addr.String(),
		"no bind uses it",
		"address " + extra.Addr.String(),
		"fd_name: extra",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not say %q", msg, want)
		}
	}
	// The used socket is the caller's (systemd's): Acquire does not close it.
	checkAccepts(t, used.File)
}

func TestAcquireByFDName(t *testing.T) {
	web := pass(t, "tcp", "127.0.0.1:0", "web")
	admin := pass(t, "tcp", "127.0.0.1:0", "admin")
	passed := []*Passed{web, admin}

	t.Run("picks the named socket", func(t *testing.T) {
		spec := webSpec("tcp", admin.Addr.String())
		spec.FDName = "admin"
		socks, err := Acquire([]Spec{spec, webSpec("tcp", web.Addr.String())}, passed, false)
		if err != nil {
			t.Fatal(err)
		}
		if socks[0].File != admin.File || socks[1].File != web.File {
			t.Errorf("got %q and %q, want admin and web", socks[0].Name, socks[1].Name)
		}
	})

	t.Run("name on another address", func(t *testing.T) {
		spec := webSpec("tcp", web.Addr.String())
		spec.FDName = "admin"
		_, err := Acquire([]Spec{spec}, passed, false)
		bind, _ := bindErrors(t, err)
		if len(bind) != 1 {
			t.Fatalf("errors = %v, want a BindError", err)
		}
		want := fmt.Sprintf(`the passed socket named "admin" is tcp %s, not %s`, admin.Addr, web.Addr)
		if !strings.Contains(bind[0].Error(), want) {
			t.Errorf("message %q does not say %q", bind[0].Error(), want)
		}
	})

	t.Run("no such name", func(t *testing.T) {
		spec := webSpec("tcp", web.Addr.String())
		spec.FDName = "nope"
		_, err := Acquire([]Spec{spec}, passed, true)
		bind, _ := bindErrors(t, err)
		if len(bind) != 1 {
			t.Fatalf("errors = %v, want a BindError", err)
		}
		for _, want := range []string{`named "nope"`, "LISTEN_FDNAMES", "FileDescriptorName="} {
			if !strings.Contains(bind[0].Error(), want) {
				t.Errorf("message %q does not say %q", bind[0].Error(), want)
			}
		}
	})
}

func TestAcquireSameNameTCPAndUDP(t *testing.T) {
	// One socket unit with ListenStream= and ListenDatagram= names both
	// sockets alike; fd_name_udp defaults to fd_name.
	udpFD := socketFD(t, "udp", "127.0.0.1:0")
	udp, err := FromFD(udpFD, "web", "systemd")
	if err != nil {
		unix.Close(udpFD)
		t.Fatal(err)
	}
	closeOnCleanup(t, udp.File)
	l, err := net.Listen("tcp", udp.Addr.String())
	if err != nil {
		t.Skipf("tcp port %d is taken: %v", udp.Addr.Port(), err)
	}
	tcpFD := dupOf(t, l.(*net.TCPListener))
	l.Close()
	tcp, err := FromFD(tcpFD, "web", "systemd")
	if err != nil {
		unix.Close(tcpFD)
		t.Fatal(err)
	}
	closeOnCleanup(t, tcp.File)

	specs := []Spec{webSpec("udp", udp.Addr.String()), webSpec("tcp", tcp.Addr.String())}
	specs[0].FDName, specs[1].FDName = "web", "web"
	socks, err := Acquire(specs, []*Passed{tcp, udp}, false)
	if err != nil {
		t.Fatal(err)
	}
	if socks[0].File != udp.File || socks[1].File != tcp.File {
		t.Errorf("the udp and tcp binds named web did not get the socket of their type")
	}
}

func TestActivatedEnvironment(t *testing.T) {
	pid := strconv.Itoa(os.Getpid())
	tests := []struct {
		name, pid, fds, names string
		wantErr               string
	}{
		{name: "not activated"},
		{name: "for another process", pid: "1", fds: "2", names: "a:b"},
		{name: "zero sockets", pid: pid, fds: "0"},
		{name: "bad count", pid: pid, fds: "two", wantErr: `LISTEN_FDS="two" is not a count`},
		{name: "negative count", pid: pid, fds: "-1", wantErr: `LISTEN_FDS="-1" is not a count`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("LISTEN_PID", tt.pid)
			t.Setenv("LISTEN_FDS", tt.fds)
			t.Setenv("LISTEN_FDNAMES", tt.names)
			got, err := Activated()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("err = %v, want %q", err, tt.wantErr)
				}
			} else if err != nil || len(got) != 0 {
				t.Errorf("Activated() = %v, %v; want no sockets", got, err)
			}
			for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
				if val, ok := os.LookupEnv(v); ok {
					t.Errorf("%s=%q is still set: a child process would take the sockets", v, val)
				}
			}
		})
	}
}

// TestActivated runs the sd_listen_fds(3) protocol for real: a child
// process gets sockets at fds 3 and 4 with LISTEN_FDS and LISTEN_FDNAMES.
// systemd sets LISTEN_PID between fork and exec, which os/exec cannot do;
// the child sets it to its own PID before calling Activated, which is what
// systemd guarantees.
func TestActivated(t *testing.T) {
	if os.Getenv("PORTCULLIS_TEST_ACTIVATED_CHILD") != "" {
		activatedChild()
		return
	}
	tcp := pass(t, "tcp", "127.0.0.1:0", "")
	udp := pass(t, "udp", "127.0.0.1:0", "")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, names, pid string
		want             string
	}{
		{"named", "web:quic", "self",
			fmt.Sprintf("web tcp %s systemd\nquic udp %s systemd\n", tcp.Addr, udp.Addr)},
		{"unnamed", "", "self",
			fmt.Sprintf("unknown tcp %s systemd\nunknown udp %s systemd\n", tcp.Addr, udp.Addr)},
		{"for the parent", "web:quic", strconv.Itoa(os.Getpid()), "none\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(exe, "-test.run=^TestActivated$", "-test.count=1")
			cmd.Env = append(os.Environ(),
				"PORTCULLIS_TEST_ACTIVATED_CHILD="+tt.pid,
				"LISTEN_FDS=2",
				"LISTEN_FDNAMES="+tt.names)
			cmd.ExtraFiles = []*os.File{tcp.File, udp.File} // fds 3 and 4
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			_, got, ok := strings.Cut(string(out), "BEGIN\n")
			got, _, ok2 := strings.Cut(got, "END\n")
			if !ok || !ok2 {
				t.Fatalf("child output:\n%s", out)
			}
			if got != tt.want {
				t.Errorf("the child received:\n%swant:\n%s", got, tt.want)
			}
		})
	}
}

// activatedChild is the child process of TestActivated: it reports what
// Activated found, one socket per line, and proves each socket works.
func activatedChild() {
	if pid := os.Getenv("PORTCULLIS_TEST_ACTIVATED_CHILD"); pid == "self" {
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	} else {
		os.Setenv("LISTEN_PID", pid)
	}
	passed, err := Activated()
	fmt.Print("BEGIN\n")
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	if len(passed) == 0 {
		fmt.Println("none")
	}
	for _, p := range passed {
		fmt.Println(p.Name, p.Network, p.Addr, p.Source)
	}
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if _, ok := os.LookupEnv(v); ok {
			fmt.Println(v, "is still set")
		}
	}
	fmt.Print("END\n")
	os.Exit(0)
}
