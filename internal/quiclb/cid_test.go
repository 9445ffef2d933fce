package quiclb

import (
	"bytes"
	"strings"
	"testing"

	"github.com/quic-go/quic-go"
)

func mustFormat(t testing.TB, serverID []byte) CIDFormat {
	t.Helper()
	f, err := NewCIDFormat(serverID)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func generate(t testing.TB, g quic.ConnectionIDGenerator) []byte {
	t.Helper()
	id, err := g.GenerateConnectionID()
	if err != nil {
		t.Fatal(err)
	}
	return id.Bytes()
}

func TestCIDLayout(t *testing.T) {
	for _, tc := range []struct {
		name     string
		serverID []byte
		shard    uint8
		prefix   []byte // the bytes before the nonce
		offset   int
	}{
		// No server ID: config rotation 0b111 (unroutable), length 10
		// (0b01001 = 9 = 10 - 1), shard byte at offset 1.
		{"unroutable", nil, 5, []byte{0b111_01001, 5}, 1},
		// A 2-byte server ID: config rotation 0, length 12, shard at 3.
		{"server id", []byte{0x0a, 0x1b}, 7, []byte{0b000_01011, 0x0a, 0x1b, 7}, 3},
		// The longest server ID: 20 bytes (0b10011 = 19).
		{"longest", bytes.Repeat([]byte{0xee}, 10), 127, append(append([]byte{0b000_10011}, bytes.Repeat([]byte{0xee}, 10)...), 127), 11},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := mustFormat(t, tc.serverID)
			if got, want := f.Len(), len(tc.prefix)+NonceLen; got != want {
				t.Fatalf("Len() = %d, want %d", got, want)
			}
			if got := f.ShardOffset(); got != tc.offset {
				t.Fatalf("ShardOffset() = %d, want %d", got, tc.offset)
			}
			g := NewCIDGenerator(f, tc.shard)
			if g.ConnectionIDLen() != f.Len() {
				t.Fatalf("ConnectionIDLen() = %d, want %d", g.ConnectionIDLen(), f.Len())
			}
			id := generate(t, g)
			if len(id) != f.Len() {
				t.Fatalf("generated %d bytes, want %d", len(id), f.Len())
			}
			if !bytes.HasPrefix(id, tc.prefix) {
				t.Fatalf("id %x does not start with %x", id, tc.prefix)
			}
			if id[f.ShardOffset()] != tc.shard {
				t.Fatalf("shard byte %d, want %d", id[f.ShardOffset()], tc.shard)
			}
		})
	}
}

func TestCIDFormatLengths(t *testing.T) {
	for l := 0; l <= MaxServerIDLen; l++ {
		f := mustFormat(t, bytes.Repeat([]byte{1}, l))
		if f.Len() != 10+l || f.Len() < 8 || f.Len() > MaxCIDLen {
			t.Errorf("server ID of %d bytes: Len() = %d, want %d", l, f.Len(), 10+l)
		}
	}
	if _, err := NewCIDFormat(make([]byte, MaxServerIDLen+1)); err == nil || !strings.Contains(err.Error(), "at most 10") {
		t.Errorf("11-byte server ID: err = %v, want one saying at most 10", err)
	}
}

func TestCIDFormatValidate(t *testing.T) {
	for _, tc := range []struct {
		f    CIDFormat
		want string
	}{
		{CIDFormat{ConfigRotation: Unroutable, NonceLen: 8}, ""},
		{CIDFormat{ServerID: []byte{1}, ConfigRotation: 6, NonceLen: 8}, ""},
		{CIDFormat{ServerID: []byte{1}, ConfigRotation: 0, NonceLen: 17}, ""},
		{CIDFormat{ServerID: []byte{1}, ConfigRotation: 0, NonceLen: 18}, "at most 20"},
		{CIDFormat{ConfigRotation: Unroutable, NonceLen: 7}, "at least 8"},
		{CIDFormat{ConfigRotation: 0, NonceLen: 8}, "needs a server ID"},
		{CIDFormat{ServerID: []byte{1}, ConfigRotation: Unroutable, NonceLen: 8}, "unroutable"},
		{CIDFormat{ServerID: []byte{1}, ConfigRotation: 8, NonceLen: 8}, "0 to 6"},
	} {
		err := tc.f.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: Validate() = %v, want %q", tc.f, err, tc.want)
		}
	}
}

func TestNewCIDGeneratorPanicsOnInvalidFormat(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	NewCIDGenerator(CIDFormat{}, 0)
}

func TestNewGenCIDGeneratorPanics(t *testing.T) {
	f := mustFormat(t, nil)
	for _, tc := range []struct {
		name  string
		gen   Generation
		shard int
	}{
		{"generation 2", 2, 0},
		{"shard 128", 0, MaxShards},
		{"shard -1", 1, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			NewGenCIDGenerator(f, tc.gen, tc.shard)
		})
	}
	// Through the generation 0 constructor too: shard 128 would set the
	// generation bit.
	defer func() {
		if recover() == nil {
			t.Fatal("NewCIDGenerator(f, 128): no panic")
		}
	}()
	NewCIDGenerator(f, 128)
}

