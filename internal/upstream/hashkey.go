package upstream

import (
	"errors"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// HashKind is what a HashKey takes from a request or a connection.
type HashKind uint8

// The kinds of HashKey.
const (
	HashNone   HashKind = iota // nothing: every request hashes alike
	HashSource                 // the client's IP address
	HashURI                    // an HTTP request's path and query
	HashHeader                 // an HTTP request header, Name; else the source
	HashCookie                 // an HTTP request cookie, Name; else the source
)

// HashKey is what balance.Hash hashes, as written in a backend's hash_key:
// source, uri, header:NAME or cookie:NAME. A request without the header or
// cookie is hashed by its client address, so that such requests still
// spread over the servers. Only source applies to layer-4 connections.
type HashKey struct {
	Kind HashKind
	// Name is the header's or the cookie's name, as written.
	Name string
}

// ParseHashKey parses source, uri, header:NAME or cookie:NAME; "" is the
// zero HashKey. The error says what is wrong with s without naming it.
func ParseHashKey(s string) (HashKey, error) {
	switch {
	case s == "":
		return HashKey{}, nil
	case s == "source":
		return HashKey{Kind: HashSource}, nil
	case s == "uri":
		return HashKey{Kind: HashURI}, nil
	case strings.HasPrefix(s, "header:"):
		name := strings.TrimPrefix(s, "header:")
		if !httpguts.ValidHeaderFieldName(name) {
			return HashKey{}, errors.New("header:NAME needs a valid header name")
		}
		return HashKey{Kind: HashHeader, Name: name}, nil
	case strings.HasPrefix(s, "cookie:"):
		name := strings.TrimPrefix(s, "cookie:")
		if !httpguts.ValidHeaderFieldName(name) {
			return HashKey{}, errors.New("cookie:NAME needs a valid cookie name")
		}
		return HashKey{Kind: HashCookie, Name: name}, nil
	}
	return HashKey{}, errors.New("want source, uri, header:NAME or cookie:NAME")
}

// String is the key as written in the configuration.
func (k HashKey) String() string {
	switch k.Kind {
	case HashSource:
		return "source"
	case HashURI:
		return "uri"
	case HashHeader:
		return "header:" + k.Name
	case HashCookie:
		return "cookie:" + k.Name
	}
	return ""
}
