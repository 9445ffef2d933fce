package runtime

import (
	"log/slog"
	"sync"

	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/health"
	"github.com/portcullis/portcullis/internal/limit"
)

// serverKey identifies a server across configurations: live state follows
// a server that keeps its backend name and address through a reload.
type serverKey struct{ backend, address string }

// liveServer is the state of one server that outlives configurations.
type liveServer struct {
	state   *balance.State
	monitor *health.Monitor
}

// serverPlan is what a compiled graph wants for one server once it is
// live: its health settings and administrative state.
type serverPlan struct {
	key     serverKey
	live    *liveServer
	active  *health.Active
	passive health.Passive
	admin   balance.Admin
}

// registry holds the live servers of the running configuration. Compile
// looks servers up without changing anything; commit applies a graph once
// it serves, so that a rejected reload leaves no trace.
type registry struct {
	mu      sync.Mutex
	servers map[serverKey]*liveServer
	log     *slog.Logger
	// conns counts the connections of each frontend, by name, and global
	// those of the whole process; events summarizes the limits that fire.
	conns  map[string]*limit.Conns
	global *limit.Conns
	events *limit.Events
}

func newRegistry(log *slog.Logger) *registry {
	return &registry{
		servers: map[serverKey]*liveServer{},
		log:     log,
		conns:   map[string]*limit.Conns{},
		global:  limit.NewConns(nil),
		events:  limit.NewEvents(log, 0),
	}
}

// frontendConns returns the connection counter of frontend name: the
// running one, or a new one (not yet registered). A nil registry makes
// new ones, with a parent and events of their own.
func (r *registry) frontendConns(name string) (*limit.Conns, *limit.Events) {
	if r == nil {
		return limit.NewConns(limit.NewConns(nil)), limit.NewEvents(slog.New(slog.DiscardHandler), 0)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.conns[name]; c != nil {
		return c, r.events
	}
	return limit.NewConns(r.global), r.events
}

// lookup returns the live server for key, or a new one (not yet
// registered, its monitor not started) for a server the running
// configuration does not have. A nil registry always makes new ones.
func (r *registry) lookup(key serverKey, active *health.Active, passive health.Passive, log *slog.Logger) *liveServer {
	if r != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
		if ls := r.servers[key]; ls != nil {
			return ls
		}
	}
	st := balance.NewState(key.address)
	return &liveServer{state: st, monitor: health.NewMonitor(key.address, st, active, passive, log)}
}

// commit makes plans the live set: new servers start their checks,
// kept ones take the new settings, removed ones stop. Administrative
// states (drain, disabled) are applied here and logged when they change.
//
// It also applies the graph's connection limits: global.max_conns, and
// each frontend's, whose counters it keeps by name.
func (r *registry) commit(g *Graph) {
	var plans []serverPlan
	conns := map[string]*limit.Conns{}
	if g != nil {
		plans = g.servers
		r.global.SetLimits(g.maxConns, 0)
		for name, p := range g.conns {
			p.conns.SetLimits(p.max, p.perClient)
			conns[name] = p.conns
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conns = conns
	keep := make(map[serverKey]bool, len(plans))
	for _, p := range plans {
		keep[p.key] = true
		if p.live.state.SetAdmin(p.admin) {
			r.log.Info("server state", "backend", p.key.backend, "server", p.key.address, "state", p.admin.String())
		}
		if r.servers[p.key] == p.live {
			p.live.monitor.Update(p.active, p.passive)
			continue
		}
		r.servers[p.key] = p.live
		p.live.monitor.Start()
	}
	for key, ls := range r.servers {
		if !keep[key] {
			ls.monitor.Stop()
			delete(r.servers, key)
		}
	}
}

// stop stops every health check.
func (r *registry) stop() {
	r.commit(nil)
}
