package listen

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Passed is a socket received from systemd or from the previous process.
type Passed struct {
	File    *os.File
	Name    string
	Network string // "tcp", "udp" or "unix"
	Addr    netip.AddrPort
	// Path is a unix socket's path; "" for the others.
	Path   string
	Source string // SourceSystemd, SourceInherited or SourceBoundBeforeDrop
}

// MatchesAddress reports whether the socket is bound to the canonical bind
// address: the same IP (IPv4-mapped IPv6 counts as IPv4) and port, or any
// wildcard address for ":port".
func (p *Passed) MatchesAddress(address string) bool {
	if p.Network == "unix" {
		return p.Path == address
	}
	if port, ok := strings.CutPrefix(address, ":"); ok {
		return p.Addr.Addr().Unmap().IsUnspecified() && strconv.Itoa(int(p.Addr.Port())) == port
	}
	want, err := netip.ParseAddrPort(address)
	if err != nil {
		return false
	}
	return want.Addr() == p.Addr.Addr().Unmap() && want.Port() == p.Addr.Port()
}

// FromFD describes an open socket: its type and local address. A TCP or
// unix stream socket must be listening.
func FromFD(fd int, name, source string) (*Passed, error) {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("fd %d (%q) is not a socket: %v", fd, name, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, fmt.Errorf("fd %d (%q): getsockname: %v", fd, name, err)
	}
	var addr netip.AddrPort
	switch sa := sa.(type) {
	case *unix.SockaddrUnix:
		return fromUnixFD(fd, name, source, typ, sa.Name)
	case *unix.SockaddrInet4:
		addr = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		addr = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	default:
		return nil, fmt.Errorf("fd %d (%q) is not an IPv4, IPv6 or unix socket", fd, name)
	}
	p := &Passed{Name: name, Addr: addr, Source: source}
	switch typ {
	case unix.SOCK_STREAM:
		p.Network = "tcp"
		if on, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); on == 0 {
			return nil, fmt.Errorf("fd %d (%q, tcp %s) is not listening: use ListenStream= with Accept=no", fd, name, addr)
		}
	case unix.SOCK_DGRAM:
		p.Network = "udp"
	default:
		return nil, fmt.Errorf("fd %d (%q) is neither a stream nor a datagram socket", fd, name)
	}
	unix.CloseOnExec(fd)
	p.File = os.NewFile(uintptr(fd), fmt.Sprintf("%s:%s/%s", name, p.Network, addr))
	return p, nil
}

// Activated returns the sockets passed by systemd socket activation
// (sd_listen_fds(3): LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES), or nil when
// none were passed to this process. It unsets the variables so that no
// child process takes the sockets for its own.
func Activated() ([]*Passed, error) {
	pid, fds, names := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES")
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	if fds == "" {
		return nil, nil
	}
	if p, err := strconv.Atoi(pid); err != nil || p != os.Getpid() {
		return nil, nil // meant for another process
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("socket activation: LISTEN_FDS=%q is not a count", fds)
	}
	var nameList []string
	if names != "" {
		nameList = strings.Split(names, ":")
	}
	const first = 3 // SD_LISTEN_FDS_START
	var out []*Passed
	for i := 0; i < n; i++ {
		name := "unknown"
		if i < len(nameList) {
			name = nameList[i]
		}
		p, err := FromFD(first+i, name, SourceSystemd)
		if err != nil {
			return nil, fmt.Errorf("socket activation: %v", err)
		}
		out = append(out, p)
	}
	return out, nil
}
