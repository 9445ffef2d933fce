// Package listen owns listening sockets: it binds TCP and UDP addresses,
// receives sockets passed by systemd (LISTEN_FDS) or by the previous
// process, and matches each to the bind that needs it. Sockets are acquired
// at startup, before privileges are dropped; afterwards, only a reload that
// adds listeners binds (Acquire without passed sockets), with whatever the
// unprivileged process may bind.
package listen

import (
	"context"
	"syscall"

	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Spec is one socket the configuration needs.
type Spec struct {
	// Frontend names the frontend, for messages.
	Frontend string
	// Network is "tcp", "udp" or "unix" (a stream socket).
	Network string
	// Address is the canonical bind address: "IP:port", "[IPv6]:port" or
	// ":port" (every address); a unix socket's absolute path.
	Address string
	// FDName, when set, selects the passed socket with this name.
	FDName string
	// Purpose says what the socket serves ("HTTP", "HTTPS", "HTTP/3"), for
	// messages.
	Purpose string
	// Shard is this socket's index among Shards sockets bound to the same
	// UDP address with SO_REUSEPORT (QUIC shards). Shards ≤ 1: a single
	// socket.
	Shard, Shards int
	// Set is the socket set this socket belongs to when the address has
	// Sets sets of Shards sockets (2 for a QUIC bind whose connections
	// survive a binary upgrade: one set per process generation). Sets ≤ 1:
	// one set.
	Set, Sets int
	// Group is the group a unix socket's file is given (its mode is
	// 0660); -1: the process's own.
	Group int
}

// ReusePort says whether the socket is one of several bound to its
// address with SO_REUSEPORT.
func (s Spec) ReusePort() bool { return s.Shards > 1 || s.Sets > 1 }

func (s Spec) String() string {
	if s.Frontend == "" {
		return fmt.Sprintf("%s %s %s", s.Purpose, s.Network, s.Address)
	}
	if s.Sets > 1 {
		return fmt.Sprintf("frontend %q: %s %s (%s, set %d, shard %d of %d)", s.Frontend, s.Network, s.Address, s.Purpose, s.Set, s.Shard, s.Shards)
	}
	if s.Shards > 1 {
		return fmt.Sprintf("frontend %q: %s %s (%s, shard %d of %d)", s.Frontend, s.Network, s.Address, s.Purpose, s.Shard, s.Shards)
	}
	return fmt.Sprintf("frontend %q: %s %s (%s)", s.Frontend, s.Network, s.Address, s.Purpose)
}

// Socket is an acquired listening socket. The runtime turns File into a
// net.Listener or net.PacketConn; File stays open so that it can be handed
// to a re-executed or upgraded process.
type Socket struct {
	Spec
	File *os.File
	// Name is the socket's name: the one systemd or the previous process
	// passed, or "" for a socket bound here.
	Name string
	// Source says where the socket came from: one of the Source
	// constants.
	Source string
}

// Where a socket came from (Socket.Source, Passed.Source), as the
// "listening" log lines say it.
const (
	// SourceBound is a socket this process bound.
	SourceBound = "bound"
	// SourceBoundBeforeDrop is a socket this process bound while still
	// privileged, before it re-executed itself unprivileged.
	SourceBoundBeforeDrop = "bound before drop"
	// SourceSystemd is a socket systemd passed (socket activation).
	SourceSystemd = "systemd"
	// SourceInherited is a socket the previous process of a binary
	// upgrade passed on.
	SourceInherited = "inherited"
)

// BindError is a socket that could not be had.
type BindError struct {
	Spec Spec
	Err  error
}

func (e *BindError) Error() string {
	if e.Spec.Frontend == "" {
		return fmt.Sprintf("%s: bind %s %s: %v", e.Spec.Purpose, e.Spec.Network, e.Spec.Address, e.Err)
	}
	return fmt.Sprintf("frontend %q: bind %s %s (%s): %v", e.Spec.Frontend, e.Spec.Network, e.Spec.Address, e.Spec.Purpose, e.Err)
}

func (e *BindError) Unwrap() error { return e.Err }

// Errors is every socket problem found at startup.
type Errors []error

func (l Errors) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Unwrap returns the problems, for errors.Is and errors.As.
func (l Errors) Unwrap() []error { return l }

// Acquire gets a socket for every spec: the passed socket that matches it
// (by FDName, else by address and type), or, when bind is true, a newly
// bound one. A passed socket that no spec uses is an error, as is every
// socket that cannot be had; all problems are returned at once, as Errors,
// and every acquired socket is closed on error.
func Acquire(specs []Spec, passed []*Passed, bind bool) ([]*Socket, error) {
	var errs Errors
	used := make([]bool, len(passed))
	out := make([]*Socket, 0, len(specs))
	for _, spec := range specs {
		i, err := match(spec, passed, used)
		if err != nil {
			errs = append(errs, &BindError{Spec: spec, Err: err})
			continue
		}
		if i >= 0 {
			used[i] = true
			out = append(out, &Socket{Spec: spec, File: passed[i].File, Name: passed[i].Name, Source: passed[i].Source})
			continue
		}
		if !bind {
			errs = append(errs, &BindError{Spec: spec, Err: errors.New("no socket was passed for it and this process may not bind")})
			continue
		}
		var f *os.File
		switch spec.Network {
		case "udp":
			f, err = bindUDP(spec.Address, spec.ReusePort())
		case "unix":
			f, err = BindUnix(spec.Address, spec.Group)
		default:
			f, err = Bind(spec.Network, spec.Address)
		}
		if err != nil {
			errs = append(errs, &BindError{Spec: spec, Err: err})
			continue
		}
		out = append(out, &Socket{Spec: spec, File: f, Source: SourceBound})
	}
	for i, p := range passed {
		if !used[i] {
			errs = append(errs, fmt.Errorf("%s passed socket fd %d (name %q, %s %s) but no bind uses it: add a bind with address %s (or fd_name: %s), or remove it from the socket unit",
				passer(p.Source), p.File.Fd(), p.Name, p.Network, p.where(), p.where(), p.Name))
		}
	}
	if len(errs) > 0 {
		for _, s := range out {
			if s.Source == SourceBound {
				s.File.Close()
			}
		}
		return nil, errs
	}
	return out, nil
}

// passer names who passed a socket of the given source.
func passer(source string) string {
	if source == SourceSystemd {
		return "systemd"
	}
	return "the previous process"
}

// match finds the passed socket for spec: -1 when there is none.
func match(spec Spec, passed []*Passed, used []bool) (int, error) {
	if spec.FDName != "" {
		for i, p := range passed {
			if !used[i] && p.Name == spec.FDName && p.Network == spec.Network {
				if !p.MatchesAddress(spec.Address) {
					return -1, fmt.Errorf("the passed socket named %q is %s %s, not %s", p.Name, p.Network, p.where(), spec.Address)
				}
				return i, nil
			}
		}
		return -1, fmt.Errorf("no unused %s socket named %q was passed (LISTEN_FDNAMES); check FileDescriptorName= in the socket unit", spec.Network, spec.FDName)
	}
	for i, p := range passed {
		if !used[i] && p.Network == spec.Network && p.MatchesAddress(spec.Address) {
			return i, nil
		}
	}
	return -1, nil
}

// Bind binds a listening socket for network ("tcp" or "udp") on address
// and returns its file. The caller owns the file.
func Bind(network, address string) (*os.File, error) {
	switch network {
	case "tcp":
		l, err := net.Listen(family("tcp", address), address)
		if err != nil {
			return nil, unwrapOp(err)
		}
		defer l.Close()
		return l.(*net.TCPListener).File()
	case "udp":
		return bindUDP(address, false)
	}
	return nil, fmt.Errorf("unknown network %q", network)
}

// bindUDP binds a UDP socket, with SO_REUSEPORT when it is one of
// several sockets of one address (shards, socket sets).
func bindUDP(address string, reusePort bool) (*os.File, error) {
	lc := net.ListenConfig{}
	if reusePort {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	c, err := lc.ListenPacket(context.Background(), family("udp", address), address)
	if err != nil {
		return nil, unwrapOp(err)
	}
	defer c.Close()
	return c.(*net.UDPConn).File()
}

// family narrows network ("tcp" or "udp") to IPv4 or IPv6 for an address
// with an IP: without it, Go binds 0.0.0.0 as a dual-stack [::] socket,
// which also listens on IPv6 and no longer looks like the bind it was made
// for once passed to another process. ":port" (every address) stays
// dual-stack.
func family(network, address string) string {
	host, _, err := net.SplitHostPort(address)
	if err != nil || host == "" {
		return network
	}
	ip, err := netip.ParseAddr(host)
	switch {
	case err != nil:
		return network
	case ip.Is4() || ip.Is4In6():
		return network + "4"
	default:
		return network + "6"
	}
}

// unwrapOp strips net.OpError's "listen tcp ADDR:" prefix, which the
// caller's message already says.
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		var sys *os.SyscallError
		if errors.As(op.Err, &sys) {
			return sys.Err
		}
		return op.Err
	}
	return err
}
