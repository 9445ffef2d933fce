package quic

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
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
	shards  int
}

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
	sockets, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "pc_shards",
		Type:       ebpf.ReusePortSockArray,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: uint32(shards),
	})
	if err != nil {
		return nil, fmt.Errorf("create the reuseport socket map: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "pc_steer",
		Type:         ebpf.SkReuseport,
		AttachType:   ebpf.AttachSkReuseportSelect,
		License:      "Apache-2.0",
		Instructions: program(sockets.FD(), shards, shardOffset),
	})
	if err != nil {
		sockets.Close()
		return nil, fmt.Errorf("load the reuseport program: %w", err)
	}
	return &Steering{prog: prog, sockets: sockets, shards: shards}, nil
}

// program is the steering program. Registers: R6 the context, R2/R3 the
// packet's data and end, R7 the shard byte.
func program(mapFD, shards, off int) asm.Instructions {
	short := int32(udpHeaderLen + 1 + off) // DCID byte in a short header
	long := int32(udpHeaderLen + 6 + off)  // DCID byte in a long header
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R1, 0, asm.DWord), // sk_reuseport_md.data
		asm.LoadMem(asm.R3, asm.R1, 8, asm.DWord), // sk_reuseport_md.data_end
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, short+1),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, udpHeaderLen, asm.Byte), // first byte
		asm.JSet.Imm(asm.R5, 0x80, "long"),
		asm.LoadMem(asm.R7, asm.R2, int16(short), asm.Byte),
		asm.Ja.Label("select"),

		asm.Mov.Reg(asm.R4, asm.R2).WithSymbol("long"),
		asm.Add.Imm(asm.R4, long+1),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
		asm.LoadMem(asm.R5, asm.R2, udpHeaderLen+5, asm.Byte), // DCID length
		asm.JLE.Imm(asm.R5, int32(off), "pass"),
		asm.LoadMem(asm.R7, asm.R2, int16(long), asm.Byte),

		asm.Mod.Imm(asm.R7, int32(shards)).WithSymbol("select"),
		asm.StoreMem(asm.RFP, -4, asm.R7, asm.Word),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, mapFD),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -4),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnSkSelectReuseport.Call(),

		asm.Mov.Imm(asm.R0, 1).WithSymbol("pass"), // SK_PASS: selected, or the kernel's hash
		asm.Return(),
	}
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

// Close releases this process's handles. An attached program stays in the
// kernel with its sockets.
func (s *Steering) Close() error {
	return errors.Join(s.prog.Close(), s.sockets.Close())
}
