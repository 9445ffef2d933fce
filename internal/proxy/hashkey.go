package proxy

import (
	"net/http"

	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/upstream"
)

// hashFunc returns what hash balancing hashes of a request for key, or
// nil for the zero key. A request without the header or cookie is hashed
// by its client address, so that such requests still spread over the
// servers.
func hashFunc(key upstream.HashKey) func(*http.Request) uint64 {
	source := func(r *http.Request) uint64 { return balance.HashString(clientIP(r.RemoteAddr).String()) }
	switch key.Kind {
	case upstream.HashSource:
		return source
	case upstream.HashURI:
		return func(r *http.Request) uint64 {
			if r.URL.RawQuery == "" {
				return balance.HashString(r.URL.Path)
			}
			return balance.HashString(r.URL.Path + "?" + r.URL.RawQuery)
		}
	case upstream.HashHeader:
		name := http.CanonicalHeaderKey(key.Name)
		return func(r *http.Request) uint64 {
			if v := r.Header.Get(name); v != "" {
				return balance.HashString(v)
			}
			return source(r)
		}
	case upstream.HashCookie:
		name := key.Name
		return func(r *http.Request) uint64 {
			if c, err := r.Cookie(name); err == nil && c.Value != "" {
				return balance.HashString(c.Value)
			}
			return source(r)
		}
	}
	return nil
}
