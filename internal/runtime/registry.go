package runtime

import (
	"github.com/portcullis/portcullis/internal/accesslog"
	"log/slog"
	"sync"

	"github.com/portcullis/portcullis/internal/compile"
	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/metrics"
	"github.com/portcullis/portcullis/internal/upstream"
)

// registry holds the live state of the running configuration: its
// servers (upstream.Registry) and the connection counters of its
// frontends. Compile looks them up without changing anything; commit
// applies a graph once it serves, so that a rejected reload leaves no
// trace.
type registry struct {
	servers *upstream.Registry
	// mu guards conns.
	mu sync.Mutex
	// conns counts the connections of each frontend, by name, and global
	// those of the whole process; events summarizes the limits that fire.
	conns  map[string]*limit.Conns
	global *limit.Conns
	events *limit.Events
	// logs are the running access-log writers, by destination (guarded
	// by mu); log receives their reports.
	logs map[string]*accesslog.Writer
	log  *slog.Logger
	// metrics is the process's metrics (metrics.go); nil until
	// useMetrics.
	metrics *metrics.Metrics
}

func newRegistry(log *slog.Logger) *registry {
	return &registry{
		servers: upstream.NewRegistry(log),
		conns:   map[string]*limit.Conns{},
		global:  limit.NewConns(nil),
		events:  limit.NewEvents(log, 0),
		logs:    map[string]*accesslog.Writer{},
		log:     log,
	}
}

// FrontendConns returns the connection counter of frontend name: the
// running one, or a new one (not yet registered). A nil registry makes
// new ones, with a parent and events of their own (compile.Live).
func (r *registry) FrontendConns(name string) (*limit.Conns, *limit.Events) {
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

// Servers is the registry of servers; nil for a nil registry, which
// makes fresh servers (compile.Live).
func (r *registry) Servers() *upstream.Registry {
	if r == nil {
		return nil
	}
	return r.servers
}

// commit makes the servers of g the live set (upstream.Registry.Commit;
// nil g stops every health check).
//
// It also applies the graph's connection limits: global.max_conns, and
// each frontend's, whose counters it keeps by name.
func (r *registry) commit(g *compile.Graph) {
	var servers []*upstream.Server
	conns := map[string]*limit.Conns{}
	if g != nil {
		servers = g.Servers
		r.global.SetLimits(g.MaxConns, 0)
		for name, p := range g.Conns {
			p.Conns.SetLimits(p.Max, p.PerClient)
			conns[name] = p.Conns
		}
	}
	r.mu.Lock()
	r.conns = conns
	r.mu.Unlock()
	r.servers.Commit(servers)
	r.commitLogs(g)
	r.commitMetrics(g)
}

// stop stops every health check and closes the access logs.
func (r *registry) stop() {
	r.commit(nil)
}
