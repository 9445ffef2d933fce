package quiclb

import (
	"fmt"

	"github.com/cilium/ebpf/asm"
)

// udpHeaderLen is where the QUIC packet starts in the reuseport context's
// data, which begins at the UDP header.
const udpHeaderLen = 8

// hashOffset is the offset of the kernel's 4-tuple hash in the program's
// context (struct sk_reuseport_md: data, data_end, len, eth_protocol,
// ip_protocol, bind_inany, hash).
const hashOffset = 32

// Keys of the steering state map (pc_state, an array of u32).
const (
	// stateCurrent holds the current generation: the socket set new
	// connections go to.
	stateCurrent = 0
	// stateServing + g holds the process ID of the process serving
	// generation g, or 0 when no process reads that set.
	stateServing = 1
	// stateLayout holds the connection ID layout the program was built
	// for (see layout.word), so that a process that opens the maps from
	// handed-over descriptors can check its own format against it.
	stateLayout  = 3
	stateEntries = 4
)

// Counter map keys past the 2*N per-socket counts. Each counts packets of
// one kind of decision; they are also in the per-socket counts.
const (
	// countNew: not one of our connection IDs (a client's first
	// Initial or 0-RTT), steered to the current generation.
	countNew = iota
	// countOrphaned: one of our IDs, of a generation no process serves,
	// steered to the current generation.
	countOrphaned
	// countHashed: too short to read the shard byte, steered to the
	// current generation by the kernel's 4-tuple hash.
	countHashed
	countExtra
)

// layout is what the generational program needs of a connection ID
// format: its length, its first octet and its shard byte's offset.
type layout struct {
	first  uint8
	off    int
	cidLen int
	shards int
}

func newLayout(f CIDFormat, shards int) layout {
	return layout{first: f.firstOctet(), off: f.ShardOffset(), cidLen: f.Len(), shards: shards}
}

// word packs the layout for the state map.
func (l layout) word() uint32 {
	return uint32(l.first) | uint32(l.off)<<8 | uint32(l.cidLen)<<16 | uint32(l.shards)<<24
}

func layoutOf(w uint32) layout {
	return layout{first: uint8(w), off: int(w >> 8 & 0xff), cidLen: int(w >> 16 & 0xff), shards: int(w >> 24)}
}

func (l layout) String() string {
	return fmt.Sprintf("%d shards, %d-byte connection IDs starting with %#02x, shard byte at offset %d", l.shards, l.cidLen, l.first, l.off)
}

// loadByte returns the instructions that read the packet byte at offset
// (from the UDP header) into dst, or go to fail when the packet is
// shorter. Bytes are read with bpf_skb_load_bytes rather than through
// data/data_end: a datagram that arrived in pieces (GRO, or GSO over
// loopback) has little or nothing of its payload in the linear part that
// direct access sees, and a bounds check failing there would steer the
// packet by the hash instead of by its connection ID. Clobbers R0 to R5;
// R6 must hold the context.
func loadByte(dst asm.Register, offset int32, fail string) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, offset),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 1),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, fail),
		asm.LoadMem(dst, asm.RFP, -8, asm.Byte),
	}
}

// labeled gives the first of insns the symbol name.
func labeled(name string, insns asm.Instructions) asm.Instructions {
	insns[0] = insns[0].WithSymbol(name)
	return insns
}

// increment returns the instructions that add one to the u64 at the key
// stored on the stack at keyOff in the counter map. Clobbers R0 to R5.
func increment(countFD int, keyOff int16, skip string) asm.Instructions {
	return asm.Instructions{
		asm.LoadMapPtr(asm.R1, countFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(keyOff)),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, skip),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
	}
}

// countKind adds one to the counter at 2*N + kind. Clobbers R0 to R5.
func countKind(countFD, shards, kind int, skip string) asm.Instructions {
	return append(asm.Instructions{
		asm.StoreImm(asm.RFP, -12, int64(2*shards+kind), asm.Word),
	}, increment(countFD, -12, skip)...)
}

