package runtime

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis/portcullis/internal/compile"
	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/quiclb"
	"github.com/portcullis/portcullis/internal/tickets"
)

// serving is the running listeners (units) and the graph they serve. A
// reload swaps the graph, keeps the units whose sockets and servers stay,
// starts new ones and stops those the new graph does not have.
type serving struct {
	log *slog.Logger
	// ctx ends when the servers stop; background work (metrics) follows it.
	ctx     context.Context
	cancel  context.CancelFunc
	tickets *tickets.Keys
	graph   atomic.Pointer[compile.Graph]
	// files are the bytes of the files the running graph was compiled
	// from (configuration, certificates, keys): a binary upgrade hands
	// them off to the new process. Each applied reload replaces them.
	files atomic.Pointer[map[string][]byte]
	// clients are the client connections of the HTTP/3 servers, for the
	// private server connections of send_proxy.
	clients sync.Map // net.Conn → *proxy.ClientConn
	errs    chan error
	start   startState
	// requests are reloads and replays the admin API asks the loop for;
	// history counts the reloads.
	requests chan reloadRequest
	history  reloadHistory
	// stopping is closed when the loop stops taking requests (the
	// process stops or hands over to an upgrade).
	stopping chan struct{}
	// since is when the process started serving.
	since time.Time
	// prev is the process a binary upgrade replaced with this one, while
	// it drains (upgrade_successor.go).
	prev atomic.Pointer[predecessor]
	// reopenLogs reopens the access-log files (SIGUSR1); nil: none.
	reopenLogs func() error
	// logFiles returns the open access-log files, by path, for a binary
	// upgrade to hand over; nil: none.
	logFiles func() map[string]*os.File

	mu sync.Mutex
	// units are the listeners of the current graph, by key (unit.go).
	units map[string]unit
	// draining are units a reload stopped, still finishing their
	// connections; drains counts their goroutines.
	draining map[unit]struct{}
	drains   sync.WaitGroup
}

// startState is what a process starts serving with, besides the graph and
// its sockets. The zero value is a process started afresh, without
// steering.
type startState struct {
	// steer are the steering programs of the HTTP/3 binds with two socket
	// sets, by address; the units of the first graph take them.
	steer map[string]*quiclb.Steering
	// gen is the QUIC generation this process serves: 0, or the one a
	// binary upgrade gave it. Its connection IDs carry it.
	gen quiclb.Generation
	// peers are, for the new process of a binary upgrade, its ends of the
	// socket pairs over which the two processes forward each other's
	// datagrams, for the HTTP/3 binds with one unsteered socket, by
	// address (h3.ForwardConn).
	peers map[string]*net.UnixConn
	// ticketKeys are the TLS session ticket keys to start with; nil: new.
	ticketKeys [][32]byte
	// files are the bytes the graph was compiled from.
	files map[string][]byte
	// proc is how this process was started.
	proc procInfo
	// reg is the live state of the running configuration (servers and
	// their overrides, connection counters); nil in tests that serve a
	// graph without one.
	reg *registry
	// generation is 0 for a process started afresh, +1 per binary
	// upgrade.
	generation int
	// version is the program's version, for the admin API.
	version string
}

// procInfo is how the process was started, for a binary upgrade, which
// starts the next one the same way.
type procInfo struct {
	// exe is the path of the executable the first process was started
	// from; argv its arguments.
	exe  string
	argv []string
	// configPath is the configuration file; "" for an embedded one.
	configPath string
	// dropped says privileges were dropped at startup (handoff.Handoff.Dropped).
	dropped bool
}

// serve starts a server on every socket of the graph. sockets must hold one
// socket per spec of g.Specs(), in any order (shards of one address in
// shard order). st says how the process started; nil: afresh.
func serve(g *compile.Graph, sockets []*listen.Socket, st *startState, log *slog.Logger) (*serving, error) {
	if st == nil {
		st = &startState{}
	}
	s := &serving{
		log:      log,
		errs:     make(chan error, 16),
		requests: make(chan reloadRequest),
		stopping: make(chan struct{}),
		since:    time.Now(),
		tickets:  tickets.New(st.ticketKeys),
		start:    *st,
		units:    map[string]unit{},
		draining: map[unit]struct{}{},
	}
	s.files.Store(&st.files)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	go s.tickets.RotateEvery(s.ctx, tickets.Rotation)
	s.tickets.UseGraph(g.TLSConfigs())
	s.graph.Store(g)
	byAddr := map[string][]*listen.Socket{}
	for _, sock := range sockets {
		key := sock.Network + " " + sock.Address
		byAddr[key] = append(byAddr[key], sock)
	}
	for _, us := range unitSpecs(g) {
		_, addr := unitKind(us.key)
		socks := byAddr[us.specs[0].Network+" "+addr]
		u, err := s.startUnit(us, socks)
		if err != nil {
			s.close()
			closeSteering(s.takeAllSteering())
			return nil, err
		}
		s.units[us.key] = u
	}
	closeSteering(s.takeAllSteering()) // none left unless the graph lost a bind
	return s, nil
}

