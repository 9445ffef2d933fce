package quic

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Steering is a loaded reuseport program that sends each QUIC packet to
// the socket of the shard that owns its connection, and the socket array it
// chooses from. It is loaded and attached while the process is still
// privileged (CAP_BPF or CAP_SYS_ADMIN); once attached, the kernel keeps it
// for as long as the sockets live, whatever the process's privileges.
//
// The program reads the Destination Connection ID of the packet (it starts
// at byte 1 of a short-header packet, and at byte 6 of a long-header packet,
// after its length byte), takes the byte at the shard offset and selects
// socket byte % N. Packets too short to hold that byte, and long-header
// packets whose DCID is shorter, fall back to the kernel's 4-tuple hash.
// A client's first Initial carries a DCID of its own choosing: the program
// steers it by that byte like any other, which is as good as a hash and
// keeps every Initial of the connection on one shard.
type Steering struct {
	prog    *ebpf.Program
	sockets *ebpf.Map
	// Counters counts the packets steered to each shard; it outlives Close.
	Counters *Counters
	shards   int
}

// Counters is the steering program's per-shard packet counts. Reading it
// needs no privilege, so it works after the drop through the handed-over
// file descriptor.
type Counters struct {
	m *ebpf.Map
}

// OpenCounters takes the counter map at fd (handed over by the process
// that loaded the program).
func OpenCounters(fd int) (*Counters, error) {
	m, err := ebpf.NewMapFromFD(fd)
	if err != nil {
		return nil, fmt.Errorf("steering counters (fd %d): %w", fd, err)
	}
	return &Counters{m: m}, nil
}

// FD is the map's file descriptor, to hand over.
func (c *Counters) FD() int { return c.m.FD() }

// Read returns the packets steered to each of n shards so far.
func (c *Counters) Read(n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		c.m.Lookup(uint32(i), &out[i])
	}
	return out
}

// Close releases the map.
func (c *Counters) Close() error { return c.m.Close() }

// udpHeaderLen is where the QUIC packet starts in the reuseport context's
// data, which begins at the UDP header.
const udpHeaderLen = 8

// LoadSteering loads the program for shards sockets whose connection IDs
// hold the shard byte at shardOffset. It fails without CAP_BPF or
// CAP_SYS_ADMIN, or on a kernel without reuseport programs.
func LoadSteering(shards, shardOffset int) (*Steering, error) {
	if shards < 1 || shards > 255 {
		return nil, fmt.Errorf("steering: %d shards: want 1 to 255", shards)
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones
	// ignore it and this does nothing.
	rlimit.RemoveMemlock()
	sockets, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "pc_shards",
		Type:       ebpf.ReusePortSockArray,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: uint32(shards),
	})
	if errors.Is(err, unix.EPERM) {
		return nil, fmt.Errorf("the process has neither CAP_BPF nor CAP_SYS_ADMIN: %w", unix.EPERM)
	}
	if err != nil {
		return nil, fmt.Errorf("create the reuseport socket map: %w", err)
	}
	counters, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "pc_counts",
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: uint32(shards),
	})
	if err != nil {
		sockets.Close()
		return nil, fmt.Errorf("create the steering counter map: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "pc_steer",
		Type:         ebpf.SkReuseport,
		AttachType:   ebpf.AttachSkReuseportSelect,
		License:      "Apache-2.0",
		Instructions: program(sockets.FD(), counters.FD(), shards, shardOffset),
	})
	if err != nil {
		sockets.Close()
		counters.Close()
		return nil, fmt.Errorf("load the reuseport program: %w", err)
	}
	return &Steering{prog: prog, sockets: sockets, Counters: &Counters{m: counters}, shards: shards}, nil
}

// program is the steering program. Registers: R6 the context, R7 the
// shard byte, then the shard. Bytes are read with bpf_skb_load_bytes rather
// than through data/data_end: a datagram that arrived in pieces (GRO, or
// GSO over loopback) has little or nothing of its payload in the linear
// part that direct access sees, and a bounds check failing there would
// hand the packet to the kernel's hash, that is to a random shard.
func program(mapFD, countFD, shards, off int) asm.Instructions {
	short := int32(udpHeaderLen + 1 + off) // DCID byte in a short header
	long := int32(udpHeaderLen + 6 + off)  // DCID byte in a long header
	// load reads the byte at offset into dst, or goes to pass.
	load := func(dst asm.Register, offset int32) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Mov.Imm(asm.R2, offset),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, -8),
			asm.Mov.Imm(asm.R4, 1),
			asm.FnSkbLoadBytes.Call(),
			asm.JNE.Imm(asm.R0, 0, "pass"),
			asm.LoadMem(dst, asm.RFP, -8, asm.Byte),
		}
	}
	var insns asm.Instructions
	insns = append(insns, asm.Mov.Reg(asm.R6, asm.R1))
	insns = append(insns, load(asm.R7, udpHeaderLen)...) // first byte
	insns = append(insns, asm.JSet.Imm(asm.R7, 0x80, "long"))
	insns = append(insns, load(asm.R7, short)...)
	insns = append(insns, asm.Ja.Label("select"))
	dcidLen := load(asm.R7, udpHeaderLen+5)
	dcidLen[0] = dcidLen[0].WithSymbol("long")
	insns = append(insns, dcidLen...)
	insns = append(insns, asm.JLE.Imm(asm.R7, int32(off), "pass"))
	insns = append(insns, load(asm.R7, long)...)
	insns = append(insns,
		asm.Mod.Imm(asm.R7, int32(shards)).WithSymbol("select"),
		asm.StoreMem(asm.RFP, -4, asm.R7, asm.Word),
		// counts[shard]++
		asm.LoadMapPtr(asm.R1, countFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "steer"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
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

// Attach puts the sockets (shard i at index i, all bound with SO_REUSEPORT
// to one address) into the map and attaches the program to their group.
func (s *Steering) Attach(fds []int) error {
	if len(fds) != s.shards {
		return fmt.Errorf("steering: %d sockets for %d shards", len(fds), s.shards)
	}
	for i, fd := range fds {
		if err := s.sockets.Update(uint32(i), uint64(fd), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("steering: add shard %d's socket to the map: %w", i, err)
		}
	}
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, s.prog.FD()); err != nil {
		return fmt.Errorf("steering: attach the program (SO_ATTACH_REUSEPORT_EBPF): %w", err)
	}
	return nil
}

// Close releases this process's handles on the program and the socket
// map (not Counters). An attached program stays in the kernel with its
// sockets.
func (s *Steering) Close() error {
	return errors.Join(s.prog.Close(), s.sockets.Close())
}
