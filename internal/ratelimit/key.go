package ratelimit

import (
	"errors"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// KeyKind is what a Key takes from a request.
type KeyKind uint8

// The kinds of Key.
const (
	// KeySource is the client's IP address (the one a trusted PROXY
	// header names).
	KeySource KeyKind = iota
	// KeyHeader is the value of a request header; a request without it
	// is keyed by its source.
	KeyHeader
)

// Key is how requests are told apart into clients, as written in
// rate_limits.per_client.key: source or header:NAME.
type Key struct {
	Kind KeyKind
	// Name is the header's canonical name (KeyHeader).
	Name string
}

// ParseKey parses source or header:NAME. The error says what is wrong
// with s without naming it.
func ParseKey(s string) (Key, error) {
	switch {
	case s == "source":
		return Key{Kind: KeySource}, nil
	case strings.HasPrefix(s, "header:"):
		name := strings.TrimPrefix(s, "header:")
		if !httpguts.ValidHeaderFieldName(name) {
			return Key{}, errors.New("header:NAME needs a valid header name, e.g. header:X-Client")
		}
		return Key{Kind: KeyHeader, Name: http.CanonicalHeaderKey(name)}, nil
	}
	return Key{}, errors.New("want source or header:NAME")
}

// String is the key as the configuration writes it.
func (k Key) String() string {
	if k.Kind == KeyHeader {
		return "header:" + k.Name
	}
	return "source"
}
