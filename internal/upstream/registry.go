package upstream

import (
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/health"
	"github.com/portcullis/portcullis/internal/metrics"
)

// key identifies a server across configurations: live state follows a
// server that keeps its backend name and address through a reload.
type key struct{ backend, address string }

// live is the state of one server that outlives configurations.
type live struct {
	state   *balance.State
	monitor *health.Monitor
	// configured is what the committed configuration gives the server,
	// to which ClearOverride returns it.
	configured Configured
	// metrics counts the server's requests; nil: not counted.
	metrics *metrics.Server
}

// plan is what a compiled configuration wants for one server once it is
// live: its health settings and administrative state.
type plan struct {
	key     key
	live    *live
	active  *health.Active
	passive health.Passive
	// configured is the server's configuration.
	configured Configured
}

// ServerConfig is the configuration of one server of a backend.
type ServerConfig struct {
	// Address is the server's "host:port".
	Address string
	// Weight is the server's share relative to the others, 1 or more.
	Weight int
	// Backup servers are used only when no primary server is usable.
	Backup bool
	// MaxConns bounds the requests or connections in flight at the
	// server; 0: no bound.
	MaxConns int
	// SlowStart ramps the weight up over this long after the server
	// becomes usable; 0: no ramp.
	SlowStart time.Duration
	// SendProxy is the PROXY protocol version connections start with: 0
	// none, 1 (text) or 2 (binary).
	SendProxy int
	// Admin is the administrative state (active, drain, disabled),
	// applied by Registry.Commit.
	Admin balance.Admin
}

// Registry holds the live servers of the running configuration, keyed by
// backend name and address. Compiling a configuration takes servers from
// it without changing anything (Server); Commit applies a configuration
// once it serves, so that a rejected reload leaves no trace. A nil
// *Registry makes fresh servers, for a configuration that never runs.
type Registry struct {
	mu        sync.Mutex
	servers   map[key]*live
	overrides map[key]Override
	log       *slog.Logger
	// metrics gives each server its handle; nil: not counted.
	metrics *metrics.Metrics
}

// NewRegistry returns an empty registry that logs changes of servers'
// administrative states to log.
func NewRegistry(log *slog.Logger) *Registry {
	return &Registry{servers: map[key]*live{}, overrides: map[key]Override{}, log: log}
}

// UseMetrics gives the servers made from now on a handle of m (nil:
// none). Call it before the first Server.
func (r *Registry) UseMetrics(m *metrics.Metrics) { r.metrics = m }

// Metrics is what UseMetrics set; nil for a nil Registry.
func (r *Registry) Metrics() *metrics.Metrics {
	if r == nil {
		return nil
	}
	return r.metrics
}

// Server returns server c of backend with the live state (health,
// in-flight count) of the running server of the same backend and address,
// or fresh state (its health monitor not started) for a server the
// running configuration does not have. active (nil: none) and passive are
// its health checks, applied by Commit; the monitor logs to log. The
// server's member ID, which sticky cookies carry, is derived from backend
// and address, so that it survives reloads and restarts.
func (r *Registry) Server(backend string, c ServerConfig, active *health.Active, passive health.Passive, log *slog.Logger) *Server {
	k := key{backend, c.Address}
	ls := r.lookup(k, active, passive, log)
	o := r.override(k)
	weight := c.Weight
	if o.Weight > 0 {
		weight = o.Weight
	}
	m := &balance.Member{
		State:     ls.state,
		Weight:    weight,
		Backup:    c.Backup,
		MaxConns:  c.MaxConns,
		SlowStart: c.SlowStart,
		ID:        strconv.FormatUint(balance.HashString(backend+"\x00"+c.Address), 36),
	}
	return &Server{
		member:    m,
		observe:   ls.monitor.Observe,
		sendProxy: c.SendProxy,
		metrics:   ls.metrics,
		plan:      &plan{key: k, live: ls, active: active, passive: passive, configured: Configured{Weight: c.Weight, State: c.Admin}},
	}
}

// lookup returns the live server for k, or a new one (not yet
// registered, its monitor not started).
func (r *Registry) lookup(k key, active *health.Active, passive health.Passive, log *slog.Logger) *live {
	if r != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
		if ls := r.servers[k]; ls != nil {
			return ls
		}
	}
	st := balance.NewState(k.address)
	ls := &live{state: st, monitor: health.NewMonitor(k.address, st, active, passive, log)}
	if r != nil {
		ls.metrics = r.metrics.Server(k.backend, k.address)
		ls.metrics.SetLive(ls.read)
	}
	return ls
}

// read is what the server's metrics say of its live state.
func (ls *live) read() metrics.ServerLive {
	l := metrics.ServerLive{InFlight: ls.state.InFlight(), State: "up"}
	switch {
	case ls.state.Admin() != balance.Active:
		l.State = ls.state.Admin().String()
	case !ls.state.Healthy():
		l.State = "down"
	}
	l.ChecksOK, l.ChecksFailed = ls.monitor.CheckCounts()
	return l
}

// Commit makes servers (from Server) the live set: new servers start
// their checks, kept ones take the new settings, the others stop.
// Administrative states (drain, disabled) are applied here, overrides
// first, and logged when they change. Servers made by NewServer are
// ignored. Overrides of servers the configuration no longer has stay, in
// case they come back.
func (r *Registry) Commit(servers []*Server) {
	r.mu.Lock()
	defer r.mu.Unlock()
	keep := make(map[key]bool, len(servers))
	for _, s := range servers {
		p := s.plan
		if p == nil {
			continue
		}
		keep[p.key] = true
		p.live.configured = p.configured
		kept := r.servers[p.key] == p.live
		r.servers[p.key] = p.live
		r.applyState(p.key)
		if kept {
			p.live.monitor.Update(p.active, p.passive)
			continue
		}
		p.live.monitor.Start()
	}
	for k, ls := range r.servers {
		if !keep[k] {
			ls.monitor.Stop()
			delete(r.servers, k)
		}
	}
}

// Stop stops the health checks of every server.
func (r *Registry) Stop() { r.Commit(nil) }
