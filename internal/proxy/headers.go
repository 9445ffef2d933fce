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
	// One backing array for the values of the headers set here, instead
	// of one allocation per Set. Each gets a full slice expression, so
	// that an append to one cannot overwrite the next.
	vals := make([]string, 4)
	vals[1], vals[2] = scheme, host
	var clientStr string
	if client.IsValid() {
		clientStr = client.String()
		vals[0] = clientStr
		out["X-Forwarded-For"] = vals[0:1:1]
	}
	out["X-Forwarded-Proto"] = vals[1:2:2]
	out["X-Forwarded-Host"] = vals[2:3:3]
	vals[3] = forwardedString(client, clientStr, host, scheme)
	out["Forwarded"] = vals[3:4:4]
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
	var clientStr string
	if client.IsValid() {
		clientStr = client.String()
	}
	return forwardedString(client, clientStr, host, scheme)
}

// forwardedString is forwarded with client.String() already made, in one
// allocation.
func forwardedString(client netip.Addr, clientStr, host, scheme string) string {
	n := len("proto=") + len(scheme)
	if client.IsValid() {
		n += len(`for="[]";`) + len(clientStr)
	}
	quote := needsQuote(host)
	if host != "" {
		n += len("host=;") + len(host)
		if quote {
			n += 2 + strings.Count(host, `\`) + strings.Count(host, `"`)
		}
	}
	var b strings.Builder
	b.Grow(n)
	if client.IsValid() {
		b.WriteString("for=")
		if client.Is6() {
			b.WriteString(`"[`)
			b.WriteString(clientStr)
			b.WriteString(`]"`)
		} else {
			b.WriteString(clientStr)
		}
		b.WriteString(";")
	}
	if host != "" {
		b.WriteString("host=")
		if quote {
			writeQuoted(&b, host)
		} else {
			b.WriteString(host)
		}
		b.WriteString(";")
	}
	b.WriteString("proto=")
	b.WriteString(scheme)
	return b.String()
}

func quoteIfNeeded(s string) string {
	if !needsQuote(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 2 + strings.Count(s, `\`) + strings.Count(s, `"`))
	writeQuoted(&b, s)
	return b.String()
}

func needsQuote(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return true
		}
	}
	return false
}

// writeQuoted writes s as an RFC 9110 §5.6.4 quoted-string.
func writeQuoted(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' || s[i] == '"' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
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
// arrived in: "1.1 portcullis", "2 portcullis" or "3 portcullis". Several
// Via lines become one, the earlier hops first. h must own its value
// slices (a cloned or parsed header): an existing Via slice is reused.
func addVia(h http.Header, major, minor int) {
	v := viaValue(major, minor)
	prev := h["Via"]
	if len(prev) == 0 || prev[0] == "" {
		h["Via"] = []string{v}
		return
	}
	n := len(v)
	for _, p := range prev {
		n += len(p) + len(", ")
	}
	var b strings.Builder
	b.Grow(n)
	for _, p := range prev {
		b.WriteString(p)
		b.WriteString(", ")
	}
	b.WriteString(v)
	prev[0] = b.String()
	h["Via"] = prev[:1]
}

// viaValue is this hop's Via value for a protocol version.
func viaValue(major, minor int) string {
	switch major {
	case 1:
		if minor == 0 {
			return "1.0 " + viaName
		}
		return "1.1 " + viaName
	case 2:
		return "2 " + viaName
	case 3:
		return "3 " + viaName
	}
	return "1.1 " + viaName
}