// generationProgram is the steering program of LoadSteeringFor. Its maps:
// sockets (2*N sockets: generation g's shard s at g*N + s), state (see
// stateCurrent) and counts (see countNew).
//
// Registers: R6 the context, R7 the byte read last, R8 the generation,
// R9 the shard. The stack: -8 the byte read, -4 the map key, -12 the key
// of a kind counter.
//
//	gen := state[current]
//	if the packet is too short for any byte below: goto hashed
//	if short header:                        // 1-RTT: always one of ours
//		b := DCID[off]; goto ours
//	if DCID length != len(our IDs):         // a client's own DCID
//		goto new
//	if DCID[0] != our first octet:          // config rotation and length bits
//		goto new
//	b := DCID[off]
//	ours:
//		shard := (b & 0x7f) % N
//		if state[serving + b>>7] != 0: gen = b >> 7
//		else: count orphaned                 // nobody reads that set
//		goto select
//	new:
//		if DCID length <= off: goto hashed
//		shard := (DCID[off] & 0x7f) % N; count new; goto select
//	hashed:
//		shard := ctx.hash % N; count hashed
//	select:
//		counts[gen*N + shard]++
//		bpf_sk_select_reuseport(sockets[gen*N + shard])
//		return SK_PASS
//
// Every decision names a socket of a set some process reads: the current
// generation's, or that of a generation marked serving. The program never
// leaves the choice to the kernel, whose hash would pick among all 2*N
// sockets, the spare set included; only if bpf_sk_select_reuseport fails
// (a socket missing from the map, which the sockets' owners prevent) does
// SK_PASS without a selection fall back to it.
func generationProgram(socketsFD, stateFD, countFD int, l layout) asm.Instructions {
	n := int32(l.shards)
	off := int32(l.off)
	short := int32(udpHeaderLen + 1) // DCID in a short header
	long := int32(udpHeaderLen + 6)  // DCID in a long header
	var p asm.Instructions
	add := func(insns ...asm.Instruction) { p = append(p, insns...) }
	addAll := func(insns asm.Instructions) { p = append(p, insns...) }

	// gen := state[current] & 1
	add(
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Imm(asm.R8, 0),
		asm.StoreImm(asm.RFP, -4, stateCurrent, asm.Word),
		asm.LoadMapPtr(asm.R1, stateFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "first"),
		asm.LoadMem(asm.R8, asm.R0, 0, asm.Word),
		asm.And.Imm(asm.R8, 1),
	)
	addAll(labeled("first", loadByte(asm.R7, udpHeaderLen, "hashed")))
	add(asm.JSet.Imm(asm.R7, 0x80, "long"))
	// Short header.
	addAll(loadByte(asm.R7, short+off, "hashed"))
	add(asm.Ja.Label("ours"))
	// Long header: ours only with our length and our first octet.
	addAll(labeled("long", loadByte(asm.R7, udpHeaderLen+5, "hashed")))
	add(asm.JNE.Imm(asm.R7, int32(l.cidLen), "new"))
	addAll(loadByte(asm.R7, long, "hashed"))
	add(asm.JNE.Imm(asm.R7, int32(l.first), "new_byte")) // DCID long enough
	addAll(loadByte(asm.R7, long+off, "hashed"))
	// One of ours: its generation's set if a process serves it.
	add(
		asm.Mov.Reg(asm.R9, asm.R7).WithSymbol("ours"),
		asm.And.Imm(asm.R9, 0x7f),
		asm.Mod.Imm(asm.R9, n),
		asm.RSh.Imm(asm.R7, 7),
		asm.Mov.Reg(asm.R1, asm.R7),
		asm.Add.Imm(asm.R1, stateServing),
		asm.StoreMem(asm.RFP, -4, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, stateFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "orphaned"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
		asm.JEq.Imm(asm.R1, 0, "orphaned"),
		asm.Mov.Reg(asm.R8, asm.R7),
		asm.Ja.Label("select"),
	)
	addAll(labeled("orphaned", countKind(countFD, l.shards, countOrphaned, "orphaned_done")))
	add(asm.Ja.Label("select").WithSymbol("orphaned_done"))
	// Not ours: a new connection, for the current generation. R7 holds
	// the DCID's length.
	add(asm.JLE.Imm(asm.R7, off, "hashed").WithSymbol("new"))
	addAll(labeled("new_byte", loadByte(asm.R7, long+off, "hashed")))
	add(
		asm.Mov.Reg(asm.R9, asm.R7),
		asm.And.Imm(asm.R9, 0x7f),
		asm.Mod.Imm(asm.R9, n),
	)
	addAll(countKind(countFD, l.shards, countNew, "new_done"))
	add(asm.Ja.Label("select").WithSymbol("new_done"))
	// Too short: the current generation, by the kernel's hash.
	add(
		asm.LoadMem(asm.R9, asm.R6, hashOffset, asm.Word).WithSymbol("hashed"),
		asm.Mod.Imm(asm.R9, n),
	)
	addAll(countKind(countFD, l.shards, countHashed, "select"))
	// Select socket gen*N + shard.
	add(
		asm.Mul.Imm(asm.R8, n).WithSymbol("select"),
		asm.Add.Reg(asm.R8, asm.R9),
		asm.StoreMem(asm.RFP, -4, asm.R8, asm.Word),
	)
	addAll(increment(countFD, -4, "steer"))
	add(
		asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("steer"),
		asm.LoadMapPtr(asm.R2, socketsFD),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -4),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnSkSelectReuseport.Call(),
		asm.Mov.Imm(asm.R0, 1), // SK_PASS: selected, or (select failed) the kernel's hash
		asm.Return(),
	)
	return p
}

