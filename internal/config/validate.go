package config

import (
	"fmt"
	"net"
	"net/netip"
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
	type owner struct {
		fe  *Frontend
		pos Pos
	}
	bound := map[string]owner{}
	for _, fe := range c.Frontends {
		where := fmt.Sprintf("frontend %q", fe.Name)
		if len(fe.Bind) == 0 {
			add(fe.At.Value("bind"), "%s: no bind addresses: add bind: [{address: 127.0.0.1:8080}]", where)
		}
		for _, b := range fe.Bind {
			addr, err := ListenAddress(b.Address)
			if err != nil {
				add(b.At.Value("address"), "%s: %v", where, err)
			} else {
				if prev, dup := bound[addr]; dup {
					add(b.At.Value("address"), "%s: address %s is already bound by frontend %q at line %d", where, addr, prev.fe.Name, prev.pos.Line)
				} else {
					bound[addr] = owner{fe, b.At.Value("address")}
				}
				b.Address = addr
			}
			if b.HTTP3 && b.TLS == nil {
				add(b.At.Key("http3"), "%s: http3 needs tls on the same bind (HTTP/3 is always encrypted)", where)
			}
			if b.QUIC != nil {
				b.QUIC.validate(b.HTTP3, b.At.Key("quic"), where, add)
			}
			if b.FDNameUDP != "" && !b.HTTP3 {
				add(b.At.Key("fd_name_udp"), "%s: fd_name_udp names the HTTP/3 (UDP) socket, but this bind has no http3: true; add it or remove fd_name_udp", where)
			}
			if b.TLS != nil {
				if len(b.TLS.Certificates) == 0 {
					add(b.At.Key("tls"), "%s: tls needs at least one entry under certificates (cert and key files)", where)
				}
				for _, cert := range b.TLS.Certificates {
					if cert.Cert == "" {
						add(cert.At.Self, "%s: certificate needs cert: (a PEM certificate chain file)", where)
					}
					if cert.Key == "" {
						add(cert.At.Self, "%s: certificate needs key: (a PEM private key file)", where)
					}
				}
			}
		}
		if len(fe.Routes) == 0 {
			add(fe.At.Value("routes"), "%s: no routes: add routes: [{backend: NAME}]", where)
		}
		for _, r := range fe.Routes {
			if r.Host != "" {
				host, err := HostPattern(r.Host)
				if err != nil {
					add(r.At.Value("host"), "%s: %v", where, err)
				}
				r.Host = host
			}
			if r.PathPrefix != "" && !strings.HasPrefix(r.PathPrefix, "/") {
				add(r.At.Value("path_prefix"), "%s: path_prefix %q must start with /", where, r.PathPrefix)
			}
			switch {
			case r.Backend == "":
				add(r.At.Self, "%s: route needs backend: NAME (defined: %s)", where, backendNames(c.Backends))
			case backends[r.Backend] == nil:
				add(r.At.Value("backend"), "%s: route refers to unknown backend %q (defined: %s)", where, r.Backend, backendNames(c.Backends))
			}
		}
	}
	for _, b := range c.Backends {
		b.validate(add)
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
func HostPattern(s string) (string, error) {
	h := strings.ToLower(s)
	name := strings.TrimPrefix(h, "*.")
	if name == "" || strings.ContainsAny(name, "*/: ") || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") || strings.Contains(name, "..") {
		return "", fmt.Errorf("host %q: want a name such as example.com or *.example.com (no port, no scheme)", s)
	}
	return h, nil
}
