package config

import (
	"github.com/portcullis/portcullis/internal/hostname"

	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// validate checks everything that can be checked without touching the
// system (files, users and sockets are checked when the configuration is
// compiled) and reports every problem at once.
func (c *Config) validate() error {
	var errs ErrorList
	add := func(p Pos, format string, args ...any) { errs.Add(c.File, p, format, args...) }

	if c.Global.Grace <= 0 {
		add(c.Global.At.Value("grace"), "global grace: must be more than zero, e.g. 30s (leave it out for the default, %s)", DefaultGrace)
	}
	if c.Global.MaxConns < 0 {
		add(c.Global.At.Value("max_conns"), "global max_conns must be 0 (derived from the open-files limit) or more")
	}
	if c.Global.Group != "" && c.Global.User == "" {
		add(c.Global.At.Key("group"), "global group: set global user as well (group alone would leave the process running as root)")
	}

	if len(c.Frontends) == 0 {
		add(c.At.Value("frontends"), "no frontends: define at least one under frontends:")
	}
	backends := map[string]*Backend{}
	for _, b := range c.Backends {
		backends[b.Name] = b
	}
	bound := claims{}
	for _, fe := range c.Frontends {
		fe.validate(backends, c.Backends, bound, add)
	}
	if c.Admin != nil {
		c.Admin.validate(bound, add)
	}
	uses := c.backendUses()
	for _, b := range c.Backends {
		b.validate(uses[b.Name], add)
	}
	return errs.Err()
}

func backendNames(bs []*Backend) string {
	if len(bs) == 0 {
		return "none"
	}
	names := make([]string, len(bs))
	for i, b := range bs {
		names[i] = b.Name
	}
	return strings.Join(names, ", ")
}

// ListenAddress checks a bind address and returns it in canonical form:
// "IP:port" ("[IPv6]:port"), or ":port" for every address. Host names are
// refused: a listening address must not depend on DNS at startup.
func ListenAddress(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("bind needs address: IP:PORT or :PORT, e.g. 127.0.0.1:443 or :443")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("bad address %q: want IP:PORT, [IPv6]:PORT or :PORT", s)
	}
	p, err := parsePort(port)
	if err != nil {
		return "", fmt.Errorf("bad address %q: %v", s, err)
	}
	if host == "" {
		return ":" + strconv.Itoa(p), nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return "", fmt.Errorf("bad address %q: the host must be an IP address (127.0.0.1, [::1]) or empty for every address", s)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(p)).String(), nil
}

// serverAddress checks a server address: HOST:PORT where HOST is an IP
// address or a DNS name.
func serverAddress(s string) error {
	if s == "" {
		return fmt.Errorf("server needs address: HOST:PORT, e.g. 10.0.0.5:8080 or app.internal:8080")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("bad server address %q: want HOST:PORT, e.g. 10.0.0.5:8080 or app.internal:8080", s)
	}
	if host == "" {
		return fmt.Errorf("bad server address %q: the host is missing", s)
	}
	if _, err := parsePort(port); err != nil {
		return fmt.Errorf("bad server address %q: %v", s, err)
	}
	return nil
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return p, nil
}

// HostPattern checks a route host ("example.com" or "*.example.com") and
// returns it lower-cased.
func HostPattern(s string) (string, error) { return namePattern("host", s) }

// SNIPattern checks a route sni: the same patterns as HostPattern, except
// IP addresses, which clients never send as a server name (RFC 6066 §3).
func SNIPattern(s string) (string, error) {
	h, err := namePattern("sni", s)
	if err != nil {
		return "", err
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return "", fmt.Errorf("sni %q is an IP address, which clients never send as a server name (RFC 6066 §3): use a name, or a route without sni", s)
	}
	return h, nil
}

// namePattern checks "example.com" or "*.example.com" written under key
// (hostname.ParsePattern) and returns it in canonical (lower-case) form.
func namePattern(key, s string) (string, error) {
	p, err := hostname.ParsePattern(s)
	if err != nil || p.IsAny() {
		return "", fmt.Errorf("%s %q: want a name such as example.com or *.example.com (no port, no scheme)", key, s)
	}
	return p.String(), nil
}

// TrustedPrefix parses a trusted_proxies entry: a network ("10.0.0.0/8",
// "2001:db8::/32") or one address ("192.0.2.7", a /32 or /128). Host bits
// are cleared and IPv4-mapped IPv6 forms become IPv4, so that the result's
// String() is canonical and netip.ParsePrefix reads it back.
func TrustedPrefix(s string) (netip.Prefix, error) {
	bad := fmt.Errorf("%q: want a network such as 10.0.0.0/8 or an address such as 192.0.2.7", s)
	if !strings.Contains(s, "/") {
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Zone() != "" {
			return netip.Prefix{}, bad
		}
		ip = ip.Unmap()
		return netip.PrefixFrom(ip, ip.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, bad
	}
	if ip := p.Addr(); ip.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("%q: an IPv4-mapped network needs at least 96 bits; write the IPv4 network instead", s)
		}
		p = netip.PrefixFrom(ip.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// backendUse is a frontend that routes to a backend. passthrough: by a
// route that passes bytes through (every route of a tcp or udp frontend, an
// sni route of an http frontend), which can use nothing HTTP-specific of the
// backend.
type backendUse struct {
	fe          *Frontend
	passthrough bool
}

// backendUses returns, by backend name, the frontends whose routes use it,
// in file order.
func (c *Config) backendUses() map[string][]backendUse {
	uses := map[string][]backendUse{}
	for _, fe := range c.Frontends {
		for _, r := range fe.Routes {
			if r == nil {
				continue
			}
			u := backendUse{fe, fe.Mode == ModeTCP || fe.Mode == ModeUDP || fe.Mode == ModeHTTP && r.SNI != ""}
			if !slices.Contains(uses[r.Backend], u) {
				uses[r.Backend] = append(uses[r.Backend], u)
			}
		}
	}
	return uses
}

// usedBy returns the first frontend of uses whose mode is mode, or nil.
func usedBy(uses []backendUse, mode string) *Frontend {
	for _, u := range uses {
		if u.fe.Mode == mode {
			return u.fe
		}
	}
	return nil
}
