package quiclb

// steerKind is how the steering program chose a socket.
type steerKind int

const (
	steerOwned    steerKind = iota // one of our IDs, of a generation served
	steerNew                       // a client's own DCID: the current generation
	steerOrphaned                  // one of our IDs, of a generation nobody serves
	steerHashed                    // too short: the current generation, by the hash
)

func (k steerKind) String() string {
	return [...]string{"owned", "new", "orphaned", "hashed"}[k]
}

// steerModel is the rule of generationProgram, in Go, for a datagram p
// (the UDP payload): the generation and shard whose socket the program
// selects, shard -1 when the kernel's hash picks the shard in the current
// generation's set. The tests check the real program against it.
func steerModel(f CIDFormat, shards int, current Generation, serving [2]bool, p []byte) (Generation, int, steerKind) {
	off := f.ShardOffset()
	owned := func(b byte) (Generation, int, steerKind) {
		g, s := Generation(b>>7), int(b&0x7f)%shards
		if !serving[g] {
			return current, s, steerOrphaned
		}
		return g, s, steerOwned
	}
	hashed := func() (Generation, int, steerKind) { return current, -1, steerHashed }
	if len(p) < 1 {
		return hashed()
	}
	if p[0]&0x80 == 0 { // short header
		if len(p) < 2+off {
			return hashed()
		}
		return owned(p[1+off])
	}
	if len(p) < 6 {
		return hashed()
	}
	dcidLen := int(p[5])
	if dcidLen == f.Len() {
		if len(p) < 7 {
			return hashed()
		}
		if p[6] == f.firstOctet() {
			if len(p) < 7+off {
				return hashed()
			}
			return owned(p[6+off])
		}
	} else if dcidLen <= off {
		return hashed()
	}
	if len(p) < 7+off {
		return hashed()
	}
	return current, int(p[6+off]&0x7f) % shards, steerNew
}
