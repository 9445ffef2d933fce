// Package proxy is the HTTP request path: match a route, pick a server,
// sanitize headers, round-trip to the server and stream the response back.
// Its types are built once from a compiled configuration and are immutable.
package proxy

import (
	"net/http"
	"strings"

	"github.com/portcullis/portcullis/internal/hostname"
)

// Route is one compiled route. The zero Host and PathPrefix match anything.
type Route struct {
	// Host is a name ("example.com") or a suffix pattern ("*.example.com",
	// matching any name that ends in ".example.com").
	Host       hostname.Pattern
	PathPrefix string
	Backend    *Backend
	// Handler, when set, serves the route's requests in place of Backend:
	// Backend wrapped in what the route does to its responses
	// (compression). Nil: Backend itself, at no extra cost.
	Handler http.Handler
}

// Router picks the first route that matches a request.
type Router struct {
	Routes []Route
}

// Match returns the backend for host (as sent by the client, port
// allowed) and path, or nil when no route matches.
func (r *Router) Match(host, path string) *Backend {
	if rt := r.Lookup(host, path); rt != nil {
		return rt.Backend
	}
	return nil
}

// Lookup returns the first route that matches host (as sent by the
// client, port allowed) and path, or nil.
func (r *Router) Lookup(host, path string) *Route {
	host = normalizeHost(host)
	for i := range r.Routes {
		rt := &r.Routes[i]
		if !rt.Host.Match(host) {
			continue
		}
		if !strings.HasPrefix(path, rt.PathPrefix) {
			continue
		}
		return rt
	}
	return nil
}

// stripPort removes ":port" from "host:port" and "[v6]:port", and the
// brackets from "[v6]". It does not allocate.
func stripPort(host string) string {
	if strings.HasPrefix(host, "[") {
		if i := strings.IndexByte(host, ']'); i > 0 {
			return host[1:i]
		}
		return host
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 && strings.IndexByte(host, ':') == i {
		return host[:i]
	}
	return host
}

// normalizeHost strips the port and a trailing dot and lower-cases.
func normalizeHost(host string) string {
	host = stripPort(host)
	host = strings.TrimSuffix(host, ".")
	for i := 0; i < len(host); i++ {
		if 'A' <= host[i] && host[i] <= 'Z' {
			return strings.ToLower(host)
		}
	}
	return host
}
