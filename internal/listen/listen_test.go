package listen

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"

	"golang.org/x/sys/unix"
)

// scaled multiplies d by PORTCULLIS_TEST_TIMEOUT_SCALE (default 1), for
// slow machines. Deadlines only turn a hang into a failure.
var scaled = testutil.Scaled

// listenerOf turns a bound TCP socket file into a listener, closed at the
// end of the test.
func listenerOf(t *testing.T, f *os.File) net.Listener {
	t.Helper()
	l, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// checkAccepts proves a TCP socket file is listening: a client connects and
// the listener accepts it.
func checkAccepts(t *testing.T, f *os.File) netip.AddrPort {
	t.Helper()
	l := listenerOf(t, f)
	c, err := net.DialTimeout("tcp", l.Addr().String(), scaled(10*time.Second))
	if err != nil {
		t.Fatalf("dial %s: %v", l.Addr(), err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		t.Fatalf("accept on %s: %v", l.Addr(), err)
	}
	s.Close()
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// checkReceives proves a UDP socket file is bound: a datagram sent to it
// arrives.
func checkReceives(t *testing.T, f *os.File) netip.AddrPort {
	t.Helper()
	pc, err := net.FilePacketConn(f)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(scaled(10 * time.Second)))
	buf := make([]byte, 16)
	n, _, err := pc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("read %q, %v; want ping", buf[:n], err)
	}
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

func closeOnCleanup(t *testing.T, f *os.File) {
	t.Cleanup(func() { f.Close() })
}

func TestBindTCP(t *testing.T) {
	f, err := Bind("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, f)
	if addr := checkAccepts(t, f); addr.Addr() != netip.MustParseAddr("127.0.0.1") || addr.Port() == 0 {
		t.Errorf("bound %v, want 127.0.0.1 and a port", addr)
	}
}

func TestBindUDP(t *testing.T) {
	f, err := Bind("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, f)
	if addr := checkReceives(t, f); addr.Addr() != netip.MustParseAddr("127.0.0.1") || addr.Port() == 0 {
		t.Errorf("bound %v, want 127.0.0.1 and a port", addr)
	}
}

func TestBindUnknownNetwork(t *testing.T) {
	if f, err := Bind("sctp", "127.0.0.1:0"); err == nil {
		f.Close()
		t.Fatal("Bind(sctp) succeeded")
	} else if !strings.Contains(err.Error(), `"sctp"`) {
		t.Errorf("err = %v, want it to name the network", err)
	}
}

// occupied returns an address some other socket of network holds.
func occupied(t *testing.T, network string) string {
	t.Helper()
	f, err := Bind(network, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, f)
	sa, err := unix.Getsockname(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return netip.AddrPortFrom(netip.AddrFrom4(sa.(*unix.SockaddrInet4).Addr), uint16(sa.(*unix.SockaddrInet4).Port)).String()
}

func TestBindAddressInUse(t *testing.T) {
	for _, network := range []string{"tcp", "udp"} {
		t.Run(network, func(t *testing.T) {
			addr := occupied(t, network)
			f, err := Bind(network, addr)
			if err == nil {
				f.Close()
				t.Fatalf("bound %s twice", addr)
			}
			if !errors.Is(err, syscall.EADDRINUSE) {
				t.Errorf("err = %v, want EADDRINUSE", err)
			}
			if err.Error() != "address already in use" {
				t.Errorf("err = %q, want just the cause (the caller names the address)", err)
			}
		})
	}
}

func webSpec(network, addr string) Spec {
	return Spec{Frontend: "web", Network: network, Address: addr, Purpose: "HTTP"}
}

// bindErrors returns the BindErrors in an Acquire error, as the runtime's
// startup report finds them.
func bindErrors(t *testing.T, err error) (bind []*BindError, other []error) {
	t.Helper()
	var list Errors
	if !errors.As(err, &list) {
		t.Fatalf("Acquire error is %T, want Errors: %v", err, err)
	}
	for _, e := range list {
		var be *BindError
		if errors.As(e, &be) {
			bind = append(bind, be)
		} else {
			other = append(other, e)
		}
	}
	return bind, other
}

func TestAcquireBindsWhatIsNotPassed(t *testing.T) {
	specs := []Spec{webSpec("tcp", "127.0.0.1:0"), webSpec("udp", "127.0.0.1:0")}
	socks, err := Acquire(specs, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(socks) != 2 {
		t.Fatalf("got %d sockets, want 2", len(socks))
	}
	for i, s := range socks {
		closeOnCleanup(t, s.File)
		if s.Spec != specs[i] || s.Source != "bound" || s.Name != "" {
			t.Errorf("socket %d = %+v source %q name %q, want spec %+v, bound, no name", i, s.Spec, s.Source, s.Name, specs[i])
		}
	}
	checkAccepts(t, socks[0].File)
	checkReceives(t, socks[1].File)
}

func TestAcquireAddressInUse(t *testing.T) {
	addr := occupied(t, "tcp")
	spec := webSpec("tcp", addr)
	socks, err := Acquire([]Spec{spec}, nil, true)
	if err == nil {
		t.Fatalf("Acquire bound %s, which is in use: %v", addr, socks)
	}
	bind, other := bindErrors(t, err)
	if len(bind) != 1 || len(other) != 0 {
		t.Fatalf("errors = %v, want one BindError", err)
	}
	be := bind[0]
	if be.Spec != spec || !errors.Is(be, syscall.EADDRINUSE) {
		t.Errorf("BindError = %+v, want spec %+v wrapping EADDRINUSE", be, spec)
	}
	if want := `frontend "web": bind tcp ` + addr + ` (HTTP): address already in use`; be.Error() != want {
		t.Errorf("message = %q, want %q", be.Error(), want)
	}
}

func TestAcquireMayNotBind(t *testing.T) {
	spec := webSpec("tcp", "127.0.0.1:443")
	_, err := Acquire([]Spec{spec}, nil, false)
	if err == nil {
		t.Fatal("Acquire without sockets and without binding succeeded")
	}
	bind, _ := bindErrors(t, err)
	if len(bind) != 1 || bind[0].Spec != spec {
		t.Fatalf("errors = %v, want one BindError for %v", err, spec)
	}
	msg := bind[0].Error()
	for _, want := range []string{`frontend "web"`, "tcp 127.0.0.1:443", "no socket was passed"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not say %q", msg, want)
		}
	}
}

// openFDs counts the process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	return len(ents)
}

func TestAcquireClosesWhatItBoundOnError(t *testing.T) {
	busy := occupied(t, "tcp")
	specs := []Spec{webSpec("tcp", "127.0.0.1:0"), webSpec("udp", "127.0.0.1:0"), webSpec("tcp", busy)}
	if socks, err := Acquire(specs[:2], nil, true); err == nil { // warm up the poller
		for _, s := range socks {
			s.File.Close()
		}
	}
	before := openFDs(t)
	if _, err := Acquire(specs, nil, true); err == nil {
		t.Fatal("Acquire succeeded with an address in use")
	}
	if after := openFDs(t); after != before {
		t.Errorf("open descriptors went from %d to %d: a failed Acquire leaked sockets", before, after)
	}
}

// TestBindWildcardIPv4 checks that 0.0.0.0 binds an IPv4 socket that a
// process it is passed to recognizes as that bind (Go would otherwise bind
// a dual-stack [::] socket).
func TestBindWildcardIPv4(t *testing.T) {
	for _, network := range []string{"tcp", "udp"} {
		f, err := Bind(network, "0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		p, err := FromFD(int(f.Fd()), "", "inherited")
		if err != nil {
			t.Fatal(err)
		}
		addr := "0.0.0.0:" + strconv.Itoa(int(p.Addr.Port()))
		if !p.Addr.Addr().Is4() || !p.MatchesAddress(addr) {
			t.Errorf("%s 0.0.0.0: bound %s, which does not match %s", network, p.Addr, addr)
		}
		f.Close()
	}
}

// TestAcquireSocketSets binds the two socket sets of a QUIC bind with one
// shard: two UDP sockets on one address, which only SO_REUSEPORT allows.
func TestAcquireSocketSets(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	specs := make([]Spec, 2)
	for i := range specs {
		specs[i] = webSpec("udp", addr)
		specs[i].Shard, specs[i].Shards, specs[i].Set, specs[i].Sets = 0, 1, i, 2
	}
	socks, err := Acquire(specs, nil, true)
	if err != nil {
		t.Fatalf("binding two socket sets of %s: %v", addr, err)
	}
	for _, s := range socks {
		closeOnCleanup(t, s.File)
		if on, err := unix.GetsockoptInt(int(s.File.Fd()), unix.SOL_SOCKET, unix.SO_REUSEPORT); err != nil || on != 1 {
			t.Errorf("%v: SO_REUSEPORT = %d (%v), want 1", s.Spec, on, err)
		}
	}
	if got, want := specs[1].String(), `frontend "web": udp `+addr+` (HTTP, set 1, shard 0 of 1)`; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
