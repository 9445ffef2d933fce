package attack

// QUIC v1 Initial packets (RFC 9000 §17.2, RFC 9001 §5): the long header,
// the Initial keys derived from the client's destination connection ID,
// packet and header protection, and variable-length integers, as much as
// QUICFlood needs to re-encrypt one captured Initial per attempt.

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
)

// longHeader is what QUICFlood reads of a long-header packet.
type longHeader struct {
	dcid, scid []byte
	pnOff      int // where the packet number starts
	end        int // where the packet ends (Length)
}

func parseLongHeader(b []byte) (longHeader, error) {
	var h longHeader
	r := b[5:]
	for _, id := range []*[]byte{&h.dcid, &h.scid} {
		if len(r) < 1 || len(r) < 1+int(r[0]) || r[0] > 20 {
			return h, errors.New("truncated connection ID")
		}
		*id, r = r[1:1+r[0]], r[1+r[0]:]
	}
	if (b[0]>>4)&3 == 0 { // Initial: token
		n, rest, ok := varint(r)
		if !ok || uint64(len(rest)) < n {
			return h, errors.New("truncated token")
		}
		r = rest[n:]
	}
	n, rest, ok := varint(r)
	if !ok || uint64(len(rest)) < n {
		return h, errors.New("truncated Length")
	}
	h.pnOff = len(b) - len(rest)
	h.end = h.pnOff + int(n)
	if n < 20 {
		return h, errors.New("packet too short to sample for header protection")
	}
	return h, nil
}

// openInitial unprotects the server Initial at the start of b, sent to
// the attempt with Destination Connection ID dcid, and returns its frames.
func openInitial(b, dcid []byte) ([]byte, error) {
	h, err := parseLongHeader(b)
	if err != nil {
		return nil, err
	}
	k, err := newInitialKeys(dcid, "server in")
	if err != nil {
		return nil, err
	}
	return k.open(b, h)
}

// initialKeys are the keys of one direction of the Initial packets of a
// connection (RFC 9001, section 5.2).
type initialKeys struct {
	aead cipher.AEAD
	iv   []byte
	hp   cipher.Block
}

// initialSalt is QUIC v1's (RFC 9001, section 5.2).
var initialSalt = []byte{0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad, 0xcc, 0xbb, 0x7f, 0x0a}

func newInitialKeys(dcid []byte, label string) (*initialKeys, error) {
	initial, err := hkdf.Extract(sha256.New, dcid, initialSalt)
	if err != nil {
		return nil, err
	}
	secret := expandLabel(initial, label, 32)
	block, err := aes.NewCipher(expandLabel(secret, "quic key", 16))
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	hp, err := aes.NewCipher(expandLabel(secret, "quic hp", 16))
	if err != nil {
		return nil, err
	}
	return &initialKeys{aead: aead, iv: expandLabel(secret, "quic iv", 12), hp: hp}, nil
}

// expandLabel is TLS 1.3's HKDF-Expand-Label with an empty context (RFC
// 8446, section 7.1).
func expandLabel(secret []byte, label string, n int) []byte {
	l := "tls13 " + label
	info := append([]byte{byte(n >> 8), byte(n), byte(len(l))}, l...)
	info = append(info, 0)
	out, err := hkdf.Expand(sha256.New, secret, string(info), n)
	if err != nil {
		panic(err) // n is at most 32: Expand cannot fail
	}
	return out
}

func (k *initialKeys) nonce(pn uint64) []byte {
	n := make([]byte, len(k.iv))
	copy(n, k.iv)
	for i := range 8 {
		n[len(n)-1-i] ^= byte(pn >> (8 * i))
	}
	return n
}

// mask is the header protection mask for the packet whose packet number
// starts at pnOff (RFC 9001, section 5.4).
func (k *initialKeys) mask(b []byte, pnOff int) [16]byte {
	var m [16]byte
	k.hp.Encrypt(m[:], b[pnOff+4:pnOff+20])
	return m
}

func (k *initialKeys) protectHeader(b []byte, pnOff, pnLen int) {
	m := k.mask(b, pnOff)
	b[0] ^= m[0] & 0x0f
	for i := range pnLen {
		b[pnOff+i] ^= m[1+i]
	}
}

// open removes header and packet protection from the packet of b whose
// header is h, and returns its frames. b is not modified.
func (k *initialKeys) open(b []byte, h longHeader) ([]byte, error) {
	if h.end > len(b) || h.pnOff+20 > len(b) {
		return nil, errors.New("packet shorter than its Length")
	}
	m := k.mask(b, h.pnOff)
	first := b[0] ^ m[0]&0x0f
	pnLen := int(first&3) + 1
	hdr := append([]byte(nil), b[:h.pnOff+pnLen]...)
	hdr[0] = first
	var pn uint64
	for i := range pnLen {
		hdr[h.pnOff+i] ^= m[1+i]
		pn = pn<<8 | uint64(hdr[h.pnOff+i])
	}
	out, err := k.aead.Open(nil, k.nonce(pn), b[h.pnOff+pnLen:h.end], hdr)
	if err != nil {
		return nil, errors.New("does not decrypt with the Initial keys")
	}
	return out, nil
}

// varint reads a QUIC variable-length integer (RFC 9000, section 16).
func varint(b []byte) (uint64, []byte, bool) {
	if len(b) == 0 {
		return 0, b, false
	}
	n := 1 << (b[0] >> 6)
	if len(b) < n {
		return 0, b, false
	}
	v := uint64(b[0] & 0x3f)
	for _, c := range b[1:n] {
		v = v<<8 | uint64(c)
	}
	return v, b[n:], true
}

func appendVarint(b []byte, v uint64) []byte {
	switch {
	case v < 1<<6:
		return append(b, byte(v))
	case v < 1<<14:
		return binary.BigEndian.AppendUint16(b, 0x4000|uint16(v))
	case v < 1<<30:
		return binary.BigEndian.AppendUint32(b, 0x80000000|uint32(v))
	}
	return binary.BigEndian.AppendUint64(b, 0xc0<<56|v)
}