func TestCIDGeneration(t *testing.T) {
	f := mustFormat(t, []byte{0x0a, 0x1b}) // shard byte at 3
	for _, tc := range []struct {
		gen   Generation
		shard int
		byte  byte
	}{
		{0, 0, 0x00},
		{0, 5, 0x05},
		{0, 127, 0x7f},
		{1, 0, 0x80},
		{1, 5, 0x85},
		{1, 127, 0xff},
	} {
		id := generate(t, NewGenCIDGenerator(f, tc.gen, tc.shard))
		if id[3] != tc.byte || id[0] != 0b000_01011 {
			t.Errorf("generation %d shard %d: id %x, want first octet 0b000_01011 and shard byte %#02x", tc.gen, tc.shard, id, tc.byte)
		}
		if g, ok := GenerationOf(f, id); !ok || g != tc.gen {
			t.Errorf("GenerationOf(%x) = %d, %v; want %d", id, g, ok, tc.gen)
		}
		if s, ok := ShardOf(f, id); !ok || int(s) != tc.shard {
			t.Errorf("ShardOf(%x) = %d, %v; want %d", id, s, ok, tc.shard)
		}
		// Whatever the generation, the shard within the set.
		if s, ok := ShardFor(f, id, 128); !ok || s != tc.shard {
			t.Errorf("ShardFor(%x, 128) = %d, %v; want %d", id, s, ok, tc.shard)
		}
	}
	if g := Generation(0).Other(); g != 1 {
		t.Errorf("Generation(0).Other() = %d", g)
	}
	if g := Generation(1).Other(); g != 0 {
		t.Errorf("Generation(1).Other() = %d", g)
	}
	if _, ok := GenerationOf(f, []byte{0x0b, 1, 2}); ok {
		t.Error("GenerationOf accepted a truncated ID")
	}
}

func TestCIDUnique(t *testing.T) {
	const n = 100_000
	g := NewCIDGenerator(mustFormat(t, nil), 3)
	seen := make(map[quic.ConnectionID]struct{}, n)
	for i := 0; i < n; i++ {
		id, err := g.GenerateConnectionID()
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := seen[id]; dup {
			t.Fatalf("duplicate connection ID %s after %d", id, i)
		}
		seen[id] = struct{}{}
	}
}

func TestCIDGeneratorDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	g := NewCIDGenerator(mustFormat(t, []byte{1, 2, 3}), 1)
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := g.GenerateConnectionID(); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("GenerateConnectionID allocates %v times", n)
	}
}

func TestShardOfRoundTrip(t *testing.T) {
	for _, sid := range [][]byte{nil, {0xab}, bytes.Repeat([]byte{0xcd}, MaxServerIDLen)} {
		f := mustFormat(t, sid)
		for gen := Generation(0); gen <= 1; gen++ {
			for shard := 0; shard < MaxShards; shard++ {
				id := generate(t, NewGenCIDGenerator(f, gen, shard))
				got, ok := ShardOf(f, id)
				if !ok || got != uint8(shard) {
					t.Fatalf("server ID %x: ShardOf(%x) = %d, %v; want %d, true", sid, id, got, ok, shard)
				}
				if g, ok := GenerationOf(f, id); !ok || g != gen {
					t.Fatalf("server ID %x: GenerationOf(%x) = %d, %v; want %d, true", sid, id, g, ok, gen)
				}
				// The rest of a short-header packet: the ID, then more bytes.
				if got, ok := ShardOf(f, append(id, 0x55, 0x66)); !ok || got != uint8(shard) {
					t.Fatalf("ShardOf(id + payload) = %d, %v", got, ok)
				}
				if got, ok := ShardFor(f, id, 4); !ok || got != shard%4 {
					t.Fatalf("ShardFor(%x, 4) = %d, %v; want %d", id, got, ok, shard%4)
				}
			}
		}
	}
}

func TestShardOfRejects(t *testing.T) {
	f := mustFormat(t, []byte{0x0a})
	id := generate(t, NewCIDGenerator(f, 2))
	if _, ok := ShardOf(f, id[:len(id)-1]); ok {
		t.Error("accepted a truncated ID")
	}
	if _, ok := ShardOf(f, nil); ok {
		t.Error("accepted an empty ID")
	}
	other := bytes.Clone(id)
	other[0] = other[0]&0xe0 | 19 // says 20 bytes
	if _, ok := ShardOf(f, append(other, make([]byte, 10)...)); ok {
		t.Error("accepted an ID whose length bits disagree")
	}
	// Another format (no server ID) reads the wrong length.
	if _, ok := ShardOf(mustFormat(t, nil), id); ok {
		t.Error("accepted an ID of another length")
	}
	if _, ok := ShardOf(CIDFormat{}, []byte{0, 0, 0}); ok {
		t.Error("zero format accepted an ID")
	}
}

