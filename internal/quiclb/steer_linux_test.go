package quiclb

import (
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portcullis/portcullis/internal/testutil"
)

// arrivals reports the shard of every datagram the sockets receive.
func arrivals(conns []*net.UDPConn) <-chan int {
	got := make(chan int, 64)
	for i, c := range conns {
		go func() {
			buf := make([]byte, 2048)
			for {
				if _, _, err := c.ReadFromUDP(buf); err != nil {
					return
				}
				got <- i
			}
		}()
	}
	return got
}

func next(got <-chan int) int {
	select {
	case i := <-got:
		return i
	case <-time.After(time.Second):
		return -1
	}
}

func TestSteeringByConnectionID(t *testing.T) {
	const shards, off = 4, 3 // first octet + a 2-byte server ID
	conns := testutil.ReusePortUDP(t, shards)
	st, err := LoadSteering(shards, off)
	if err != nil {
		testutil.SkipOrFail(t, "cannot load the reuseport program here (needs CAP_BPF or CAP_SYS_ADMIN): %v", err)
	}
	defer st.Close()
	if err := st.Attach(testutil.FDs(t, conns)); err != nil {
		t.Fatal(err)
	}
	got := arrivals(conns)
	// Send from many source ports, so that the kernel's hash alone would
	// spread each shard's packets over every socket.
	for src := 0; src < 8; src++ {
		client, err := net.DialUDP("udp", nil, conns[0].LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		for shard := 0; shard < shards; shard++ {
			dcid := []byte{0x0b, 0xaa, 0xbb, byte(shard + shards*src), 1, 2, 3, 4, 5, 6, 7, 8}
			short := append([]byte{0x40}, dcid...)
			short = append(short, make([]byte, 30)...)
			client.Write(short)
			if got := next(got); got != shard {
				t.Fatalf("short header for shard %d from source %d reached shard %d", shard, src, got)
			}
			long := append([]byte{0xc0, 0, 0, 0, 1, byte(len(dcid))}, dcid...)
			long = append(long, make([]byte, 30)...)
			client.Write(long)
			if got := next(got); got != shard {
				t.Fatalf("long header for shard %d from source %d reached shard %d", shard, src, got)
			}
		}
		client.Close()
	}
	for i, n := range st.Counters.Read(shards) {
		if n != 8*2 {
			t.Errorf("shard %d: the steering counter says %d packets, want 16", i, n)
		}
	}
}

// genBind is a bind of two sets of n shard sockets (generation 0's, then
// generation 1's) with the generational program attached, and a reader
// on every socket.
type genBind struct {
	f     CIDFormat
	n     int
	conns []*net.UDPConn
	st    *Steering
	got   <-chan int
}

func newGenBind(t *testing.T, f CIDFormat, n int) *genBind {
	t.Helper()
	conns := testutil.ReusePortUDP(t, 2*n)
	st, err := LoadSteeringFor(f, n)
	if err != nil {
		testutil.SkipOrFail(t, "cannot load the reuseport program here (needs CAP_BPF or CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() {
		st.Close()
		st.Counters.Close()
	})
	if err := st.Attach(testutil.FDs(t, conns)); err != nil {
		t.Fatal(err)
	}
	return &genBind{f: f, n: n, conns: conns, st: st, got: arrivals(conns)}
}

// client returns a socket sending to the bind, from a port of its own.
func (b *genBind) client(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, b.conns[0].LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// send sends p from c and returns the index (g*N + shard) of the socket
// that received it.
func (b *genBind) send(t *testing.T, c *net.UDPConn, p []byte) int {
	t.Helper()
	if _, err := c.Write(p); err != nil {
		t.Fatal(err)
	}
	i := next(b.got)
	if i < 0 {
		t.Fatalf("%x reached no socket", p)
	}
	return i
}

// expect sends p and checks that generation gen's shard received it.
func (b *genBind) expect(t *testing.T, c *net.UDPConn, p []byte, gen Generation, shard int, what string) {
	t.Helper()
	want := int(gen)*b.n + shard
	if got := b.send(t, c, p); got != want {
		t.Fatalf("%s (%x): reached generation %d shard %d, want generation %d shard %d", what, p[:min(len(p), 24)], got/b.n, got%b.n, gen, shard)
	}
}

func (b *genBind) must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (b *genBind) cid(t *testing.T, gen Generation, shard int) []byte {
	return generate(t, NewGenCIDGenerator(b.f, gen, shard))
}

// shortPacket is a 1-RTT packet to dcid.
func shortPacket(dcid []byte) []byte {
	p := append([]byte{0x40}, dcid...)
	return append(p, make([]byte, 30)...)
}

// Long header packet types (RFC 9000, section 17.2).
const (
	typeInitial   = 0
	typeZeroRTT   = 1
	typeHandshake = 2
)

// longPacket is a QUIC v1 long-header packet of type typ to dcid.
func longPacket(typ byte, dcid []byte) []byte {
	p := []byte{0xc0 | typ<<4, 0, 0, 0, 1, byte(len(dcid))}
	p = append(p, dcid...)
	p = append(p, 8, 1, 2, 3, 4, 5, 6, 7, 8) // the client's SCID
	return append(p, make([]byte, 30)...)
}

// TestSteeringGenerations: with both generations served, every packet of
// an ID of generation g reaches g's socket of the ID's shard, short and
// long header alike, from any source address.
func TestSteeringGenerations(t *testing.T) {
	const n = 3 // not a power of two: the modulo matters
	b := newGenBind(t, mustFormat(t, []byte{0x0a, 0x1b}), n)
	b.must(t, b.st.SetGeneration(0))
	b.must(t, b.st.MarkServing(0))
	b.must(t, b.st.MarkServing(1))
	for src := 0; src < 4; src++ {
		c := b.client(t)
		for gen := Generation(0); gen <= 1; gen++ {
			for shard := 0; shard < n; shard++ {
				id := b.cid(t, gen, shard)
				b.expect(t, c, shortPacket(id), gen, shard, "short header")
				b.expect(t, c, longPacket(typeHandshake, id), gen, shard, "Handshake")
				b.expect(t, c, longPacket(typeInitial, id), gen, shard, "Initial after the server's first answer")
			}
		}
	}
	for gen := Generation(0); gen <= 1; gen++ {
		for shard, got := range b.st.Counters.ReadGeneration(gen, n) {
			if got != 4*3 {
				t.Errorf("generation %d shard %d: the counter says %d packets, want 12", gen, shard, got)
			}
		}
	}
	if k := b.st.Counters.ReadKinds(n); k != (SteeringKinds{}) {
		t.Errorf("kinds %+v, want none", k)
	}
}

// TestSteeringNewConnections: packets whose DCID is not one of ours go to
// the current generation; flipping it moves them, and not the packets of
// existing connections.
func TestSteeringNewConnections(t *testing.T) {
	const n = 4
	f := mustFormat(t, []byte{0x0a, 0x1b}) // 12-byte IDs, first octet 0x0b, shard byte at 3
	b := newGenBind(t, f, n)
	b.must(t, b.st.MarkServing(0))
	b.must(t, b.st.MarkServing(1))
	c := b.client(t)
	old := b.cid(t, 0, 2)

	foreign := []struct {
		what string
		p    []byte
	}{
		{"Initial with an 8-byte DCID", longPacket(typeInitial, []byte{1, 2, 3, 0x85, 5, 6, 7, 8})},
		{"0-RTT with an 8-byte DCID", longPacket(typeZeroRTT, []byte{1, 2, 3, 0x85, 5, 6, 7, 8})},
		{"Initial with a 20-byte DCID", longPacket(typeInitial, append([]byte{0x0b, 2, 3, 0x85}, make([]byte, 16)...))},
		// Our length, another first octet: another config rotation
		// (0x2b), or a length bit pattern that is not ours (0x0c).
		{"Initial with our length, another config rotation", longPacket(typeInitial, append([]byte{0x2b, 0x0a, 0x1b, 0x85}, make([]byte, 8)...))},
		{"Initial with our length, other length bits", longPacket(typeInitial, append([]byte{0x0c, 0x0a, 0x1b, 0x85}, make([]byte, 8)...))},
	}
	for _, gen := range []Generation{0, 1, 0} {
		b.must(t, b.st.SetGeneration(gen))
		if got, err := b.st.Generation(); err != nil || got != gen {
			t.Fatalf("Generation() = %d, %v; want %d", got, err, gen)
		}
		for _, tc := range foreign {
			// 0x85: shard (0x85 & 0x7f) % 4 = 1, whatever the top bit.
			b.expect(t, c, tc.p, gen, 1, tc.what)
		}
		// Too short for the shard byte: the current generation, by
		// the hash.
		for _, p := range [][]byte{{}, {0x40}, {0x40, 0x0b}, {0xc0}, {0xc0, 0, 0, 0, 1}, longPacket(typeInitial, []byte{1, 2})} {
			if got := b.send(t, c, p); Generation(got/n) != gen {
				t.Fatalf("short datagram %x reached generation %d, want %d", p, got/n, gen)
			}
		}
		// The existing connection stays where it is.
		b.expect(t, c, shortPacket(old), 0, 2, "existing connection, short header")
		b.expect(t, c, longPacket(typeHandshake, old), 0, 2, "existing connection, Handshake")
	}
	k := b.st.Counters.ReadKinds(n)
	if k.New != 3*5 || k.Hashed != 3*6 || k.Orphaned != 0 {
		t.Errorf("kinds %+v, want 15 new, 18 hashed", k)
	}
}

// TestSteeringOrphanedGeneration: the packets of a generation nobody
// serves go to the current generation's socket of the same shard, never
// to the spare set.
func TestSteeringOrphanedGeneration(t *testing.T) {
	const n = 3
	b := newGenBind(t, mustFormat(t, nil), n) // 10-byte IDs, shard byte at 1
	c := b.client(t)
	b.must(t, b.st.MarkServing(0))
	b.must(t, b.st.MarkServing(1))
	b.must(t, b.st.SetGeneration(1))
	id := b.cid(t, 0, 2)
	b.expect(t, c, shortPacket(id), 0, 2, "generation 0 served")

	b.must(t, b.st.MarkDone(0))
	if pid, err := b.st.ServingPID(0); err != nil || pid != 0 {
		t.Fatalf("ServingPID(0) after MarkDone = %d, %v", pid, err)
	}
	b.expect(t, c, shortPacket(id), 1, 2, "generation 0 not served, short header")
	b.expect(t, c, longPacket(typeHandshake, id), 1, 2, "generation 0 not served, Handshake")
	// A client's own DCID that happens to look like one of ours, naming
	// generation 0 (length 10, first octet 0xe9, shard byte 0x01).
	lookalike := longPacket(typeInitial, []byte{0xe9, 0x01, 3, 4, 5, 6, 7, 8, 9, 10})
	b.expect(t, c, lookalike, 1, 1, "look-alike Initial naming generation 0")
	if k := b.st.Counters.ReadKinds(n); k.Orphaned != 3 {
		t.Errorf("%d orphaned packets, want 3", k.Orphaned)
	}

	// Served again (the next process of generation 0).
	b.must(t, b.st.MarkServing(0))
	b.expect(t, c, shortPacket(id), 0, 2, "generation 0 served again")
	b.expect(t, c, lookalike, 0, 1, "look-alike Initial, generation 0 served")
	// No generation marked: everything goes to the current one.
	b.must(t, b.st.MarkDone(0))
	b.must(t, b.st.MarkDone(1))
	b.expect(t, c, shortPacket(b.cid(t, 1, 0)), 1, 0, "nobody marked, generation 1 ID")
	b.expect(t, c, shortPacket(id), 1, 2, "nobody marked, generation 0 ID")
}

// TestSteeringReopened: the maps opened from handed-over descriptors drive
// the program that the first handle loaded and attached, also once that
// handle is closed, as in the new process of an upgrade.
func TestSteeringReopened(t *testing.T) {
	const n = 2
	f := mustFormat(t, []byte{0x42})
	b := newGenBind(t, f, n)
	c := b.client(t)
	b.must(t, b.st.MarkServing(0))
	b.must(t, b.st.SetGeneration(0))
	initial := longPacket(typeInitial, []byte{1, 2, 1, 4, 5, 6, 7, 8}) // shard byte at 2: 1
	b.expect(t, c, initial, 0, 1, "before the handoff")

	// What a handoff passes: duplicates of the descriptors.
	fdsIn := b.st.FDs()
	dup := func(fd int) int {
		d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	st2, err := OpenSteering(SteeringFDs{Sockets: dup(fdsIn.Sockets), State: dup(fdsIn.State), Counters: dup(fdsIn.Counters)})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Counters.Close()
	defer st2.Close()
	if st2.Shards() != n {
		t.Fatalf("reopened: %d shards, want %d", st2.Shards(), n)
	}
	b.must(t, st2.CheckFormat(f, n))
	for _, tc := range []struct {
		f      CIDFormat
		shards int
	}{{mustFormat(t, []byte{0x42, 0x43}), n}, {mustFormat(t, nil), n}, {f, n + 1}} {
		if err := st2.CheckFormat(tc.f, tc.shards); err == nil || !strings.Contains(err.Error(), "restart") {
			t.Errorf("CheckFormat(%+v, %d) = %v, want an error saying restart", tc.f, tc.shards, err)
		}
	}
	if err := st2.Attach(testutil.FDs(t, b.conns)); err == nil {
		t.Error("Attach on reopened maps succeeded")
	}
	if g, err := st2.Generation(); err != nil || g != 0 {
		t.Fatalf("reopened Generation() = %d, %v", g, err)
	}
	if pid, err := st2.ServingPID(0); err != nil || pid != os.Getpid() {
		t.Fatalf("reopened ServingPID(0) = %d, %v", pid, err)
	}

	// The old handle goes away (the old process exits).
	b.st.Close()
	b.must(t, st2.MarkServing(1))
	b.must(t, st2.SetGeneration(1))
	b.expect(t, c, initial, 1, 1, "flipped through the reopened maps")
	b.expect(t, c, shortPacket(b.cid(t, 0, 0)), 0, 0, "generation 0 still served")
	b.must(t, st2.MarkDone(0))
	b.expect(t, c, shortPacket(b.cid(t, 0, 0)), 1, 0, "generation 0 done")
	if got := st2.Counters.ReadGeneration(1, n); got[1] != 1 || got[0] != 1 {
		t.Errorf("reopened counters, generation 1: %v, want [1 1]", got)
	}
	if got := b.st.Counters.ReadGeneration(0, n); got[0] != 1 || got[1] != 1 {
		t.Errorf("first counters, generation 0: %v, want [1 1]", got)
	}

	// Descriptors that are not the steering maps.
	fds2 := st2.FDs()
	if _, err := OpenSteering(SteeringFDs{Sockets: dup(fds2.State), State: dup(fds2.State), Counters: dup(fds2.Counters)}); err == nil {
		t.Error("OpenSteering accepted the state map as the socket map")
	}
	if _, err := OpenSteering(SteeringFDs{Sockets: -1, State: dup(fds2.State), Counters: dup(fds2.Counters)}); err == nil {
		t.Error("OpenSteering accepted fd -1")
	}
}

// TestSteeringMatchesModel sends datagrams of every shape (seeded, so the
// run is repeatable) under every state, and checks the program against
// steerModel.
func TestSteeringMatchesModel(t *testing.T) {
	for _, sid := range [][]byte{nil, {0x0a, 0x1b, 0x2c}} {
		f := mustFormat(t, sid)
		const n = 3
		b := newGenBind(t, f, n)
		c := b.client(t)
		rng := rand.New(rand.NewPCG(1, uint64(len(sid))))
		random := func(k int) []byte {
			p := make([]byte, k)
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			return p
		}
		var current Generation
		var serving [2]bool
		for i := 0; i < 400; i++ {
			if i%50 == 0 {
				current = Generation(rng.IntN(2))
				serving = [2]bool{rng.IntN(2) == 0, rng.IntN(2) == 0}
				b.must(t, b.st.SetGeneration(current))
				for g := Generation(0); g <= 1; g++ {
					if serving[g] {
						b.must(t, b.st.MarkServing(g))
					} else {
						b.must(t, b.st.MarkDone(g))
					}
				}
			}
			var p []byte
			switch rng.IntN(6) {
			case 0: // one of ours, short header
				p = shortPacket(b.cid(t, Generation(rng.IntN(2)), rng.IntN(n)))
			case 1: // one of ours, long header
				p = longPacket(byte(rng.IntN(3)), b.cid(t, Generation(rng.IntN(2)), rng.IntN(n)))
			case 2: // a client's DCID of any length
				p = longPacket(byte(rng.IntN(2)), random(rng.IntN(21)))
			case 3: // our length and first octet, any shard byte
				id := random(f.Len())
				id[0] = f.firstOctet()
				p = longPacket(typeInitial, id)
			case 4: // anything, short
				p = random(rng.IntN(16))
			default: // a packet of ours cut anywhere
				p = longPacket(typeHandshake, b.cid(t, 1, rng.IntN(n)))
				p = p[:rng.IntN(len(p))]
			}
			gen, shard, kind := steerModel(f, n, current, serving, p)
			got := b.send(t, c, p)
			if Generation(got/n) != gen || shard >= 0 && got%n != shard {
				t.Fatalf("server ID %x, current %d, serving %v: %x reached generation %d shard %d; want generation %d shard %d (%v)",
					sid, current, serving, p, got/n, got%n, gen, shard, kind)
			}
		}
	}
}

// TestNextGeneration: an upgrade waits for the process of the generation
// it would take to exit, and forgets one that exited without a word.
func TestNextGeneration(t *testing.T) {
	b := newGenBind(t, mustFormat(t, nil), 1)
	b.must(t, b.st.SetGeneration(0))
	b.must(t, b.st.MarkServing(0))
	if g, err := b.st.NextGeneration(); err != nil || g != 1 {
		t.Fatalf("NextGeneration() = %d, %v; want 1", g, err)
	}
	// A running process (the test's parent) still serves generation 1.
	b.must(t, b.st.setServing(1, os.Getppid()))
	if _, err := b.st.NextGeneration(); err == nil || !strings.Contains(err.Error(), "still serves generation 1") {
		t.Fatalf("NextGeneration() with generation 1 served: %v", err)
	}
	if err := b.st.MarkServing(1); err == nil {
		t.Fatal("MarkServing(1) took the generation of a running process")
	}
	if err := b.st.MarkDone(1); err != nil {
		t.Fatal(err)
	}
	if pid, _ := b.st.ServingPID(1); pid != os.Getppid() {
		t.Fatalf("MarkDone(1) cleared another process's generation: pid %d", pid)
	}
	// A process that exited without MarkDone.
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Skip("cannot run /bin/true:", err)
	}
	b.must(t, b.st.setServing(1, cmd.Process.Pid))
	if forgot, err := b.st.ForgetExited(0); err != nil || forgot {
		t.Fatalf("ForgetExited(0), served by this process = %v, %v", forgot, err)
	}
	b.must(t, b.st.setServing(0, os.Getppid()))
	if forgot, err := b.st.ForgetExited(0); err != nil || forgot {
		t.Fatalf("ForgetExited(0), served by a running process = %v, %v", forgot, err)
	}
	b.must(t, b.st.setServing(0, os.Getpid()))
	if g, err := b.st.NextGeneration(); err != nil || g != 1 {
		t.Fatalf("NextGeneration() with generation 1's process gone = %d, %v", g, err)
	}
	if pid, _ := b.st.ServingPID(1); pid != 0 {
		t.Fatalf("the exited process %d is still recorded", pid)
	}
	b.must(t, b.st.setServing(1, cmd.Process.Pid))
	if forgot, err := b.st.ForgetExited(1); err != nil || !forgot {
		t.Fatalf("ForgetExited(1), its process gone = %v, %v", forgot, err)
	}
	for _, err := range []error{b.st.SetGeneration(2), b.st.MarkServing(2)} {
		if err == nil || !strings.Contains(err.Error(), "want 0 or 1") {
			t.Errorf("generation 2: %v", err)
		}
	}
}

func TestLoadSteeringForRejects(t *testing.T) {
	f := mustFormat(t, nil)
	for _, n := range []int{0, MaxShards + 1} {
		if _, err := LoadSteeringFor(f, n); err == nil || !strings.Contains(err.Error(), "want 1 to 128") {
			t.Errorf("LoadSteeringFor(%d shards) = %v", n, err)
		}
	}
	if _, err := LoadSteeringFor(CIDFormat{}, 2); err == nil {
		t.Error("LoadSteeringFor accepted an invalid format")
	}
}

func TestSteeringWithoutGenerations(t *testing.T) {
	st, err := LoadSteering(2, 1)
	if err != nil {
		testutil.SkipOrFail(t, "cannot load the reuseport program here: %v", err)
	}
	defer st.Counters.Close()
	defer st.Close()
	if err := st.SetGeneration(1); err == nil || !strings.Contains(err.Error(), "no generations") {
		t.Errorf("SetGeneration on LoadSteering's program: %v", err)
	}
	if fds := st.FDs(); fds.State != -1 || fds.Sockets < 0 || fds.Counters < 0 {
		t.Errorf("FDs() = %+v", fds)
	}
}
