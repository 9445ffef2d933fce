package quiclb

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/quic-go/quic-go"
)

// Connection ID layout (QUIC-LB draft, plaintext mode, with a shard byte):
//
//	octet 0            1 .. L        1+L     2+L .. 2+L+NonceLen-1
//	+--------+------+-------------+-------+----------------------+
//	| CR (3) | LEN  |  server ID  | shard |  nonce (random)      |
//	|  bits  | (5)  |  L octets   |   1   |  NonceLen octets     |
//	+--------+------+-------------+-------+----------------------+
//
// CR is the config rotation codepoint (0 to 6, or 7 for "unroutable" when
// there is no server ID); LEN is the connection ID's length minus one
// (the draft's length self-description). To a QUIC-LB-aware balancer the
// shard byte and the nonce together are the draft's nonce; to portcullis's
// steering program the shard byte is at ShardOffset = 1 + L.
//
// The shard byte holds the generation of the process that issued the ID
// in its top bit and the shard index in its low seven bits:
//
//	  7   6               0
//	+---+-------------------+
//	| G |   shard index     |
//	+---+-------------------+
//
// During a binary upgrade two processes serve one bind, each on its own
// set of sockets (generation 0 or 1); the steering program sends a packet
// to the set its ID's generation names (steer_linux.go, docs/quic.md).
const (
	// MaxCIDLen is the longest connection ID QUIC version 1 allows
	// (RFC 9000, section 17.2).
	MaxCIDLen = 20
	// NonceLen is the length of the random nonce portcullis uses: 64
	// random bits per shard make a collision among a shard's live
	// connection IDs negligible, and IDs unlinkable (RFC 9000, section 5.1).
	NonceLen = 8
	// MaxServerIDLen is the longest server ID that leaves room for the
	// shard byte and an 8-byte nonce in 20 bytes. (The draft allows up to
	// 15 bytes with a shorter nonce; portcullis does not shorten it.)
	MaxServerIDLen = MaxCIDLen - 2 - NonceLen
	// Unroutable is the config rotation codepoint that tells a QUIC-LB
	// balancer the connection ID carries no server ID: it routes such
	// packets by their 4-tuple.
	Unroutable = 0b111
	// MaxShards is the most shards (sockets per generation) a bind can
	// have: the shard index takes the low seven bits of the shard byte,
	// indexes 0 to 127.
	MaxShards = 1 << 7
	// generationBit is the bit of the shard byte that holds the
	// generation.
	generationBit = 0x80
)

// Generation is the socket set, 0 or 1, a process serves: during a binary
// upgrade the old process keeps its generation's sockets for the
// connections it drains, and the new process serves the other one. Every
// connection ID a process issues carries its generation.
type Generation uint8

// Other returns the other generation: the one the next process serves.
func (g Generation) Other() Generation { return g ^ 1 }

func (g Generation) valid() error {
	if g > 1 {
		return fmt.Errorf("quic generation %d: want 0 or 1", g)
	}
	return nil
}

// CIDFormat is the layout of the connection IDs of one bind. All shards of
// a bind, and all instances behind one QUIC-LB balancer, share it; only the
// shard byte differs. Build one with NewCIDFormat.
type CIDFormat struct {
	// ServerID is this instance's server ID for a QUIC-LB balancer, 0 to
	// MaxServerIDLen bytes. Empty: none, and ConfigRotation is Unroutable.
	ServerID []byte
	// ConfigRotation is the top three bits of the first octet: 0 to 6
	// with a server ID, Unroutable (7) without one.
	ConfigRotation uint8
	// NonceLen is the number of random bytes after the shard byte; at
	// least 8 (NonceLen), and the whole ID at most MaxCIDLen bytes.
	NonceLen int
}

// NewCIDFormat returns the format for serverID (nil or empty: no server ID,
// config rotation Unroutable; otherwise config rotation 0) with an 8-byte
// nonce: connection IDs are 10 + len(serverID) bytes long.
func NewCIDFormat(serverID []byte) (CIDFormat, error) {
	f := CIDFormat{ServerID: append([]byte(nil), serverID...), NonceLen: NonceLen}
	if len(serverID) == 0 {
		f.ServerID = nil
		f.ConfigRotation = Unroutable
	}
	return f, f.Validate()
}

