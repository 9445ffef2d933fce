package sni

import (
	"strconv"

	"golang.org/x/crypto/cryptobyte"
)

// Extension types read by Parse.
const (
	extServerName = 0  // RFC 6066 section 3
	extALPN       = 16 // RFC 7301 section 3.1
)

// Parse parses the body of a ClientHello handshake message: the bytes after
// its 4-byte handshake header (RFC 8446 section 4.1.2, RFC 5246 section
// 7.4.1.2). It checks every length field and the structure of the
// server_name and application_layer_protocol_negotiation extensions, and
// skips every other extension unread. A ClientHello without extensions (TLS
// 1.0 to 1.2 allow it) has no server name and no ALPN.
//
// The server name follows RFC 6066 section 3: entries of a name_type other
// than host_name (0) are skipped; two host_names, an empty one, or one with
// a byte outside printable ASCII without space (0x21 to 0x7E) are errors.
// One trailing dot is removed and the name lower-cased (ASCII only).
// ALPN follows RFC 7301 section 3.1: the list and every protocol name in it
// must be non-empty; more than MaxALPN protocols are an error. A second
// server_name or ALPN extension is an error (RFC 8446 section 4.2), so a
// proxy cannot route on a different one than the server would read.
//
// Errors are *Error. The Hello returned does not retain body.
func Parse(body []byte) (*Hello, error) {
	s := cryptobyte.String(body)
	var legacyVersion uint16
	if !s.ReadUint16(&legacyVersion) || !s.Skip(32) {
		return nil, malformed("ClientHello body of %d bytes is shorter than its version and random (34 bytes)", len(body))
	}
	var sessionID, suites, compression cryptobyte.String
	if err := readPrefixed(&s, 1, &sessionID, "legacy_session_id"); err != nil {
		return nil, err
	}
	if len(sessionID) > 32 {
		return nil, malformed("legacy_session_id of %d bytes, want at most 32", len(sessionID))
	}
	if err := readPrefixed(&s, 2, &suites, "cipher_suites"); err != nil {
		return nil, err
	}
	if len(suites) < 2 || len(suites)%2 != 0 {
		return nil, malformed("cipher_suites of %d bytes, want a positive even number", len(suites))
	}
	if err := readPrefixed(&s, 1, &compression, "legacy_compression_methods"); err != nil {
		return nil, err
	}
	if len(compression) == 0 {
		return nil, malformed("legacy_compression_methods is empty")
	}

	h := new(Hello)
	if s.Empty() {
		return h, nil
	}
	var exts cryptobyte.String
	if err := readPrefixed(&s, 2, &exts, "extensions"); err != nil {
		return nil, err
	}
	if !s.Empty() {
		return nil, malformed("%d bytes after the extensions", len(s))
	}
	var seenSNI, seenALPN bool
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) {
			return nil, malformed("extension type truncated: %d byte left in the extensions", len(exts))
		}
		if before := exts; !exts.ReadUint16LengthPrefixed(&data) {
			// Naming the extension costs an allocation: only on error.
			return nil, readPrefixed(&before, 2, &data, extName(typ))
		}
		var err error
		switch typ {
		case extServerName:
			if seenSNI {
				return nil, malformed("second server_name extension")
			}
			seenSNI = true
			h.ServerName, err = parseServerName(data)
		case extALPN:
			if seenALPN {
				return nil, malformed("second application_layer_protocol_negotiation extension")
			}
			seenALPN = true
			h.ALPN, err = parseALPN(data)
		}
		if err != nil {
			return nil, err
		}
	}
	return h, nil
}

