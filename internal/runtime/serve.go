package runtime

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis/portcullis/internal/listen"
	pquic "github.com/portcullis/portcullis/internal/quic"
)

// Server timeouts toward clients.
const (
	readHeaderTimeout = 10 * time.Second  // slow-loris bound for request headers
	idleTimeout       = 120 * time.Second // keep-alive and HTTP/3 idle connections
)

// serving is the running listeners (units) and the graph they serve. A
// reload swaps the graph, keeps the units whose sockets and servers stay,
// starts new ones and stops those the new graph does not have.
type serving struct {
	log *slog.Logger
	// ctx ends when the servers stop; background work (metrics) follows it.
	ctx      context.Context
	cancel   context.CancelFunc
	counters map[string]*pquic.Counters
	tickets  *ticketKeys
	graph    atomic.Pointer[Graph]
	// clients are the client connections of the http.Servers, for the
	// private server connections of send_proxy.
	clients sync.Map // net.Conn → *proxy.ClientConn
	errs    chan error

	mu sync.Mutex
	// units are the listeners of the current graph, by key (unit.go).
	units map[string]unit
	// draining are units a reload stopped, still finishing their
	// connections; drains counts their goroutines.
	draining map[unit]struct{}
	drains   sync.WaitGroup
}

// serve starts a server on every socket of the graph. sockets must hold one
// socket per spec of g.Specs(), in any order (shards of one address in
// shard order). counters are the steering programs' packet counts by
// address.
func serve(g *Graph, sockets []*listen.Socket, counters map[string]*pquic.Counters, log *slog.Logger) (*serving, error) {
	s := &serving{
		log:      log,
		errs:     make(chan error, 16),
		counters: counters,
		tickets:  newTicketKeys(),
		units:    map[string]unit{},
		draining: map[unit]struct{}{},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	go s.tickets.rotateEvery(s.ctx, ticketKeyRotation)
	s.graph.Store(g)
	byAddr := map[string][]*listen.Socket{}
	for _, sock := range sockets {
		key := sock.Network + " " + sock.Address
		byAddr[key] = append(byAddr[key], sock)
	}
	for _, us := range g.unitSpecs() {
		_, addr := unitKind(us.key)
		socks := byAddr[us.specs[0].Network+" "+addr]
		u, err := s.start(us, socks)
		if err != nil {
			s.close()
			return nil, err
		}
		s.units[us.key] = u
	}
	return s, nil
}

// start starts the servers of a unit on its sockets.
func (s *serving) start(us unitSpec, socks []*listen.Socket) (unit, error) {
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
// HTTP/2 and HTTP/3 connections and waits for in-flight requests (and for
// listeners a reload stopped and that still drain) until ctx ends; then it
// closes whatever is left.
func (s *serving) shutdown(ctx context.Context) error {
	s.mu.Lock()
	units := make([]unit, 0, len(s.units))
	for _, u := range s.units {
		units = append(units, u)
	}
	s.mu.Unlock()
	for _, u := range units {
		u.stopAccepting()
	}
	var wg sync.WaitGroup
	errs := make([]error, len(units)+1)
	for i, u := range units {
		wg.Go(func() { errs[i] = u.drain(ctx) })
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
