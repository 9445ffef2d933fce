package quiclb

import "testing"

func TestPacketGeneration(t *testing.T) {
	f, err := NewCIDFormat([]byte{0xab})
	if err != nil {
		t.Fatal(err)
	}
	ours := func(gen Generation) []byte {
		b := make([]byte, f.Len())
		NewGenCIDGenerator(f, gen, 3).(*cidGenerator).fill(b)
		return b
	}
	long := func(dcid []byte) []byte {
		p := append([]byte{0xc0, 0, 0, 0, 1, byte(len(dcid))}, dcid...)
		return append(p, make([]byte, 20)...)
	}
	clientDCID := make([]byte, f.Len()) // a client's own: first octet 0
	for _, tc := range []struct {
		name string
		p    []byte
		gen  Generation
		ok   bool
	}{
		{"short, generation 0", append([]byte{0x40}, ours(0)...), 0, true},
		{"short, generation 1", append([]byte{0x40}, ours(1)...), 1, true},
		{"short, too short", []byte{0x40, f.firstOctet()}, 0, false},
		{"long, our ID of generation 1", long(ours(1)), 1, true},
		{"long, our ID of generation 0", long(ours(0)), 0, true},
		{"long, a client's first DCID", long(clientDCID), 0, false},
		{"long, 8-byte DCID", long(make([]byte, 8)), 0, false},
		{"long, truncated", long(ours(1))[:8], 0, false},
		{"empty", nil, 0, false},
	} {
		gen, ok := PacketGeneration(f, tc.p)
		if gen != tc.gen || ok != tc.ok {
			t.Errorf("%s: PacketGeneration = %d, %v; want %d, %v", tc.name, gen, ok, tc.gen, tc.ok)
		}
	}
}

// fill writes a connection ID into b (f.Len() bytes).
func (g *cidGenerator) fill(b []byte) {
	id, _ := g.GenerateConnectionID()
	copy(b, id.Bytes())
}
