package quiclb

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Steering is a loaded reuseport program that sends each QUIC packet to
// the socket of the shard, and of the process generation, that owns its
// connection, with the maps it reads. It is loaded and attached while the
// process is still privileged (CAP_BPF or CAP_SYS_ADMIN); once attached,
// the kernel keeps it for as long as the sockets live, whatever the
// process's privileges. Its maps stay usable through their file
// descriptors without privilege (since Linux 5.19, also when
// kernel.unprivileged_bpf_disabled is set), and are handed off on a
// binary upgrade (FDs, OpenSteering).
//
// A Steering from LoadSteeringFor chooses among two sets of N sockets of
// one address, generation 0's and generation 1's: see generationProgram
// for the rule and docs/quic.md ("Binary upgrade: generations") for the
// design. One from LoadSteering chooses among N sockets and has no
// generations.
type Steering struct {
	prog    *ebpf.Program // nil when opened from handed-over descriptors
	sockets *ebpf.Map
	state   *ebpf.Map // nil: LoadSteering's single set
	// Counters counts the packets steered to each socket; it outlives
	// Close.
	Counters *Counters
	shards   int
	layout   layout
}

// SteeringFDs are the file descriptors of a Steering's maps, to hand off
// to the next process of a binary upgrade.
type SteeringFDs struct {
	// Sockets is the reuseport socket array (2*N sockets).
	Sockets int
	// State holds the current generation, the process serving each
	// generation and the connection ID layout.
	State int
	// Counters is the per-socket packet counts (see Counters).
	Counters int
}

// Counters is the steering program's packet counts. Reading it needs no
// privilege, so it works after the drop through the handed-over file
// descriptor.
//
// A LoadSteeringFor program counts per socket: entry g*N + s is the
// packets sent to generation g's shard s (ReadGeneration), then three
// counts of how some of them were steered (ReadKinds). LoadSteering's
// counts entry s for shard s (Read).
type Counters struct {
	m *ebpf.Map
}

// OpenCounters takes the counter map at fd (handed off by the process
// that loaded the program).
func OpenCounters(fd int) (*Counters, error) {
	m, err := ebpf.NewMapFromFD(fd)
	if err != nil {
		return nil, fmt.Errorf("steering counters (fd %d): %w", fd, err)
	}
	return &Counters{m: m}, nil
}

// FD is the map's file descriptor, to hand off.
func (c *Counters) FD() int { return c.m.FD() }

// Read returns the first n counts: the packets steered to each of n
// shards of a LoadSteering program, or to generation 0's shards of a
// LoadSteeringFor program.
func (c *Counters) Read(n int) []uint64 {
	return c.read(0, n)
}

// ReadGeneration returns the packets steered to each of the shards
// sockets of generation g's set, for a LoadSteeringFor program of shards
// shards.
func (c *Counters) ReadGeneration(g Generation, shards int) []uint64 {
	return c.read(int(g&1)*shards, shards)
}

func (c *Counters) read(first, n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		c.m.Lookup(uint32(first+i), &out[i])
	}
	return out
}

// SteeringKinds counts some of a LoadSteeringFor program's decisions.
// Every packet counted here is also counted for the socket it went to.
type SteeringKinds struct {
	// New is the packets whose Destination Connection ID is not one of
	// ours (a client's first Initial and 0-RTT packets): steered to the
	// current generation, by the DCID's shard byte.
	New uint64
	// Orphaned is the packets whose connection ID names a generation no
	// process serves (a connection of a process that has exited, or a
	// client's own DCID that looks like one of ours): steered to the
	// current generation.
	Orphaned uint64
	// Hashed is the packets too short to hold the shard byte: steered to
	// the current generation by the kernel's 4-tuple hash.
	Hashed uint64
}

// ReadKinds returns the decision counts of a LoadSteeringFor program of
// shards shards.
func (c *Counters) ReadKinds(shards int) SteeringKinds {
	k := c.read(2*shards, countExtra)
	return SteeringKinds{New: k[countNew], Orphaned: k[countOrphaned], Hashed: k[countHashed]}
}

// Close releases the map.
func (c *Counters) Close() error { return c.m.Close() }

// newMap creates one of the program's maps; a missing privilege says so.
func newMap(spec *ebpf.MapSpec, what string) (*ebpf.Map, error) {
	m, err := ebpf.NewMap(spec)
	if errors.Is(err, unix.EPERM) {
		return nil, fmt.Errorf("the process has neither CAP_BPF nor CAP_SYS_ADMIN: %w", unix.EPERM)
	}
	if err != nil {
		return nil, fmt.Errorf("create the %s: %w", what, err)
	}
	return m, nil
}