func TestShardFor(t *testing.T) {
	f := mustFormat(t, []byte{0x0a, 0x0b}) // shard byte at 3
	for _, tc := range []struct {
		dcid   []byte
		shards int
		want   int
		ok     bool
	}{
		{[]byte{9, 9, 9, 6, 9, 9, 9, 9}, 4, 2, true},
		{[]byte{9, 9, 9, 0x86, 9, 9, 9, 9}, 4, 2, true}, // the generation bit is not the shard's
		{[]byte{9, 9, 9, 0x86, 9, 9, 9, 9}, 5, 1, true},
		{[]byte{9, 9, 9, 6}, 1, 0, true},
		{[]byte{9, 9, 9}, 4, 0, false}, // too short: the kernel's hash
		{[]byte{9, 9, 9, 6}, 0, 0, false},
	} {
		if got, ok := ShardFor(f, tc.dcid, tc.shards); got != tc.want || ok != tc.ok {
			t.Errorf("ShardFor(%x, %d) = %d, %v; want %d, %v", tc.dcid, tc.shards, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseServerID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []byte
		err  string
	}{
		{"0a1b", []byte{0x0a, 0x1b}, ""},
		{"0x0A1B", []byte{0x0a, 0x1b}, ""},
		{"ff", []byte{0xff}, ""},
		{"00112233445566778899", []byte{0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99}, ""},
		{"", nil, "is empty"},
		{"0x", nil, "is empty"},
		{"abc", nil, "odd number of hex digits"},
		{"0g", nil, "'g' is not a hex digit"},
		{"0a 1b", nil, "' ' is not a hex digit"},
		{"0011223344556677889900", nil, "is 11 bytes: want 1 to 10 bytes"},
	} {
		got, err := ParseServerID(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseServerID(%q) = %x, %v; want an error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("ParseServerID(%q) = %x, %v; want %x", tc.in, got, err, tc.want)
		}
	}
}

func FuzzShardOf(f *testing.F) {
	f.Add(uint8(0), []byte{0xe9, 5, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Add(uint8(2), []byte{0x0b, 0x0a, 0x1b, 7, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Add(uint8(10), []byte{})
	f.Add(uint8(255), bytes.Repeat([]byte{0xff}, 40))
	f.Fuzz(func(t *testing.T, serverIDLen uint8, cid []byte) {
		sid := bytes.Repeat([]byte{0x42}, int(serverIDLen)%(MaxServerIDLen+1))
		format, err := NewCIDFormat(sid)
		if err != nil {
			t.Fatal(err)
		}
		shard, ok := ShardOf(format, cid)
		gen, genOK := GenerationOf(format, cid)
		if ok != genOK {
			t.Fatalf("ShardOf(%x) ok = %v, GenerationOf ok = %v", cid, ok, genOK)
		}
		if ok {
			if len(cid) < format.Len() || int(cid[0]&0x1f) != format.Len()-1 || shard >= MaxShards || gen > 1 ||
				byte(gen)<<7|shard != cid[format.ShardOffset()] {
				t.Fatalf("ShardOf(%x) = %d, GenerationOf = %d for a format of length %d", cid, shard, gen, format.Len())
			}
			// An ID in this format reads back as issued by that
			// generation's shard.
			id := generate(t, NewGenCIDGenerator(format, gen, int(shard)))
			if s, _ := ShardOf(format, id); s != shard {
				t.Fatalf("regenerated %x: shard %d, want %d", id, s, shard)
			}
			if g, _ := GenerationOf(format, id); g != gen {
				t.Fatalf("regenerated %x: generation %d, want %d", id, g, gen)
			}
		}
		n := 1 + int(serverIDLen)%8
		if s, ok := ShardFor(format, cid, n); ok && (s < 0 || s >= n) {
			t.Fatalf("ShardFor out of range: %d", s)
		}
		// The steering rule, for every current generation and set of
		// serving generations: a socket of a set someone reads.
		for current := Generation(0); current <= 1; current++ {
			for mask := 0; mask < 4; mask++ {
				serving := [2]bool{mask&1 != 0, mask&2 != 0}
				serving[current] = true
				for _, p := range [][]byte{append([]byte{0x40}, cid...), append([]byte{0xc0, 0, 0, 0, 1}, cid...)} {
					g, s, kind := steerModel(format, n, current, serving, p)
					if !serving[g] || s >= n || (s < 0) != (kind == steerHashed) {
						t.Fatalf("steer(%x) with current %d, serving %v: generation %d shard %d (%v)", p, current, serving, g, s, kind)
					}
				}
			}
		}
	})
}
