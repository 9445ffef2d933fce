// Package hostname matches host names against the patterns that routes
// name them by: "example.com" exactly, or "*.example.com" for any name
// below example.com. HTTP routes (the request's host) and layer-4 routes
// (the TLS server name) share it, so that a pattern means the same on
// both.
package hostname

import (
	"fmt"
	"strings"
)

// Pattern is a parsed host pattern. The zero Pattern matches every name,
// the empty one included.
type Pattern struct {
	// name is the lower-case name; for a wildcard, the suffix with its
	// leading dot (".example.com").
	name     string
	wildcard bool
}

// ParsePattern parses "name" or "*.suffix", case-insensitively. The empty
// string gives the zero Pattern, which matches every name. A pattern with
// a port, a scheme, a space, an empty label or a "*" anywhere but as the
// whole first label is refused; the error names s, and the caller says
// which setting it is.
func ParsePattern(s string) (Pattern, error) {
	if s == "" {
		return Pattern{}, nil
	}
	h := strings.ToLower(s)
	name, wildcard := strings.CutPrefix(h, "*.")
	if name == "" || strings.ContainsAny(name, "*/: ") || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") || strings.Contains(name, "..") {
		return Pattern{}, fmt.Errorf("%q: want a name such as example.com or *.example.com (no port, no scheme)", s)
	}
	if wildcard {
		return Pattern{name: "." + name, wildcard: true}, nil
	}
	return Pattern{name: name}, nil
}

// MustParsePattern is ParsePattern for patterns known to be valid
// (validated configuration, tests); it panics on an invalid one.
func MustParsePattern(s string) Pattern {
	p, err := ParsePattern(s)
	if err != nil {
		panic(err)
	}
	return p
}

// IsAny reports whether p is the zero Pattern, which matches every name.
func (p Pattern) IsAny() bool { return p.name == "" }

// Match reports whether name matches p: exactly, or, for "*.suffix", a
// name that ends in ".suffix" at any depth ("a.b.suffix" too) but is not
// "suffix" itself. name must be lower-case, without a port or a trailing
// dot. The empty name matches only the zero Pattern.
func (p Pattern) Match(name string) bool {
	if p.wildcard {
		return len(name) > len(p.name) && strings.HasSuffix(name, p.name)
	}
	return p.name == "" || p.name == name
}

// String returns the pattern as ParsePattern reads it, lower-case; "" for
// the zero Pattern.
func (p Pattern) String() string {
	if p.wildcard {
		return "*" + p.name
	}
	return p.name
}