// program is the steering program of LoadSteering: one set of shards
// sockets, no generations. Registers: R6 the context, R7 the shard byte,
// then the shard. Packets too short to hold the shard byte are left to
// the kernel's 4-tuple hash (SK_PASS without a selection), which with one
// set picks a socket of the process too.
func program(mapFD, countFD, shards, off int) asm.Instructions {
	short := int32(udpHeaderLen + 1 + off) // DCID byte in a short header
	long := int32(udpHeaderLen + 6 + off)  // DCID byte in a long header
	var insns asm.Instructions
	insns = append(insns, asm.Mov.Reg(asm.R6, asm.R1))
	insns = append(insns, loadByte(asm.R7, udpHeaderLen, "pass")...) // first byte
	insns = append(insns, asm.JSet.Imm(asm.R7, 0x80, "long"))
	insns = append(insns, loadByte(asm.R7, short, "pass")...)
	insns = append(insns, asm.Ja.Label("select"))
	insns = append(insns, labeled("long", loadByte(asm.R7, udpHeaderLen+5, "pass"))...)
	insns = append(insns, asm.JLE.Imm(asm.R7, int32(off), "pass"))
	insns = append(insns, loadByte(asm.R7, long, "pass")...)
	insns = append(insns,
		asm.And.Imm(asm.R7, 0x7f).WithSymbol("select"), // the shard index (ShardFor)
		asm.Mod.Imm(asm.R7, int32(shards)),
		asm.StoreMem(asm.RFP, -4, asm.R7, asm.Word),
	)
	insns = append(insns, increment(countFD, -4, "steer")...)
	insns = append(insns,
		asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("steer"),
		asm.LoadMapPtr(asm.R2, mapFD),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -4),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnSkSelectReuseport.Call(),

		asm.Mov.Imm(asm.R0, 1).WithSymbol("pass"), // SK_PASS: selected, or the kernel's hash
		asm.Return(),
	)
	return insns
}
