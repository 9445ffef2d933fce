package l4

import (
	"slices"
	"strings"

	"github.com/portcullis/portcullis/internal/hostname"
	"github.com/portcullis/portcullis/internal/sni"
	"github.com/portcullis/portcullis/internal/upstream"
)

// Route sends the TCP connections it matches to a backend.
type Route struct {
	// SNI matches the server name of the TLS ClientHello, case-insensitively
	// (hostname.Pattern): the zero Pattern matches every connection, TLS or
	// not; "name" matches exactly; "*.suffix" matches any name ending in
	// ".suffix", at any depth ("a.b.suffix" too), but not "suffix" itself.
	SNI hostname.Pattern
	// ALPN also requires the ClientHello to offer one of these protocols.
	// Empty: any, or no TLS at all when SNI is "" too.
	ALPN []string
	// Backend takes the connections. Required.
	Backend *upstream.Backend
	// BackendName names Backend in logs.
	BackendName string
}

// Table is the routes of a TCP frontend, tried in order; the first match
// wins. A Table is immutable once built by NewTable; a reload builds a new
// one and swaps it in (see TCP.Table).
type Table struct {
	Routes []Route

	needHello bool
}

// NewTable compiles routes into a table: it copies them and notes whether
// any route needs the ClientHello.
func NewTable(routes []Route) *Table {
	t := &Table{Routes: slices.Clone(routes)}
	for _, r := range t.Routes {
		if !r.SNI.IsAny() || len(r.ALPN) > 0 {
			t.needHello = true
		}
	}
	return t
}

// NeedHello reports whether some route matches by SNI or ALPN, so that a
// connection's TLS ClientHello has to be read before choosing a route.
func (t *Table) NeedHello() bool { return t != nil && t.needHello }

// Match returns the first route that matches a connection whose
// ClientHello is hello (nil: not TLS, or not read), or nil when none does.
func (t *Table) Match(hello *sni.Hello) *Route {
	if t == nil {
		return nil
	}
	var name string
	if hello != nil {
		name = strings.TrimSuffix(strings.ToLower(hello.ServerName), ".")
	}
	for i := range t.Routes {
		r := &t.Routes[i]
		if !r.SNI.IsAny() && (hello == nil || !r.SNI.Match(name)) {
			continue
		}
		if len(r.ALPN) > 0 && (hello == nil || !offersAny(hello.ALPN, r.ALPN)) {
			continue
		}
		return r
	}
	return nil
}

// offersAny reports whether offered holds one of wanted. Protocol IDs are
// compared exactly (RFC 7301 §3.1: opaque byte strings).
func offersAny(offered, wanted []string) bool {
	for _, o := range offered {
		for _, w := range wanted {
			if o == w {
				return true
			}
		}
	}
	return false
}
