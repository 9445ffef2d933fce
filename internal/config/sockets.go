package config

import (
	"net/netip"
	"strings"
)

// socket is one listening socket a bind needs: "tcp" or "udp", and the
// canonical address.
type socket struct {
	network, address string
}

// socketOwner is the bind that claimed a socket first.
type socketOwner struct {
	socket
	fe    *Frontend
	pos   Pos
	http3 bool // claimed as the HTTP/3 side of an http bind
	named bool // taken from systemd by name (fd_name), not bound by portcullis
}

// claims are the sockets claimed by the binds validated so far, by network
// and port, in file order.
type claims map[string][]socketOwner

// key is the network and port of s: sockets that may overlap share it.
func (s socket) key() string {
	return s.network + " " + s.address[strings.LastIndex(s.address, ":")+1:]
}

// find returns the socket that o may not be bound beside: one with the same
// address, else the first whose address overlaps o's.
func (c claims) find(o socketOwner) (prev socketOwner, same, found bool) {
	for _, p := range c[o.key()] {
		if p.address == o.address {
			return p, true, true
		}
		if !found && overlap(p.address, o.address) && !(p.named && o.named) {
			prev, found = p, true
		}
	}
	return prev, false, found
}

// Scopes of a canonical bind address: the local addresses its socket takes
// the port on, as Go and Linux bind it (internal/listen binds an IP address
// as tcp4/udp4 or tcp6/udp6, so [::] is IPv6 only; ":port" is one
// dual-stack socket).
const (
	scopeOne  = iota // one address
	scopeAny4        // 0.0.0.0: every IPv4 address
	scopeAny6        // [::]: every IPv6 address
	scopeAll         // ":port": every address
)

// scope returns the scope of a canonical bind address, and whether its IP
// is IPv4 (false for scopeAll).
func scope(address string) (int, bool) {
	if strings.HasPrefix(address, ":") {
		return scopeAll, false
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return scopeOne, false
	}
	ip := ap.Addr()
	switch {
	case ip == netip.IPv4Unspecified():
		return scopeAny4, true
	case ip == netip.IPv6Unspecified():
		return scopeAny6, false
	}
	return scopeOne, ip.Is4()
}

// overlap reports whether two different canonical bind addresses on one
// port and network cannot both be bound because one is a wildcard that
// covers the other: ":80" covers every address, "0.0.0.0:80" every IPv4
// one, "[::]:80" every IPv6 one. "0.0.0.0:80" and "[::]:80" do not
// overlap.
func overlap(a, b string) bool {
	sa, v4a := scope(a)
	sb, v4b := scope(b)
	switch {
	case sa == scopeAll || sb == scopeAll:
		return true
	case sa == scopeOne && sb == scopeOne:
		return false
	}
	return v4a == v4b
}

// wildcard says which addresses a wildcard bind address covers, as " (…)",
// or "" for one address.
func wildcard(address string) string {
	switch s, _ := scope(address); s {
	case scopeAll:
		return " (every address)"
	case scopeAny4:
		return " (every IPv4 address)"
	case scopeAny6:
		return " (every IPv6 address)"
	}
	return ""
}

// claim records the sockets the bind needs in bound, and reports those
// another bind claimed first, or whose port a wildcard address of another
// bind already takes (unless both take their sockets from systemd by
// name: then systemd binds them, not portcullis). A tcp frontend and a udp
// frontend may share a port; an http bind with http3 needs both TCP and
// UDP on its address.
func (b *Bind) claim(fe *Frontend, mode, where string, bound claims, add func(Pos, string, ...any)) {
	var networks []string
	switch mode {
	case ModeHTTP:
		networks = []string{"tcp"}
		if b.HTTP3 {
			networks = append(networks, "udp")
		}
	case ModeTCP:
		networks = []string{"tcp"}
	case ModeUDP:
		networks = []string{"udp"}
	}
	at := b.At.Value("address")
	for _, n := range networks {
		http3 := mode == ModeHTTP && n == "udp"
		named := b.FDName != "" || (http3 && b.FDNameUDP != "")
		o := socketOwner{socket{n, b.Address}, fe, at, http3, named}
		prev, same, found := bound.find(o)
		if !found {
			bound[o.key()] = append(bound[o.key()], o)
			continue
		}
		why := ""
		switch {
		case prev.http3:
			why = " (for HTTP/3, its bind has http3: true)"
		case http3:
			why = ", and http3 needs UDP on the same address"
		}
		if same {
			add(at, "%s: address %s is already bound for %s by frontend %q at line %d%s", where, b.Address, strings.ToUpper(n), prev.fe.Name, prev.pos.Line, why)
			continue
		}
		add(at, "%s: address %s%s overlaps %s%s, bound for %s by frontend %q at line %d%s: remove one of the two binds, or use specific addresses instead of the wildcard",
			where, b.Address, wildcard(b.Address), prev.address, wildcard(prev.address), strings.ToUpper(n), prev.fe.Name, prev.pos.Line, why)
	}
}
