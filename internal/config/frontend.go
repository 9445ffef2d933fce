package config

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

var modeNames = []string{ModeHTTP, ModeTCP, ModeUDP}

// maxALPN is the longest ALPN protocol name (RFC 7301 §3.1).
const maxALPN = 255

// setDefaults fills what the file left out of a frontend and its binds.
func (fe *Frontend) setDefaults() {
	if fe.Mode == "" {
		fe.Mode = ModeHTTP
	}
	if !fe.At.hasValue("idle_timeout") {
		switch fe.Mode {
		case ModeTCP:
			fe.IdleTimeout = DefaultTCPIdleTimeout
		case ModeUDP:
			fe.IdleTimeout = DefaultUDPIdleTimeout
		}
	}
	fe.Limits.setDefaults()
	if fe.RateLimits != nil {
		fe.RateLimits.setDefaults()
	}
	if a := fe.AccessLog; a != nil {
		if !a.At.hasValue("format") {
			a.Format = DefaultAccessLogFormat
		}
		if !a.At.hasValue("to") {
			a.To = DefaultAccessLogTo
		}
	}
	for _, b := range fe.Bind {
		if b == nil {
			continue
		}
		if b.QUIC != nil {
			b.QUIC.setDefaults()
		}
		// A udp frontend waits for no header: its binds keep 0.
		if fe.Mode != ModeUDP && !b.At.hasValue("proxy_timeout") {
			b.ProxyTimeout = DefaultProxyTimeout
		}
	}
}

// validate checks one frontend: its mode, binds and routes. bound holds the
// sockets claimed by the frontends before it, and gets this one's.
func (fe *Frontend) validate(backends map[string]*Backend, all []*Backend, bound claims, add func(Pos, string, ...any)) {
	where := fmt.Sprintf("frontend %q", fe.Name)
	mode := fe.Mode
	if !slices.Contains(modeNames, mode) {
		add(fe.At.Value("mode"), "%s: mode %q: want http (the default), tcp or udp", where, fe.Mode)
		mode = "" // the rules of each mode are skipped
	}
	if fe.At.hasValue("idle_timeout") {
		switch {
		case mode == ModeHTTP:
			add(fe.At.Key("idle_timeout"), "%s: idle_timeout is for tcp and udp frontends; in http mode use the backend's timeouts (timeouts.server, timeouts.idle)", where)
		case fe.IdleTimeout <= 0:
			add(fe.At.Value("idle_timeout"), "%s: idle_timeout must be longer than 0, e.g. 10m (leave it out for the default: %s for tcp, %s for udp)", where, DefaultTCPIdleTimeout, DefaultUDPIdleTimeout)
		}
	}
	if len(fe.Bind) == 0 {
		add(fe.At.Value("bind"), "%s: no bind addresses: add bind: [{address: 127.0.0.1:8080}]", where)
	}
	for _, b := range fe.Bind {
		b.validate(fe, mode, where, bound, add)
	}
	fe.validateRoutes(mode, where, backends, all, add)
	fe.Limits.validate(mode, where, add)
	if fe.RateLimits != nil {
		fe.RateLimits.validate(mode, where, add)
	}
	fe.Errors.validate(mode, where, fe.At.Key("errors"), add)
	if a := fe.AccessLog; a != nil && a.At.Has("to") && a.To == "" {
		add(a.At.Value("to"), "%s: access_log to is empty: write stdout, stderr or a file's path (leave it out for stdout)", where)
	}
}

func (l *Limits) setDefaults() {
	defaultDuration(&l.HeaderTimeout, l.At, "header_timeout", DefaultHeaderTimeout)
	defaultDuration(&l.BodyTimeout, l.At, "body_timeout", DefaultBodyTimeout)
	defaultDuration(&l.SendTimeout, l.At, "send_timeout", DefaultSendTimeout)
	defaultDuration(&l.IdleTimeout, l.At, "idle_timeout", DefaultHTTPIdleTimeout)
	defaultInt(&l.MaxHeaderBytes, l.At, "max_header_bytes", DefaultMaxHeaderBytes)
	defaultInt(&l.MaxBodyBytes, l.At, "max_body_bytes", DefaultMaxBodyBytes)
	defaultInt(&l.MaxConns, l.At, "max_conns", DefaultMaxConns)
	defaultInt(&l.MaxConnsPerClient, l.At, "max_conns_per_client", DefaultMaxConnsPerClient)
	defaultInt(&l.H2MaxStreams, l.At, "h2_max_streams", DefaultH2MaxStreams)
}

// limitsHTTPOnly are the limits keys that only http frontends use.
var limitsHTTPOnly = []string{"header_timeout", "body_timeout", "send_timeout", "idle_timeout", "max_header_bytes", "max_body_bytes", "h2_max_streams"}

// Bounds of limits values.
const (
	minHeaderBytes = 1 << 10
	maxHeaderBytes = 1 << 20
	maxH2Streams   = 10000
)

