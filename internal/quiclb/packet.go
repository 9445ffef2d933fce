package quiclb

// PacketGeneration returns the generation of the process that owns the
// connection a datagram (UDP payload) p belongs to, by the rule of the
// steering program (generationProgram, docs/quic.md "Steering"): a
// short-header packet carries one of our connection IDs, whose shard byte
// names its generation; a long-header packet is ours only when its DCID
// has the length and the first octet of format f. ok is false for
// anything else: a client's first Initial or 0-RTT packet (a DCID of its
// own choosing), or a datagram too short to tell. Those belong to the
// current generation. Only the first packet of a coalesced datagram is
// read, as the program does.
func PacketGeneration(f CIDFormat, p []byte) (gen Generation, ok bool) {
	off := f.ShardOffset()
	if len(p) < 1 {
		return 0, false
	}
	if p[0]&0x80 == 0 { // short header: DCID from byte 1
		if len(p) < 2+off {
			return 0, false
		}
		return Generation(p[1+off] >> 7), true
	}
	// Long header: version (4 bytes), DCID length at byte 5, DCID at 6.
	if len(p) < 7+off || int(p[5]) != f.Len() || p[6] != f.firstOctet() {
		return 0, false
	}
	return Generation(p[6+off] >> 7), true
}