func checkShards(shards int) error {
	if shards < 1 || shards > MaxShards {
		return fmt.Errorf("steering: %d shards: want 1 to %d (the shard byte holds the index in 7 bits)", shards, MaxShards)
	}
	return nil
}

// LoadSteeringFor loads the generational steering program for a bind of
// shards sockets per generation whose connection IDs are in format f. Its
// socket map has 2*shards entries: generation 0's shards, then generation
// 1's (Attach). The current generation starts at 0, and no generation is
// marked serving. It fails without CAP_BPF or CAP_SYS_ADMIN, or on a
// kernel without reuseport programs.
func LoadSteeringFor(f CIDFormat, shards int) (_ *Steering, err error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	if err := checkShards(shards); err != nil {
		return nil, err
	}
	l := newLayout(f, shards)
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones
	// ignore it and this does nothing.
	rlimit.RemoveMemlock()
	s := &Steering{shards: shards, layout: l}
	defer func() {
		if err != nil {
			s.Close()
			if s.Counters != nil {
				s.Counters.Close()
			}
		}
	}()
	s.sockets, err = newMap(&ebpf.MapSpec{
		Name: "pc_sockets", Type: ebpf.ReusePortSockArray,
		KeySize: 4, ValueSize: 8, MaxEntries: uint32(2 * shards),
	}, "reuseport socket map")
	if err != nil {
		return nil, err
	}
	s.state, err = newMap(&ebpf.MapSpec{
		Name: "pc_state", Type: ebpf.Array,
		KeySize: 4, ValueSize: 4, MaxEntries: stateEntries,
	}, "steering state map")
	if err != nil {
		return nil, err
	}
	if err := s.state.Update(uint32(stateLayout), l.word(), ebpf.UpdateAny); err != nil {
		return nil, fmt.Errorf("steering: write the layout: %w", err)
	}
	counters, err := newMap(&ebpf.MapSpec{
		Name: "pc_counts", Type: ebpf.Array,
		KeySize: 4, ValueSize: 8, MaxEntries: uint32(2*shards + countExtra),
	}, "steering counter map")
	if err != nil {
		return nil, err
	}
	s.Counters = &Counters{m: counters}
	s.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "pc_steer_gen",
		Type:         ebpf.SkReuseport,
		AttachType:   ebpf.AttachSkReuseportSelect,
		License:      "Apache-2.0",
		Instructions: generationProgram(s.sockets.FD(), s.state.FD(), counters.FD(), l),
	})
	if err != nil {
		return nil, fmt.Errorf("load the reuseport program: %w", err)
	}
	return s, nil
}