func (l *Limits) validate(mode, where string, add func(Pos, string, ...any)) {
	if mode == ModeTCP || mode == ModeUDP {
		for _, k := range limitsHTTPOnly {
			if l.At.Has(k) {
				add(l.At.Key(k), "%s: limits %s is for http frontends; a %s frontend uses max_conns, max_conns_per_client and the frontend's idle_timeout", where, k, mode)
			}
		}
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"header_timeout", l.HeaderTimeout}, {"body_timeout", l.BodyTimeout}, {"send_timeout", l.SendTimeout}, {"idle_timeout", l.IdleTimeout}} {
		if d.v <= 0 {
			add(l.At.Value(d.key), "%s: limits %s must be longer than 0, e.g. 30s (leave it out for the default)", where, d.key)
		}
	}
	if l.MaxHeaderBytes < minHeaderBytes || l.MaxHeaderBytes > maxHeaderBytes {
		add(l.At.Value("max_header_bytes"), "%s: limits max_header_bytes %d: want %d to %d (default %d)", where, l.MaxHeaderBytes, minHeaderBytes, maxHeaderBytes, DefaultMaxHeaderBytes)
	}
	if l.MaxBodyBytes < 0 {
		add(l.At.Value("max_body_bytes"), "%s: limits max_body_bytes must be 0 (no limit) or more", where)
	}
	for _, k := range []struct {
		key string
		v   int
	}{{"max_conns", l.MaxConns}, {"max_conns_per_client", l.MaxConnsPerClient}} {
		if k.v < 0 {
			add(l.At.Value(k.key), "%s: limits %s must be 0 (no limit) or more", where, k.key)
		}
	}
	if l.H2MaxStreams < 1 || l.H2MaxStreams > maxH2Streams {
		add(l.At.Value("h2_max_streams"), "%s: limits h2_max_streams %d: want 1 to %d (default %d)", where, l.H2MaxStreams, maxH2Streams, DefaultH2MaxStreams)
	}
}

