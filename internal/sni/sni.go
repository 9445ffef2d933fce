// Package sni reads the TLS ClientHello at the start of a TCP connection
// without terminating TLS, for TLS passthrough: a layer-4 proxy learns the
// server name (SNI, RFC 6066 section 3) and the offered ALPN protocols
// (RFC 7301), picks a backend, replays exactly the bytes it read to the
// server and splices the rest of the connection.
//
// Read consumes the TLS records that carry one ClientHello and nothing
// after them; Parse parses a ClientHello handshake message body. Neither
// checks what routing does not need (cipher suites, key shares, versions),
// so the server still sees, and judges, the client's own bytes.
//
// With Encrypted Client Hello (ECH) the name read is the outer,
// public one: the real name is only visible to the server holding the ECH
// keys.
package sni

import (
	"errors"
	"fmt"
)

// Hello is what routing needs from a ClientHello.
type Hello struct {
	// ServerName is the host_name of the server_name extension, lower-cased
	// (ASCII) and without a trailing dot; "" when the client sent none
	// (clients omit it for IP addresses).
	ServerName string
	// ALPN lists the protocols offered in the
	// application_layer_protocol_negotiation extension ("h2", "http/1.1",
	// ...), in the client's order of preference; nil when absent.
	ALPN []string
}

const (
	// MaxHelloLen is the longest ClientHello handshake message Read
	// accepts, in bytes, counting its 4-byte handshake header: 16 KiB.
	// Today's largest, with post-quantum key shares (X25519MLKEM768), are
	// about 1.8 KB; pre-shared-key tickets and padding add at most a few KB.
	MaxHelloLen = 16 << 10

	// MaxHelloBytes bounds what Read consumes, in bytes: the TLS records
	// that carry one ClientHello, their 5-byte headers included. It is
	// 32 KiB: MaxHelloLen of handshake data, plus room for the headers of
	// a ClientHello fragmented across many records (even a 2 KB one split
	// into records of 1 byte each) or for the rest of a large final
	// record.
	MaxHelloBytes = 32 << 10

	// MaxRecordLen is the largest record length Read accepts, in bytes,
	// not counting the 5-byte header: 2^14 + 2048, the TLSCiphertext limit
	// of RFC 5246 section 6.2.3. Records of length 0 are malformed too
	// (RFC 8446 section 5.1 forbids empty handshake fragments).
	MaxRecordLen = 1<<14 + 2048

	// MaxALPN is the most protocols a ClientHello may offer in its ALPN
	// extension: 64. Clients offer a handful ("h2", "http/1.1"); more than
	// this is refused rather than truncated, so that routing on ALPN never
	// misses a protocol the server would see.
	MaxALPN = 64
)

// ErrNotTLS reports that the first bytes of a connection are not a TLS
// handshake record (plain TCP, HTTP, SSH, a PROXY protocol header ...).
// Read returns it with the bytes it read, at most 5, so the caller can
// still forward them.
var ErrNotTLS = errors.New("sni: not a TLS handshake")

// Error reports a malformed or refused ClientHello, or records that do not
// carry one. The connection is TLS, or claims to be, but cannot be routed.
type Error struct {
	// Reason says what is wrong, naming the field and the lengths seen.
	Reason string
}

func (e *Error) Error() string { return "sni: malformed ClientHello: " + e.Reason }

func malformed(format string, args ...any) *Error {
	return &Error{Reason: fmt.Sprintf(format, args...)}
}
