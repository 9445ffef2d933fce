package h3

import (
	"bytes"
	"context"
	"testing"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/quicvarint"

	"github.com/portcullis/portcullis/internal/quiclb"
)

// TestServerConnectionIDsOnTheWire runs a quic-go server with the generator
// behind a UDP relay and checks the connection IDs in real packets: the
// server's Source Connection ID in its long-header packets, and the
// Destination Connection ID of the client's short-header packets.
func TestServerConnectionIDsOnTheWire(t *testing.T) {
	const shard = 6
	f := mustFormat(t, []byte{0xc0, 0xde})
	srv := startServer(t, serverOptions{transport: &quic.Transport{ConnectionIDGenerator: quiclb.NewCIDGenerator(f, shard)}})
	r := newRelay(t, srv.addr)
	roundTrip(t, context.Background(), r.addr)

	var long, short int
	for _, d := range r.fromServer() {
		for _, p := range splitDatagram(t, d) {
			if p.long {
				if s, ok := quiclb.ShardOf(f, p.scid); !ok || s != shard || len(p.scid) != f.Len() || !bytes.Equal(p.scid[1:3], f.ServerID) {
					t.Fatalf("server's SCID %x: quiclb.ShardOf = %d, %v", p.scid, s, ok)
				}
				long++
			}
		}
	}
	for _, d := range r.toServer() {
		for _, p := range splitDatagram(t, d) {
			if !p.long {
				if s, ok := quiclb.ShardOf(f, p.data[1:]); !ok || s != shard {
					t.Fatalf("client's short header DCID %x: quiclb.ShardOf = %d, %v", p.data[1:min(len(p.data), 1+f.Len())], s, ok)
				}
				short++
			}
		}
	}
	if long == 0 || short == 0 {
		t.Fatalf("saw %d long-header packets from the server and %d short-header packets from the client", long, short)
	}
}

type packet struct {
	long bool
	scid []byte // long header only
	data []byte
}

// splitDatagram splits a datagram into its coalesced QUIC v1 packets
// (RFC 9000, section 12.2): long-header packets carry their length; a
// short-header packet takes the rest.
func splitDatagram(t *testing.T, d []byte) []packet {
	t.Helper()
	var out []packet
	for len(d) > 0 {
		if d[0]&0x80 == 0 {
			return append(out, packet{data: d})
		}
		b := d[5:]
		dcidLen := int(b[0])
		b = b[1+dcidLen:]
		scid := b[1 : 1+int(b[0])]
		b = b[1+len(scid):]
		if typ := d[0] >> 4 & 0b11; typ == 0 { // Initial: a token
			n, l, err := quicvarint.Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			b = b[l+int(n):]
		} else if typ == 3 { // Retry: the rest
			return append(out, packet{long: true, scid: scid, data: d})
		}
		n, l, err := quicvarint.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		end := len(d) - len(b) + l + int(n)
		out = append(out, packet{long: true, scid: scid, data: d[:end]})
		d = d[end:]
	}
	return out
}