// validate checks one bind of fe, whose mode is mode ("" when invalid).
func (b *Bind) validate(fe *Frontend, mode, where string, bound claims, add func(Pos, string, ...any)) {
	addr, err := ListenAddress(b.Address)
	if err != nil {
		add(b.At.Value("address"), "%s: %v", where, err)
	} else {
		b.Address = addr
		b.claim(fe, mode, where, bound, add)
	}
	switch mode {
	case ModeTCP:
		for _, key := range []string{"tls", "http3", "quic"} {
			if b.uses(key) {
				add(b.At.Key(key), "%s: %s is refused: tcp frontends pass TLS through; to terminate some names and pass others on one port, use an http frontend with tls and sni routes", where, key)
			}
		}
		if b.FDNameUDP != "" {
			add(b.At.Key("fd_name_udp"), "%s: fd_name_udp is refused: a tcp bind has one TCP socket, named by fd_name", where)
		}
	case ModeUDP:
		for _, key := range []string{"tls", "http3", "quic"} {
			if b.uses(key) {
				add(b.At.Key(key), "%s: %s is refused: udp frontends relay datagrams as they are (HTTP/3 is served by an http frontend's bind with tls and http3: true)", where, key)
			}
		}
		if b.FDNameUDP != "" {
			add(b.At.Key("fd_name_udp"), "%s: fd_name_udp is refused: on a udp frontend, fd_name names the UDP socket", where)
		}
		if b.AcceptProxy {
			add(b.At.Key("accept_proxy"), "%s: accept_proxy is refused: the PROXY protocol header starts TCP connections, and a udp frontend has none", where)
		}
		if !b.AcceptProxy && len(b.TrustedProxies) > 0 {
			add(b.At.Key("trusted_proxies"), "%s: trusted_proxies is refused: a udp frontend reads no PROXY header", where)
		}
		if b.At.hasValue("proxy_timeout") {
			add(b.At.Key("proxy_timeout"), "%s: proxy_timeout is refused: a udp frontend waits for no PROXY header or TLS ClientHello", where)
		}
	case ModeHTTP:
		if b.HTTP3 && b.TLS == nil {
			add(b.At.Key("http3"), "%s: http3 needs tls on the same bind (HTTP/3 is always encrypted)", where)
		}
		if b.QUIC != nil {
			b.QUIC.validate(b.HTTP3, b.At.Key("quic"), where, add)
		}
		if b.FDNameUDP != "" && !b.HTTP3 {
			add(b.At.Key("fd_name_udp"), "%s: fd_name_udp names the HTTP/3 (UDP) socket, but this bind has no http3: true; add it or remove fd_name_udp", where)
		}
	}
	if b.TLS != nil && mode != ModeTCP && mode != ModeUDP {
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
	if mode != ModeUDP {
		b.validateProxy(where, add)
	}
}

// uses reports whether the bind sets tls, http3 or quic.
func (b *Bind) uses(key string) bool {
	switch key {
	case "tls":
		return b.TLS != nil
	case "http3":
		return b.HTTP3
	case "quic":
		return b.QUIC != nil
	}
	return false
}

// validateProxy checks accept_proxy, trusted_proxies and proxy_timeout, and
// writes each trusted network in canonical prefix form.
func (b *Bind) validateProxy(where string, add func(Pos, string, ...any)) {
	switch {
	case b.AcceptProxy && len(b.TrustedProxies) == 0:
		add(b.At.Key("accept_proxy"), "%s: accept_proxy needs trusted_proxies: the networks or addresses of the proxies in front that send PROXY headers, e.g. [10.0.0.0/8]", where)
	case !b.AcceptProxy && len(b.TrustedProxies) > 0:
		add(b.At.Key("trusted_proxies"), "%s: trusted_proxies is only used with accept_proxy: true; add it or remove trusted_proxies", where)
	case b.AcceptProxy:
		for i, s := range b.TrustedProxies {
			p, err := TrustedPrefix(s)
			if err != nil {
				add(b.At.Value("trusted_proxies"), "%s: trusted_proxies entry %d: %v", where, i+1, err)
				continue
			}
			b.TrustedProxies[i] = p.String()
		}
	}
	if b.At.hasValue("proxy_timeout") && b.ProxyTimeout <= 0 {
		add(b.At.Value("proxy_timeout"), "%s: proxy_timeout must be longer than 0 (leave it out for the default, %s)", where, DefaultProxyTimeout)
	}
}

// validateRoutes checks the routes of fe, whose mode is mode ("" when
// invalid), and writes sni and host patterns in canonical form.
func (fe *Frontend) validateRoutes(mode, where string, backends map[string]*Backend, all []*Backend, add func(Pos, string, ...any)) {
	if len(fe.Routes) == 0 {
		add(fe.At.Value("routes"), "%s: no routes: add routes: [{backend: NAME}]", where)
	}
	var takesAll, firstSNI *Route
	for i, r := range fe.Routes {
		switch mode {
		case ModeTCP:
			for _, key := range []string{"host", "path_prefix"} {
				if r.At.Has(key) {
					add(r.At.Key(key), "%s: %s is refused: tcp frontends route connections, not HTTP requests; route TLS by sni here, or use an http frontend to route by host and path_prefix", where, key)
				}
			}
			if takesAll != nil {
				add(r.At.Self, "%s: this route is never used: the route at line %d has no sni and takes every connection; move that route last", where, takesAll.At.Self.Line)
			} else if r.SNI == "" {
				takesAll = r
			}
		case ModeHTTP:
			if r.SNI != "" {
				for _, key := range []string{"host", "path_prefix"} {
					if r.At.Has(key) {
						add(r.At.Key(key), "%s: a route with sni cannot also match %s: it passes TLS connections through before any request is read; put %s on a route of its own", where, key, key)
					}
				}
				if firstSNI == nil {
					firstSNI = r
				}
			}
		case ModeUDP:
			if i > 0 {
				add(r.At.Self, "%s: a udp frontend has exactly one route, whose backend gets every datagram; remove this route or give it a frontend of its own", where)
			}
			for _, key := range []string{"sni", "alpn", "host", "path_prefix"} {
				if r.At.Has(key) {
					add(r.At.Key(key), "%s: %s is refused: a udp frontend relays every datagram to its route's backend; keep only backend", where, key)
				}
			}
		}
		if mode != ModeUDP {
			r.validateSNI(mode, where, add)
		}
		r.validateCompress(mode, where, add)
		if mode != ModeTCP && mode != ModeUDP {
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
		}
		switch {
		case r.Backend == "":
			add(r.At.Self, "%s: route needs backend: NAME (defined: %s)", where, backendNames(all))
		case backends[r.Backend] == nil:
			add(r.At.Value("backend"), "%s: route refers to unknown backend %q (defined: %s)", where, r.Backend, backendNames(all))
		}
	}
	if mode == ModeHTTP && firstSNI != nil {
		for _, b := range fe.Bind {
			if b.TLS == nil {
				add(b.At.Value("address"), "%s: bind %s has no tls, but the sni route at line %d reads the TLS ClientHello of every connection to this frontend: add tls to this bind or move it to another frontend", where, b.Address, firstSNI.At.Self.Line)
			}
		}
	}
}

// validateSNI checks the sni and alpn of a route of a tcp or http frontend.
func (r *Route) validateSNI(mode, where string, add func(Pos, string, ...any)) {
	if r.SNI != "" {
		if sni, err := SNIPattern(r.SNI); err != nil {
			add(r.At.Value("sni"), "%s: %v", where, err)
		} else {
			r.SNI = sni
		}
	}
	if len(r.ALPN) > 0 && r.SNI == "" {
		add(r.At.Key("alpn"), "%s: alpn is only used together with sni (it narrows an sni route to clients offering one of these protocols); add sni or remove alpn", where)
	}
	for i, p := range r.ALPN {
		switch {
		case p == "":
			add(r.At.Value("alpn"), "%s: alpn entry %d is empty: write a protocol name such as h2 or http/1.1", where, i+1)
		case len(p) > maxALPN:
			add(r.At.Value("alpn"), "%s: alpn entry %d is longer than %d bytes (RFC 7301 §3.1)", where, i+1, maxALPN)
		}
	}
}
