package main

import (
	"bytes"
	"net"
	"net/netip"

	"github.com/valyala/fasthttp"
)

// viaName names this proxy in Via headers (RFC 9110 §7.6.3), as
// portcullis names itself.
const viaName = "portcullis"

// hopHeaders are the hop-by-hop headers removed in both directions (RFC
// 9110 §7.6.1), the list of net/http/httputil.ReverseProxy less
// Transfer-Encoding and Trailer: fasthttp owns a message's framing (it
// re-frames every body it writes), as net/http does for portcullis.
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection", // non-standard, sent by old clients
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Upgrade",
}

// framing are the headers a Connection token may not remove: deleting
// them from a fasthttp header changes how its body is framed, not just
// what is sent.
var framing = [][]byte{
	[]byte("Content-Length"),
	[]byte("Transfer-Encoding"),
	[]byte("Trailer"),
	[]byte("Host"),
}

var xForwardedPrefix = []byte("X-Forwarded-")

// header is what the request and response headers of fasthttp share and
// the hop-by-hop removal needs.
type header interface {
	PeekAll(key string) [][]byte
	Del(key string)
	DelBytes(key []byte)
}

// removeHopByHop removes the headers named in Connection (RFC 9110
// §7.6.1), then the hop-by-hop headers. It does not touch fasthttp's
// connection-close flag's meaning for the connection it arrived on: the
// server and the client read that flag before the proxy runs.
func removeHopByHop(h header) {
	if vals := h.PeekAll("Connection"); len(vals) > 0 {
		// Copy: deleting headers moves the stored values.
		var buf [256]byte
		tokens := buf[:0]
		for _, v := range vals {
			tokens = append(tokens, v...)
			tokens = append(tokens, ',')
		}
		for tok := range bytes.SplitSeq(tokens, []byte(",")) {
			tok = bytes.TrimSpace(tok)
			if len(tok) == 0 || isFraming(tok) {
				continue
			}
			h.DelBytes(tok)
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

func isFraming(tok []byte) bool {
	for _, f := range framing {
		if bytes.EqualFold(tok, f) {
			return true
		}
	}
	return false
}

// sanitizeRequest prepares the request for the backend as portcullis does
// (internal/proxy: httputil.ReverseProxy, then sanitize): hop-by-hop
// headers and every client-sent X-Forwarded-* and Forwarded header go
// first, then the proxy's own X-Forwarded-For, X-Forwarded-Proto,
// X-Forwarded-Host, Forwarded (RFC 7239) and Via are set. A client's
// "TE: trailers" is kept, as ReverseProxy keeps it.
func sanitizeRequest(h *fasthttp.RequestHeader, remote net.Addr, tls bool) {
	teTrailers := bytes.Contains(h.Peek("Te"), []byte("trailers"))
	removeHopByHop(h)
	if teTrailers {
		h.Set("Te", "trailers")
	}
	// AllInOrder reads the headers as received (h.All would parse the
	// Cookie headers and write them back re-serialized: a="q" becomes
	// a=q). The keys it yields stay valid while headers are deleted.
	var found [][]byte
	for k := range h.AllInOrder() {
		if len(k) > len(xForwardedPrefix) && bytes.EqualFold(k[:len(xForwardedPrefix)], xForwardedPrefix) {
			found = append(found, k)
		}
	}
	for _, k := range found {
		h.DelBytes(k)
	}
	h.Del("Forwarded")

	scheme := "http"
	if tls {
		scheme = "https"
	}
	var ipBuf [64]byte
	ip := ipBuf[:0]
	var client netip.Addr
	if ta, ok := remote.(*net.TCPAddr); ok {
		client = ta.AddrPort().Addr().Unmap()
		ip = client.AppendTo(ip)
		h.SetBytesV("X-Forwarded-For", ip)
	}
	h.Set("X-Forwarded-Proto", scheme)
	host := h.Host()
	h.SetBytesV("X-Forwarded-Host", host)
	var fwdBuf [256]byte
	h.SetBytesV("Forwarded", appendForwarded(fwdBuf[:0], client, ip, host, scheme))
	var viaBuf [128]byte
	h.SetBytesV("Via", appendVia(viaBuf[:0], h.PeekAll("Via"), h.IsHTTP11()))
}

// sanitizeResponse removes the hop-by-hop headers of the backend's
// response and adds this hop to Via.
func sanitizeResponse(h *fasthttp.ResponseHeader) {
	removeHopByHop(h)
	var viaBuf [128]byte
	h.SetBytesV("Via", appendVia(viaBuf[:0], h.PeekAll("Via"), h.IsHTTP11()))
}

// appendVia appends the earlier hops (several Via lines become one) and
// this hop, with the protocol version the message arrived in.
func appendVia(dst []byte, prev [][]byte, http11 bool) []byte {
	for _, p := range prev {
		if len(p) == 0 {
			continue
		}
		dst = append(dst, p...)
		dst = append(dst, ", "...)
	}
	if http11 {
		dst = append(dst, "1.1 "...)
	} else {
		dst = append(dst, "1.0 "...)
	}
	return append(dst, viaName...)
}

// appendForwarded appends an RFC 7239 Forwarded element: IPv6 addresses
// and hosts with characters outside token are quoted (§6), as portcullis
// writes it.
func appendForwarded(dst []byte, client netip.Addr, ip, host []byte, scheme string) []byte {
	if client.IsValid() {
		dst = append(dst, "for="...)
		if client.Is6() {
			dst = append(dst, `"[`...)
			dst = append(dst, ip...)
			dst = append(dst, `]"`...)
		} else {
			dst = append(dst, ip...)
		}
		dst = append(dst, ';')
	}
	if len(host) > 0 {
		dst = append(dst, "host="...)
		if needsQuote(host) {
			dst = append(dst, '"')
			for _, c := range host {
				if c == '\\' || c == '"' {
					dst = append(dst, '\\')
				}
				dst = append(dst, c)
			}
			dst = append(dst, '"')
		} else {
			dst = append(dst, host...)
		}
		dst = append(dst, ';')
	}
	dst = append(dst, "proto="...)
	return append(dst, scheme...)
}

func needsQuote(s []byte) bool {
	for _, c := range s {
		if !isTokenChar(c) {
			return true
		}
	}
	return false
}

// isTokenChar reports whether c may appear in an RFC 9110 token.
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}