// parseServerName parses the server_name extension's data, a
// ServerNameList (RFC 6066 section 3).
func parseServerName(data cryptobyte.String) (string, error) {
	var list cryptobyte.String
	if err := readPrefixed(&data, 2, &list, "server_name list"); err != nil {
		return "", err
	}
	if !data.Empty() {
		return "", malformed("%d bytes after the server_name list", len(data))
	}
	if list.Empty() {
		return "", malformed("server_name list is empty")
	}
	var host []byte
	for !list.Empty() {
		var nameType uint8
		var name cryptobyte.String
		if !list.ReadUint8(&nameType) {
			return "", malformed("server_name list truncated")
		}
		if err := readPrefixed(&list, 2, &name, "server_name entry"); err != nil {
			return "", err
		}
		if len(name) == 0 {
			return "", malformed("empty server_name entry of name_type %d", nameType)
		}
		if nameType != 0 {
			continue // not host_name: a future type this proxy cannot route on
		}
		if host != nil {
			return "", malformed("more than one host_name in server_name")
		}
		host = name
	}
	if host == nil {
		return "", nil
	}
	return hostName(host)
}

// hostName checks a host_name and returns it lower-cased, without one
// trailing dot.
func hostName(b []byte) (string, error) {
	upper := false
	for i, c := range b {
		if c < 0x21 || c > 0x7e {
			return "", malformed("host_name has byte 0x%02x at offset %d, want printable ASCII", c, i)
		}
		upper = upper || 'A' <= c && c <= 'Z'
	}
	if b[len(b)-1] == '.' {
		b = b[:len(b)-1]
	}
	if len(b) == 0 {
		return "", malformed(`host_name is "."`)
	}
	if !upper {
		return string(b), nil
	}
	lower := make([]byte, len(b))
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	return string(lower), nil
}

// parseALPN parses the application_layer_protocol_negotiation extension's
// data, a ProtocolNameList (RFC 7301 section 3.1).
func parseALPN(data cryptobyte.String) ([]string, error) {
	var list cryptobyte.String
	if err := readPrefixed(&data, 2, &list, "ALPN protocol_name_list"); err != nil {
		return nil, err
	}
	if !data.Empty() {
		return nil, malformed("%d bytes after the ALPN protocol_name_list", len(data))
	}
	if list.Empty() {
		return nil, malformed("ALPN protocol_name_list is empty")
	}
	// Count first, so the slice is allocated once and no larger than the
	// names in the list.
	n := 0
	for l := list; !l.Empty(); n++ {
		var p cryptobyte.String
		if !l.ReadUint8LengthPrefixed(&p) {
			break // reported below
		}
	}
	if n > MaxALPN {
		return nil, malformed("ALPN offers %d protocols, more than %d (MaxALPN)", n, MaxALPN)
	}
	protos := make([]string, 0, n)
	for !list.Empty() {
		var p cryptobyte.String
		if err := readPrefixed(&list, 1, &p, "ALPN protocol name"); err != nil {
			return nil, err
		}
		if len(p) == 0 {
			return nil, malformed("empty ALPN protocol name at position %d", len(protos)+1)
		}
		protos = append(protos, protocol(p))
	}
	return protos, nil
}

// protocol returns p as a string, without allocating for the common names.
func protocol(p []byte) string {
	switch string(p) {
	case "h2":
		return "h2"
	case "http/1.1":
		return "http/1.1"
	}
	return string(p)
}

// readPrefixed reads a field with a size-byte length prefix (1 or 2) from s
// into out, or says which field overruns what is left.
func readPrefixed(s *cryptobyte.String, size int, out *cryptobyte.String, field string) error {
	before := *s
	var ok bool
	if size == 1 {
		ok = s.ReadUint8LengthPrefixed(out)
	} else {
		ok = s.ReadUint16LengthPrefixed(out)
	}
	if ok {
		return nil
	}
	if len(before) < size {
		return malformed("%s length truncated: %d bytes left, want %d", field, len(before), size)
	}
	n := int(before[0])
	if size == 2 {
		n = n<<8 | int(before[1])
	}
	return malformed("%s length %d exceeds the %d bytes left", field, n, len(before)-size)
}

// extName names an extension type in errors.
func extName(typ uint16) string {
	switch typ {
	case extServerName:
		return "server_name extension"
	case extALPN:
		return "application_layer_protocol_negotiation extension"
	}
	return "extension " + strconv.Itoa(int(typ))
}