// Validate reports whether f describes connection IDs portcullis can
// issue and steer.
func (f CIDFormat) Validate() error {
	switch {
	case len(f.ServerID) > MaxServerIDLen:
		return fmt.Errorf("quic connection IDs: server ID of %d bytes: want at most %d, so that the shard byte and an %d-byte nonce fit in %d bytes", len(f.ServerID), MaxServerIDLen, NonceLen, MaxCIDLen)
	case f.ConfigRotation > Unroutable:
		return fmt.Errorf("quic connection IDs: config rotation %d: want 0 to 6, or 7 (unroutable)", f.ConfigRotation)
	case f.ConfigRotation == Unroutable && len(f.ServerID) > 0:
		return errors.New("quic connection IDs: config rotation 7 means unroutable, which carries no server ID: use 0 to 6 with a server ID")
	case f.ConfigRotation != Unroutable && len(f.ServerID) == 0:
		return fmt.Errorf("quic connection IDs: config rotation %d needs a server ID: without one, use 7 (unroutable)", f.ConfigRotation)
	case f.NonceLen < NonceLen:
		return fmt.Errorf("quic connection IDs: nonce of %d bytes: want at least %d", f.NonceLen, NonceLen)
	case f.Len() > MaxCIDLen:
		return fmt.Errorf("quic connection IDs: %d bytes long: want at most %d (shorten the server ID or the nonce)", f.Len(), MaxCIDLen)
	}
	return nil
}

// Len is the length of the connection IDs in bytes: the first octet, the
// server ID, the shard byte and the nonce.
func (f CIDFormat) Len() int { return 2 + len(f.ServerID) + f.NonceLen }

// ShardOffset is the offset of the shard byte in a connection ID. The
// steering program reads the packet's Destination Connection ID at this
// offset.
func (f CIDFormat) ShardOffset() int { return 1 + len(f.ServerID) }

// firstOctet is the config rotation and length self-description octet.
func (f CIDFormat) firstOctet() byte {
	return f.ConfigRotation<<5 | byte(f.Len()-1)&0x1f
}

// ShardOf returns the shard index of cid, a connection ID in format f: the
// low seven bits of its shard byte. cid may be longer than f.Len() (for
// example, the rest of a short-header packet after its first byte); only
// its first f.Len() bytes are read. ok is false when cid is too short or
// its first octet's length bits do not say f.Len(): the ID was not issued
// in this format.
func ShardOf(f CIDFormat, cid []byte) (shard uint8, ok bool) {
	b, ok := shardByte(f, cid)
	return b &^ generationBit, ok
}

// GenerationOf returns the generation that issued cid, a connection ID in
// format f: the top bit of its shard byte. ok is as for ShardOf.
func GenerationOf(f CIDFormat, cid []byte) (gen Generation, ok bool) {
	b, ok := shardByte(f, cid)
	return Generation(b >> 7), ok
}

func shardByte(f CIDFormat, cid []byte) (byte, bool) {
	n := f.Len()
	if n < 2 || len(cid) < n || int(cid[0]&0x1f) != n-1 {
		return 0, false
	}
	return cid[f.ShardOffset()], true
}

// ShardFor returns the shard the steering program picks, within a
// generation's set of shards sockets, for a packet whose Destination
// Connection ID is dcid: the low seven bits of the byte at ShardOffset,
// modulo shards. For an ID portcullis issued that is the shard that issued
// it; for the DCID a client picks for its first Initial it spreads new
// connections like a hash. The generation bit is left out so that a packet
// gets the same shard whichever generation's set it goes to. ok is false
// when dcid is too short to hold that byte; the program then picks the
// shard by the kernel's 4-tuple hash. Unlike ShardOf it accepts any DCID.
func ShardFor(f CIDFormat, dcid []byte, shards int) (shard int, ok bool) {
	off := f.ShardOffset()
	if shards < 1 || len(dcid) <= off {
		return 0, false
	}
	return int(dcid[off]&^generationBit) % shards, true
}

