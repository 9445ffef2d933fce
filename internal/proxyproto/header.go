package proxyproto

import (
	"fmt"
	"net"
	"net/netip"

	pp "github.com/pires/go-proxyproto"
)

// Header returns the bytes of a PROXY header, version 1 (text) or 2
// (binary), for a connection from src (the client) to dst (the address it
// connected to), to be written first on a connection to a server with
// send_proxy.
//
// TCP addresses give TCP4 when both are IPv4 (IPv4-mapped IPv6 counts as
// IPv4), and TCP6 otherwise: when the families differ, the IPv4 address is
// sent as IPv4-mapped IPv6 (::ffff:192.0.2.7), as HAProxy does, rather than
// losing the client address to UNKNOWN. UDP addresses give UDP4 or UDP6 in
// v2 (v1 has no UDP, so it says UNKNOWN). Anything else (unix sockets, nil,
// a mix of TCP and UDP, an address without an IP) gives the header of a
// connection with no address to report: "PROXY UNKNOWN" in v1, the LOCAL
// command with the UNSPEC family in v2; the server then uses the
// connection's own addresses. Zones of IPv6 addresses are dropped.
func Header(version int, src, dst net.Addr) ([]byte, error) {
	if version != 1 && version != 2 {
		return nil, fmt.Errorf("proxyproto: PROXY protocol version %d: want 1 or 2", version)
	}
	h := &pp.Header{Version: byte(version), Command: pp.LOCAL, TransportProtocol: pp.UNSPEC}
	s, sstream, sok := addrPort(src)
	d, dstream, dok := addrPort(dst)
	if sok && dok && sstream == dstream {
		sa, da := s.Addr().Unmap(), d.Addr().Unmap()
		v4 := sa.Is4() && da.Is4()
		if !v4 {
			sa, da = netip.AddrFrom16(sa.As16()), netip.AddrFrom16(da.As16())
		}
		sip, dip := net.IP(sa.AsSlice()), net.IP(da.AsSlice())
		h.Command = pp.PROXY
		switch {
		case sstream && v4:
			h.TransportProtocol = pp.TCPv4
		case sstream:
			h.TransportProtocol = pp.TCPv6
		case v4:
			h.TransportProtocol = pp.UDPv4
		default:
			h.TransportProtocol = pp.UDPv6
		}
		if sstream {
			h.SourceAddr = &net.TCPAddr{IP: sip, Port: int(s.Port())}
			h.DestinationAddr = &net.TCPAddr{IP: dip, Port: int(d.Port())}
		} else {
			h.SourceAddr = &net.UDPAddr{IP: sip, Port: int(s.Port())}
			h.DestinationAddr = &net.UDPAddr{IP: dip, Port: int(d.Port())}
		}
	}
	b, err := h.Format()
	if err != nil {
		return nil, fmt.Errorf("proxyproto: v%d header from %v to %v: %w", version, src, dst, err)
	}
	return b, nil
}

// addrPort returns a's IP (without zone) and port, and whether a is a
// stream (TCP) address; ok is false for addresses other than TCP and UDP
// ones with an IP and a port in 0..65535.
func addrPort(a net.Addr) (ap netip.AddrPort, stream, ok bool) {
	var ip net.IP
	var port int
	switch a := a.(type) {
	case *net.TCPAddr:
		if a == nil {
			return
		}
		ip, port, stream = a.IP, a.Port, true
	case *net.UDPAddr:
		if a == nil {
			return
		}
		ip, port = a.IP, a.Port
	default:
		return
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok || port < 0 || port > 65535 {
		return netip.AddrPort{}, false, false
	}
	return netip.AddrPortFrom(addr.WithZone(""), uint16(port)), stream, true
}
