package proxy

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Via names this proxy in Via headers (RFC 9110 §7.6.3).
const viaName = "portcullis"

// sanitize prepares the outbound request's headers. It runs after
// net/http/httputil.ReverseProxy has removed hop-by-hop headers (RFC 9110
// §7.6.1, including every header named in Connection) and the forwarding
// headers X-Forwarded-For/-Host/-Proto and Forwarded. It removes every other
// client-sent X-Forwarded-* header (X-Forwarded-Port, -Prefix, -Server...),
// which a server could otherwise mistake for the proxy's word, then sets
// the proxy's own: X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host,
// Forwarded (RFC 7239) and Via.
func sanitize(out http.Header, in *http.Request, scheme string) {
	for k := range out {
		if len(k) > len("X-Forwarded-") && strings.EqualFold(k[:len("X-Forwarded-")], "X-Forwarded-") {
			delete(out, k)
		}
	}
	delete(out, "Forwarded")
	client := clientIP(in.RemoteAddr)
	host := in.Host
	if client.IsValid() {
		out.Set("X-Forwarded-For", client.String())
	}
	out.Set("X-Forwarded-Proto", scheme)
	out.Set("X-Forwarded-Host", host)
	out.Set("Forwarded", forwarded(client, host, scheme))
	addVia(out, in.ProtoMajor, in.ProtoMinor)
}

func clientIP(remoteAddr string) netip.Addr {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, _ := netip.ParseAddr(host)
	return ip.Unmap()
}

// forwarded builds an RFC 7239 Forwarded element. IPv6 addresses and hosts
// with characters outside token are quoted (§6).
func forwarded(client netip.Addr, host, scheme string) string {
	var b strings.Builder
	if client.IsValid() {
		b.WriteString("for=")
		if client.Is6() {
			b.WriteString(`"[` + client.String() + `]"`)
		} else {
			b.WriteString(client.String())
		}
		b.WriteString(";")
	}
	if host != "" {
		b.WriteString("host=")
		b.WriteString(quoteIfNeeded(host))
		b.WriteString(";")
	}
	b.WriteString("proto=")
	b.WriteString(scheme)
	return b.String()
}

func quoteIfNeeded(s string) string {
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
		}
	}
	return s
}

// isTokenChar reports whether c may appear in an RFC 9110 token.
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// addVia appends this hop to Via with the protocol version the message
// arrived in: "1.1 portcullis", "2 portcullis" or "3 portcullis".
func addVia(h http.Header, major, minor int) {
	v := protoVersion(major, minor) + " " + viaName
	if prev := h.Get("Via"); prev != "" {
		v = strings.Join(h.Values("Via"), ", ") + ", " + v
	}
	h.Set("Via", v)
}

func protoVersion(major, minor int) string {
	switch major {
	case 1:
		if minor == 0 {
			return "1.0"
		}
		return "1.1"
	case 2:
		return "2"
	case 3:
		return "3"
	}
	return "1.1"
}