// cidGenerator issues the connection IDs of one shard. It is safe for
// concurrent use: it only reads its prefix.
type cidGenerator struct {
	prefix [MaxCIDLen]byte // first octet, server ID and shard byte
	fixed  int             // length of the prefix
	n      int             // length of the connection IDs
}

var _ quic.ConnectionIDGenerator = (*cidGenerator)(nil)

// NewCIDGenerator is NewGenCIDGenerator(f, 0, shard): the generator of a
// process of generation 0.
func NewCIDGenerator(f CIDFormat, shard uint8) quic.ConnectionIDGenerator {
	return NewGenCIDGenerator(f, 0, int(shard))
}

// NewGenCIDGenerator returns the quic-go Transport.ConnectionIDGenerator
// for shard of generation gen: connection IDs in format f whose shard byte
// (at f.ShardOffset()) holds gen in its top bit and shard in the low seven,
// with a fresh crypto/rand nonce each. The steering program picks socket
// gen*N + shard of its 2*N, so shard must be the socket's index in its
// generation's set, below N. An invalid format (see Validate), a
// generation other than 0 or 1, or a shard outside 0 to MaxShards-1 is a
// programming error and panics.
func NewGenCIDGenerator(f CIDFormat, gen Generation, shard int) quic.ConnectionIDGenerator {
	if err := f.Validate(); err != nil {
		panic(err)
	}
	if err := gen.valid(); err != nil {
		panic(err)
	}
	if shard < 0 || shard >= MaxShards {
		panic(fmt.Sprintf("quic connection IDs: shard %d: want 0 to %d", shard, MaxShards-1))
	}
	g := &cidGenerator{n: f.Len()}
	g.prefix[0] = f.firstOctet()
	copy(g.prefix[1:], f.ServerID)
	g.prefix[f.ShardOffset()] = byte(gen)<<7 | byte(shard)
	g.fixed = f.ShardOffset() + 1
	return g
}

// GenerateConnectionID returns a new connection ID. It does not allocate.
func (g *cidGenerator) GenerateConnectionID() (quic.ConnectionID, error) {
	b := g.prefix
	if _, err := rand.Read(b[g.fixed:g.n]); err != nil {
		return quic.ConnectionID{}, fmt.Errorf("quic connection ID nonce: %w", err)
	}
	return quic.ConnectionIDFromBytes(b[:g.n]), nil
}

// ConnectionIDLen returns the constant length of the connection IDs.
func (g *cidGenerator) ConnectionIDLen() int { return g.n }

// ParseServerID parses the configuration's server_id: hex digits, with or
// without a 0x prefix, for 1 to MaxServerIDLen bytes.
func ParseServerID(s string) ([]byte, error) {
	h := strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	want := fmt.Sprintf("want 1 to %d bytes as hex digits, e.g. 0a1b", MaxServerIDLen)
	if h == "" {
		return nil, fmt.Errorf("server_id %q is empty: %s, or leave server_id out", s, want)
	}
	if i := strings.IndexFunc(h, func(c rune) bool { return !strings.ContainsRune("0123456789abcdefABCDEF", c) }); i >= 0 {
		return nil, fmt.Errorf("server_id %q: %q is not a hex digit: %s", s, []rune(h[i:])[0], want)
	}
	if len(h)%2 != 0 {
		return nil, fmt.Errorf("server_id %q: odd number of hex digits (%d): %s; pad with a leading 0", s, len(h), want)
	}
	if len(h)/2 > MaxServerIDLen {
		return nil, fmt.Errorf("server_id %q is %d bytes: %s (a connection ID also holds a shard byte and an %d-byte nonce, in at most %d bytes)", s, len(h)/2, want, NonceLen, MaxCIDLen)
	}
	return hex.DecodeString(h)
}
