package runtime

import (
	"fmt"
	"log/slog"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/portcullis/portcullis/internal/compile"
	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/quiclb"
)

// steering loads the generational reuseport program of every HTTP/3 bind,
// before any socket is bound: with it a bind has two sets of shards
// sockets, one per process generation, so that a binary upgrade keeps the
// QUIC connections of both processes apart (docs/quic.md, "Binary
// upgrade: generations"). It is loaded for one shard too. A bind whose
// program cannot be loaded falls back to one socket, without generations;
// wanting several shards, it says so once with the reason and the remedy:
// shards are never run unsteered. Passed sockets (socket activation) fix
// the sockets of their address: one is one unsteered socket (no program
// is tried), 2×N are N steered shards per set.
func steering(g *compile.Graph, passed []*listen.Passed, log *slog.Logger) (map[string]*quiclb.Steering, error) {
	passedUDP := map[string]int{}
	for _, p := range passed {
		if p.Network == "udp" {
			for addr := range g.BindAt {
				if p.MatchesAddress(addr) {
					passedUDP[addr]++
				}
			}
		}
	}
	out := map[string]*quiclb.Steering{}
	fail := func(err error) (map[string]*quiclb.Steering, error) {
		closeSteering(out)
		return nil, err
	}
	addrs := make([]string, 0, len(g.BindAt))
	for addr := range g.BindAt {
		addrs = append(addrs, addr)
	}
	sort.Strings(addrs)
	for _, addr := range addrs {
		q := g.BindAt[addr].QUIC
		if q == nil {
			continue
		}
		q.Sets = 1
		n := q.Shards
		switch p := passedUDP[addr]; {
		case p == 1:
			q.Shards = 1
			continue
		case p%2 != 0:
			return fail(fmt.Errorf("QUIC on %s: %d UDP sockets were passed: pass one ListenDatagram= socket for the address, or two per shard (ReusePort=yes), one set for each process generation of a binary upgrade", addr, p))
		case p > 1:
			n = p / 2
		}
		st, err := quiclb.LoadSteeringFor(q.Format, n)
		if err != nil {
			if p := passedUDP[addr]; p > 1 {
				// The sockets exist already, and several unsteered shards
				// would reset connections whose address changes.
				return fail(fmt.Errorf("QUIC on %s: %d UDP sockets were passed, but the steering program that keeps each connection on its socket cannot be loaded (%v): pass one ListenDatagram= socket for the address, or grant CAP_BPF at startup", addr, p, err))
			}
			if n > 1 {
				log.Warn("QUIC: one shard instead of several: the steering program cannot be loaded; to use every core for HTTP/3, start as root (or grant CAP_BPF, or CAP_SYS_ADMIN, at startup only), or set quic shards: 1 to silence this",
					"address", addr, "shards_wanted", n, "reason", err)
			}
			q.Shards = 1
			continue
		}
		q.Shards, q.Sets = n, 2
		out[addr] = st
	}
	return out, nil
}

func closeSteering(m map[string]*quiclb.Steering) {
	for _, st := range m {
		st.Close()
		st.Counters.Close()
	}
}

// attachSteering puts each bind's sockets into its program's map, both
// sets in order, and attaches the program. The programs stay open: the
// process serving them records its generation through them, and hands
// their descriptors on.
func attachSteering(steer map[string]*quiclb.Steering, sockets []*listen.Socket) error {
	for addr, st := range steer {
		var fds []int
		for _, s := range sockets {
			if s.Network == "udp" && s.Address == addr {
				fds = append(fds, int(s.File.Fd()))
			}
		}
		if err := st.Attach(fds); err != nil {
			closeSteering(steer)
			return fmt.Errorf("QUIC on %s: %w", addr, err)
		}
	}
	return nil
}

// openSteering opens the steering maps a previous image or process handed
// over, and checks that the graph issues the connection IDs the inherited
// program reads.
func openSteering(g *compile.Graph, fds map[string]quiclb.SteeringFDs) (map[string]*quiclb.Steering, error) {
	out := map[string]*quiclb.Steering{}
	for addr, f := range fds {
		for _, fd := range []int{f.Sockets, f.State, f.Counters} {
			unix.CloseOnExec(fd)
		}
		st, err := quiclb.OpenSteering(f)
		if err != nil {
			closeSteering(out)
			return nil, fmt.Errorf("handoff: QUIC on %s: %w", addr, err)
		}
		out[addr] = st
		b := g.BindAt[addr]
		if b == nil || b.QUIC == nil {
			closeSteering(out)
			return nil, fmt.Errorf("handoff: QUIC on %s: the configuration has no HTTP/3 bind there", addr)
		}
		if err := st.CheckFormat(b.QUIC.Format, b.QUIC.Shards); err != nil {
			closeSteering(out)
			return nil, err
		}
	}
	return out, nil
}
