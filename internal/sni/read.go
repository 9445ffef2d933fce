package sni

import (
	"fmt"
	"io"
	"slices"
)

const (
	recordHeaderLen     = 5
	recordTypeHandshake = 22 // RFC 8446 section 5.1, ContentType handshake
	handshakeHeaderLen  = 4
	typeClientHello     = 1 // RFC 8446 section 4, HandshakeType client_hello
)

// Read reads TLS records from r until it holds one whole ClientHello
// handshake message, and returns it parsed along with every byte read, to
// be replayed to the server unchanged.
//
// Read never reads past the end of the record that completes the
// ClientHello: it reads each 5-byte record header, then exactly the
// record's length, so whatever the client sent next stays in r to be
// spliced. Handshake data after the ClientHello in that last record is
// returned in the bytes but not parsed. At most MaxHelloBytes are read.
//
// The record version is not checked beyond its major byte (clients send
// 0x0301 or 0x0303 in the first record); the content type must be
// handshake (22) in every record, and each record's length between 1 and
// MaxRecordLen.
//
// Errors, always with the bytes read so far:
//   - ErrNotTLS, when the first byte is not 22 (handshake) or the record
//     version's major byte is not 3. Read stops after the first byte that
//     proves it, so a client of a protocol where the client speaks first
//     with less than 5 bytes is not kept waiting;
//   - a *Error, when the records or the ClientHello are malformed or over
//     a limit;
//   - r's error wrapped (io.EOF when r ends before the first byte,
//     io.ErrUnexpectedEOF when it ends after it, before the end of the
//     ClientHello, a timeout ...).
//
// Read sets no deadline: the caller bounds the wait on r.
func Read(r io.Reader) (*Hello, []byte, error) {
	var hdr [recordHeaderLen]byte // the record header being read
	if _, err := io.ReadFull(r, hdr[:1]); err != nil {
		return nil, nil, fmt.Errorf("sni: reading the first byte: %w", err)
	}
	if hdr[0] != recordTypeHandshake {
		return nil, slices.Clone(hdr[:1]), ErrNotTLS
	}
	if n, err := io.ReadFull(r, hdr[1:]); err != nil {
		return nil, slices.Clone(hdr[:1+n]), fmt.Errorf("sni: reading the first TLS record header: %w", unexpected(err))
	}
	if hdr[1] != 3 {
		return nil, slices.Clone(hdr[:]), ErrNotTLS
	}

	var (
		raw []byte // every byte read
		hs  []byte // handshake data gathered so far
	)
	for record := 1; ; record++ {
		if record == 1 {
			// Most ClientHellos fit one record: size raw for it.
			raw = make([]byte, 0, recordHeaderLen+min(recordLen(hdr[:]), MaxRecordLen))
			raw = append(raw, hdr[:]...)
		} else {
			n, err := io.ReadFull(r, hdr[:])
			raw = append(raw, hdr[:n]...)
			if err != nil {
				return nil, raw, fmt.Errorf("sni: reading the header of TLS record %d: %w", record, unexpected(err))
			}
			if hdr[0] != recordTypeHandshake {
				return nil, raw, malformed("record %d has content type %d, want handshake (22): the ClientHello is incomplete", record, hdr[0])
			}
		}
		length := recordLen(hdr[:])
		if length == 0 || length > MaxRecordLen {
			return nil, raw, malformed("record %d has length %d, want 1 to %d", record, length, MaxRecordLen)
		}
		if len(raw)+length > MaxHelloBytes {
			return nil, raw, malformed("record %d of %d bytes would take the records carrying the ClientHello past %d bytes (MaxHelloBytes)", record, length, MaxHelloBytes)
		}

		body := len(raw)
		raw = slices.Grow(raw, length)[:body+length]
		if n, err := io.ReadFull(r, raw[body:]); err != nil {
			return nil, raw[:body+n], fmt.Errorf("sni: reading TLS record %d (%d bytes): %w", record, length, unexpected(err))
		}
		if hs == nil {
			// The first fragment is used in place; the full slice
			// expression makes a later append copy it out of raw.
			hs = raw[body : body+length : body+length]
		} else {
			hs = append(hs, raw[body:]...)
		}

		if hs[0] != typeClientHello {
			return nil, raw, malformed("handshake message type %d, want client_hello (1)", hs[0])
		}
		if len(hs) < handshakeHeaderLen {
			continue
		}
		n := handshakeHeaderLen + (int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3]))
		if n > MaxHelloLen {
			return nil, raw, malformed("ClientHello of %d bytes exceeds %d bytes (MaxHelloLen)", n, MaxHelloLen)
		}
		if len(hs) >= n {
			h, err := Parse(hs[handshakeHeaderLen:n])
			if err != nil {
				return nil, raw, err
			}
			return h, raw, nil
		}
	}
}

// recordLen returns the length field of a record header.
func recordLen(hdr []byte) int { return int(hdr[3])<<8 | int(hdr[4]) }

// unexpected turns io.EOF into io.ErrUnexpectedEOF: once a record has
// begun, the end of r is always premature.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