// LoadSteering loads the program for one set of shards sockets whose
// connection IDs hold the shard byte at shardOffset, without generations:
// it cannot keep QUIC connections across a binary upgrade. Use
// LoadSteeringFor. It fails without CAP_BPF or CAP_SYS_ADMIN, or on a
// kernel without reuseport programs.
func LoadSteering(shards, shardOffset int) (*Steering, error) {
	if err := checkShards(shards); err != nil {
		return nil, err
	}
	rlimit.RemoveMemlock()
	sockets, err := newMap(&ebpf.MapSpec{
		Name: "pc_shards", Type: ebpf.ReusePortSockArray,
		KeySize: 4, ValueSize: 8, MaxEntries: uint32(shards),
	}, "reuseport socket map")
	if err != nil {
		return nil, err
	}
	counters, err := newMap(&ebpf.MapSpec{
		Name: "pc_counts", Type: ebpf.Array,
		KeySize: 4, ValueSize: 8, MaxEntries: uint32(shards),
	}, "steering counter map")
	if err != nil {
		sockets.Close()
		return nil, err
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

// OpenSteering takes the maps of a LoadSteeringFor program from file
// descriptors handed off by the process that loaded it (or by the one
// before): the new process of a binary upgrade uses it to mark its
// generation serving and to make it current. It takes the descriptors
// over, also on error. The program itself needs no descriptor: the kernel
// keeps it attached to the sockets. Check the process's connection ID
// format against the program's with CheckFormat.
func OpenSteering(fds SteeringFDs) (*Steering, error) {
	open := func(fd int, what string) (*ebpf.Map, error) {
		m, err := ebpf.NewMapFromFD(fd)
		if err != nil {
			return nil, fmt.Errorf("steering %s map (fd %d): %w", what, fd, err)
		}
		return m, nil
	}
	sockets, err1 := open(fds.Sockets, "socket")
	state, err2 := open(fds.State, "state")
	counters, err3 := open(fds.Counters, "counter")
	s := &Steering{sockets: sockets, state: state}
	if counters != nil {
		s.Counters = &Counters{m: counters}
	}
	fail := func(err error) (*Steering, error) {
		s.Close()
		if counters != nil {
			counters.Close()
		}
		return nil, err
	}
	if err := errors.Join(err1, err2, err3); err != nil {
		return fail(err)
	}
	var w uint32
	if err := state.Lookup(uint32(stateLayout), &w); err != nil {
		return fail(fmt.Errorf("steering: read the layout: %w", err))
	}
	s.layout = layoutOf(w)
	s.shards = s.layout.shards
	switch n := 2 * s.shards; {
	case sockets.Type() != ebpf.ReusePortSockArray || int(sockets.MaxEntries()) != n:
		return fail(fmt.Errorf("steering: fd %d is not a socket map of %d entries (%s of %d)", fds.Sockets, n, sockets.Type(), sockets.MaxEntries()))
	case state.Type() != ebpf.Array || state.ValueSize() != 4 || state.MaxEntries() != stateEntries:
		return fail(fmt.Errorf("steering: fd %d is not a steering state map", fds.State))
	case counters.Type() != ebpf.Array || counters.ValueSize() != 8 || int(counters.MaxEntries()) != n+countExtra:
		return fail(fmt.Errorf("steering: fd %d is not a counter map of %d entries", fds.Counters, n+countExtra))
	}
	return s, nil
}

// FDs returns the descriptors of the maps, to hand off on a binary
// upgrade. They are close-on-exec: clear that flag on the ones passed
// across exec. They stay owned by s.
func (s *Steering) FDs() SteeringFDs {
	fds := SteeringFDs{Sockets: s.sockets.FD(), State: -1, Counters: s.Counters.FD()}
	if s.state != nil {
		fds.State = s.state.FD()
	}
	return fds
}

// Shards returns the number of shards per generation.
func (s *Steering) Shards() int { return s.shards }

// Attach puts the sockets into the map and attaches the program to their
// group. All are bound with SO_REUSEPORT to one address. For
// LoadSteeringFor, fds holds 2*N sockets: generation 0's shards 0 to N-1,
// then generation 1's; for LoadSteering, N.
func (s *Steering) Attach(fds []int) error {
	want := s.shards
	if s.state != nil {
		want = 2 * s.shards
	}
	if len(fds) != want {
		return fmt.Errorf("steering: %d sockets for %d shards: want %d", len(fds), s.shards, want)
	}
	if s.prog == nil {
		return errors.New("steering: opened from handed-over descriptors: the program is attached already")
	}
	for i, fd := range fds {
		if err := s.sockets.Update(uint32(i), uint64(fd), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("steering: add socket %d (generation %d, shard %d) to the map: %w", i, i/s.shards, i%s.shards, err)
		}
	}
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, s.prog.FD()); err != nil {
		return fmt.Errorf("steering: attach the program (SO_ATTACH_REUSEPORT_EBPF): %w", err)
	}
	return nil
}

// CheckFormat reports whether connection IDs in format f, for shards
// shards, are the ones the program was built for. A process that opens
// handed-over maps must issue IDs of the same length, first octet and
// shard offset, for as many shards: the program that reads them is
// inherited, not rebuilt.
func (s *Steering) CheckFormat(f CIDFormat, shards int) error {
	if err := s.generational(); err != nil {
		return err
	}
	if want := newLayout(f, shards); want != s.layout {
		return fmt.Errorf("quic: the steering program inherited from the previous process expects %s; this configuration has %s: "+
			"the number of shards, the server_id's length and the connection ID format cannot change in a binary upgrade; restart portcullis to change them", s.layout, want)
	}
	return nil
}

func (s *Steering) generational() error {
	if s.state == nil {
		return errors.New("steering: loaded by LoadSteering, which has one socket set and no generations")
	}
	return nil
}

// SetGeneration makes g the current generation: from now on, packets of
// new connections go to g's sockets. Packets of connections of the other
// generation keep going to its sockets while a process serves it (see
// MarkServing).
func (s *Steering) SetGeneration(g Generation) error {
	if err := errors.Join(s.generational(), g.valid()); err != nil {
		return err
	}
	if err := s.state.Update(uint32(stateCurrent), uint32(g), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("steering: set the current generation to %d: %w", g, err)
	}
	return nil
}

// Generation returns the current generation.
func (s *Steering) Generation() (Generation, error) {
	v, err := s.lookup(stateCurrent)
	return Generation(v & 1), err
}

func (s *Steering) lookup(key uint32) (uint32, error) {
	if err := s.generational(); err != nil {
		return 0, err
	}
	var v uint32
	if err := s.state.Lookup(key, &v); err != nil {
		return 0, fmt.Errorf("steering: read the state map: %w", err)
	}
	return v, nil
}

// ServingPID returns the process ID recorded as serving generation g, 0 if
// none. The process may have exited without saying so.
func (s *Steering) ServingPID(g Generation) (int, error) {
	if err := g.valid(); err != nil {
		return 0, err
	}
	v, err := s.lookup(stateServing + uint32(g))
	return int(v), err
}

// MarkServing records this process as the one serving generation g:
// packets of g's connections go to g's sockets from now on. Mark a
// generation serving before making it current, and only once its sockets
// are being read. It fails when another process that is still running is
// recorded for g: two processes must never read one set.
func (s *Steering) MarkServing(g Generation) error {
	if err := s.free(g); err != nil {
		return err
	}
	return s.setServing(g, os.Getpid())
}

// MarkDone says that this process no longer serves generation g: packets
// of g's connections then go to the current generation, whose process
// does not know them and answers a short-header packet with a stateless
// reset. Call it when the process stops reading g's sockets, before it
// exits. It does nothing when another process is recorded for g.
func (s *Steering) MarkDone(g Generation) error {
	pid, err := s.ServingPID(g)
	if err != nil || pid != os.Getpid() {
		return err
	}
	return s.setServing(g, 0)
}

func (s *Steering) setServing(g Generation, pid int) error {
	if err := errors.Join(s.generational(), g.valid()); err != nil {
		return err
	}
	if err := s.state.Update(stateServing+uint32(g), uint32(pid), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("steering: record the process serving generation %d: %w", g, err)
	}
	return nil
}

// NextGeneration returns the generation the next process of a binary
// upgrade is to serve: the other one than the current. It fails while
// another running process is still recorded as serving that generation:
// the process that was replaced by the previous upgrade is still draining
// its connections, and an upgrade must wait until it exits.
func (s *Steering) NextGeneration() (Generation, error) {
	cur, err := s.Generation()
	if err != nil {
		return 0, err
	}
	next := cur.Other()
	return next, s.free(next)
}

// ForgetExited clears the record of generation g when the process it
// names has exited without MarkDone (it crashed, or was killed): until
// then the program keeps sending g's packets to g's sockets, which nobody
// reads, and the clients wait for their idle timeout instead of getting a
// stateless reset. The process of the other generation calls it when it
// learns that process is gone. forgot says whether a record was cleared.
func (s *Steering) ForgetExited(g Generation) (forgot bool, err error) {
	pid, err := s.ServingPID(g)
	if err != nil || pid == 0 || pid == os.Getpid() || processRuns(pid) {
		return false, err
	}
	return true, s.setServing(g, 0)
}

// processRuns reports whether process pid exists (zombies included).
func processRuns(pid int) bool {
	return !errors.Is(unix.Kill(pid, 0), unix.ESRCH)
}

// free checks that no other running process is recorded as serving g.
// A recorded process that has exited without saying so is forgotten.
func (s *Steering) free(g Generation) error {
	if _, err := s.ForgetExited(g); err != nil {
		return err
	}
	pid, err := s.ServingPID(g)
	if err != nil || pid == 0 || pid == os.Getpid() {
		return err
	}
	return fmt.Errorf("quic: process %d still serves generation %d (it is draining the connections of the process an earlier upgrade replaced): upgrade again once it has exited", pid, g)
}

// Close releases this process's handles on the program and the socket
// and state maps (not Counters). An attached program stays in the kernel
// with its sockets and maps.
func (s *Steering) Close() error {
	var errs []error
	if s.prog != nil {
		errs = append(errs, s.prog.Close())
	}
	if s.sockets != nil {
		errs = append(errs, s.sockets.Close())
	}
	if s.state != nil {
		errs = append(errs, s.state.Close())
	}
	return errors.Join(errs...)
}