// takeSteering returns the steering program of the HTTP/3 bind at addr
// for its first unit, or nil.
func (s *serving) takeSteering(addr string) *quiclb.Steering {
	st := s.start.steer[addr]
	delete(s.start.steer, addr)
	return st
}

func (s *serving) takeAllSteering() map[string]*quiclb.Steering {
	m := s.start.steer
	s.start.steer = nil
	return m
}

// takePeer returns this process's end of the forwarding socket pair of
// the HTTP/3 bind at addr for its first unit, or nil.
func (s *serving) takePeer(addr string) *net.UnixConn {
	p := s.start.peers[addr]
	delete(s.start.peers, addr)
	return p
}

// startUnit starts the servers of a unit on its sockets.
func (s *serving) startUnit(us unitSpec, socks []*listen.Socket) (unit, error) {
	if len(socks) != len(us.specs) {
		return nil, fmt.Errorf("internal error: %d sockets for the %d of %s", len(socks), len(us.specs), us.key)
	}
	kind, _ := unitKind(us.key)
	switch kind {
	case unitTCP:
		return s.startTCP(us, socks[0])
	case unitQUIC:
		return s.startQUIC(us, socks)
	case unitUDP:
		return s.startRelay(us, socks[0])
	case unitAdmin:
		return s.startAdmin(us, socks[0])
	}
	return nil, fmt.Errorf("internal error: unit %q", us.key)
}

// fail reports a server that stopped serving by itself: loop stops the
// process. Failures beyond the first few are dropped (one is enough).
func (s *serving) fail(err error) {
	select {
	case s.errs <- err:
	default:
	}
}

// sockets returns every socket of the running listeners, ordered by unit
// key and shard: what the process holds for its configuration (a binary
// upgrade hands them over). Sockets of listeners that a reload removed
// and that still drain are not among them.
func (s *serving) sockets() []*listen.Socket {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.units))
	for k := range s.units {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var out []*listen.Socket
	for _, k := range keys {
		out = append(out, s.units[k].sockets()...)
	}
	return out
}

// shutdown stops accepting on every listener at once, sends GOAWAY on
// HTTP/2 and HTTP/3 connections and waits for in-flight requests, for
// upgraded connections (ended at a quiet moment) and for listeners a
// reload stopped and that still drain, until ctx ends; then it closes
// whatever is left.
func (s *serving) shutdown(ctx context.Context) error { return s.stop(ctx, false) }

// stopForUpgrade is shutdown after a binary upgrade, whose new process
// accepts on the same sockets: it first lets connections accepted just
// before reach the point where they are served (unit.settle), as a reload
// does for the listeners it replaces.
func (s *serving) stopForUpgrade(ctx context.Context) error { return s.stop(ctx, true) }

func (s *serving) stop(ctx context.Context, settle bool) error {
	units := s.stopAccepting()
	var wg sync.WaitGroup
	errs := make([]error, len(units)+1)
	for i, u := range units {
		wg.Go(func() {
			if settle {
				u.settle(ctx)
			}
			errs[i] = u.drain(ctx)
		})
	}
	wg.Go(func() {
		done := make(chan struct{})
		go func() {
			s.drains.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
			errs[len(units)] = ctx.Err()
		}
	})
	wg.Wait()
	s.close()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// stopAccepting makes every running unit stop accepting and returns them.
func (s *serving) stopAccepting() []unit {
	s.mu.Lock()
	units := make([]unit, 0, len(s.units))
	for _, u := range s.units {
		units = append(units, u)
	}
	s.mu.Unlock()
	for _, u := range units {
		u.stopAccepting()
	}
	return units
}

// close closes every listener, draining ones included, at once.
func (s *serving) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cancel()
	for _, u := range s.units {
		u.close()
	}
	for u := range s.draining {
		u.close()
	}
}
