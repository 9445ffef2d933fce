package proxy

import (
	"net/http"
	"strings"

	"github.com/portcullis/portcullis/internal/balance"
)

// hashKeyFunc returns what hash balancing hashes for key (source, uri,
// header:NAME, cookie:NAME), or nil when key is empty. A request without
// the header or cookie is hashed by its client address, so that such
// requests still spread over the servers.
func hashKeyFunc(key string) func(*http.Request) uint64 {
	source := func(r *http.Request) uint64 { return balance.HashString(clientIP(r.RemoteAddr).String()) }
	switch {
	case key == "":
		return nil
	case key == "source":
		return source
	case key == "uri":
		return func(r *http.Request) uint64 {
			if r.URL.RawQuery == "" {
				return balance.HashString(r.URL.Path)
			}
			return balance.HashString(r.URL.Path + "?" + r.URL.RawQuery)
		}
	case strings.HasPrefix(key, "header:"):
		name := http.CanonicalHeaderKey(strings.TrimPrefix(key, "header:"))
		return func(r *http.Request) uint64 {
			if v := r.Header.Get(name); v != "" {
				return balance.HashString(v)
			}
			return source(r)
		}
	case strings.HasPrefix(key, "cookie:"):
		name := strings.TrimPrefix(key, "cookie:")
		return func(r *http.Request) uint64 {
			if c, err := r.Cookie(name); err == nil && c.Value != "" {
				return balance.HashString(c.Value)
			}
			return source(r)
		}
	}
	return nil
}
