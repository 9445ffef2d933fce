package proxyproto

import (
	"fmt"
	"net"
	"net/netip"
)

// Trusted is the set of peers allowed to send PROXY headers (a bind's
// trusted_proxies). The zero value trusts nobody.
//
// IPv4 prefixes match IPv4 peers also when a dual-stack socket reports them
// as IPv4-mapped IPv6 (::ffff:192.0.2.7); "::/0" matches IPv6 peers only.
type Trusted []netip.Prefix

// ParseTrusted parses trusted_proxies entries: CIDR prefixes ("10.0.0.0/8",
// "2001:db8::/32"), or single addresses ("192.0.2.7", taken as /32 or
// /128). Host bits are cleared, IPv4-mapped IPv6 prefixes
// ("::ffff:10.0.0.0/104") become IPv4 ones, and zones are refused.
func ParseTrusted(prefixes []string) (Trusted, error) {
	t := make(Trusted, 0, len(prefixes))
	for _, s := range prefixes {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("proxyproto: trusted proxy %q: want a CIDR prefix such as 10.0.0.0/8 or 2001:db8::/32, or an address: %w", s, err)
			}
			if a.Zone() != "" {
				return nil, fmt.Errorf("proxyproto: trusted proxy %q: an address with a zone cannot be matched; drop the %%%s", s, a.Zone())
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		p = p.Masked()
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		t = append(t, p)
	}
	return t, nil
}

// Contains reports whether addr's IP is in one of t's prefixes. Addresses
// without an IP (unix sockets, nil) are never trusted.
func (t Trusted) Contains(addr net.Addr) bool {
	if len(t) == 0 {
		return false
	}
	ip, ok := addrIP(addr)
	if !ok {
		return false
	}
	for _, p := range t {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// addrIP returns addr's IP, unmapped from IPv4-mapped IPv6 and without a
// zone.
func addrIP(addr net.Addr) (netip.Addr, bool) {
	var ip netip.Addr
	var ok bool
	switch a := addr.(type) {
	case nil:
		return netip.Addr{}, false
	case *net.TCPAddr:
		if a == nil {
			return netip.Addr{}, false
		}
		ip, ok = netip.AddrFromSlice(a.IP)
	case *net.UDPAddr:
		if a == nil {
			return netip.Addr{}, false
		}
		ip, ok = netip.AddrFromSlice(a.IP)
	case *net.IPAddr:
		if a == nil {
			return netip.Addr{}, false
		}
		ip, ok = netip.AddrFromSlice(a.IP)
	default:
		if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
			ip, ok = ap.Addr(), true
		}
	}
	if !ok {
		return netip.Addr{}, false
	}
	return ip.Unmap().WithZone(""), true
}
