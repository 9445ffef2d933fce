package runtime

import (
	"crypto/sha256"
	"fmt"
	"os"
	"slices"

	"github.com/portcullis/portcullis/internal/admin"
	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/compile"
	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/handoff"
	"github.com/portcullis/portcullis/internal/upstream"
)

// control is the running process as the admin API sees it
// (admin.Control).
type control struct{ s *serving }

// Status is the process's identity and reload history.
func (c control) Status() admin.Status {
	s := c.s
	st := admin.Status{
		Version:    s.start.version,
		PID:        os.Getpid(),
		Generation: s.start.generation,
		Started:    s.since,
		Config:     admin.Config{Path: s.start.proc.configPath},
		Overrides:  []admin.Override{},
	}
	if b, ok := (*s.files.Load())[s.start.proc.configPath]; ok {
		st.Config.Digest = fmt.Sprintf("sha256:%x", sha256.Sum256(b))
	}
	h := &s.history
	h.mu.Lock()
	st.Reloads = admin.Reloads{Total: h.total, Failed: h.failed, LastError: h.lastErr}
	if !h.lastSuccess.IsZero() {
		st.Reloads.LastSuccess = h.lastSuccess.UTC().Format("2006-01-02T15:04:05Z07:00")
	}
	h.mu.Unlock()
	if reg := s.start.reg; reg != nil {
		for _, o := range reg.servers.Overrides() {
			ao := admin.Override{Backend: o.Backend, Server: o.Address, Weight: o.Weight}
			if o.State != nil {
				ao.State = o.State.String()
			}
			st.Overrides = append(st.Overrides, ao)
		}
	}
	return st
}

// Frontends lists the running graph's frontends.
func (c control) Frontends() []admin.Frontend {
	g := c.s.graph.Load()
	out := make([]admin.Frontend, 0, len(g.Frontends))
	for _, f := range g.Frontends {
		af := admin.Frontend{Name: f.Name, Mode: f.Mode, Binds: []admin.Bind{}}
		for _, b := range f.Binds {
			af.Binds = append(af.Binds, admin.Bind{Address: b.TCP.Address, Protocols: protocols(b)})
		}
		for _, r := range f.Relays {
			af.Binds = append(af.Binds, admin.Bind{Address: r.Spec.Address, Protocols: []string{"udp"}})
		}
		out = append(out, af)
	}
	return out
}

// protocols names what a bind serves.
func protocols(b *compile.Bind) []string {
	var out []string
	if b.Handler != nil {
		out = append(out, "http/1.1")
		switch {
		case b.TLS == nil:
			out = append(out, "h2c")
		case slices.Contains(b.TLS.NextProtos, "h2"):
			out = append(out, "h2")
		}
		if b.QUIC != nil {
			out = append(out, "h3")
		}
	}
	if b.L4 != nil {
		out = append(out, "tcp")
	}
	return out
}

// Backends lists the running graph's backends and their servers.
func (c control) Backends() []admin.Backend {
	g := c.s.graph.Load()
	out := make([]admin.Backend, 0, len(g.Upstreams))
	for _, b := range g.Upstreams {
		ab := admin.Backend{Name: b.Name(), Algorithm: string(b.Algorithm()), Servers: []admin.Server{}}
		for _, srv := range b.Servers() {
			as := server(srv)
			if reg := c.s.start.reg; reg != nil {
				as.Override = override(reg.servers.Override(b.Name(), srv.Address()))
			}
			ab.Servers = append(ab.Servers, as)
		}
		out = append(out, ab)
	}
	return out
}

// server is one server's live state for the admin API.
func server(srv *upstream.Server) admin.Server {
	m := srv.Member()
	st := m.State
	as := admin.Server{
		Address:          srv.Address(),
		Admin:            st.Admin().String(),
		Healthy:          st.Healthy(),
		Weight:           m.Weight,
		ConfiguredWeight: srv.Configured().Weight,
		InFlight:         st.InFlight(),
		Checks:           []admin.Check{},
	}
	switch {
	case st.Admin() != balance.Active:
		as.State = as.Admin
	case st.Healthy():
		as.State = "up"
	default:
		as.State = "down"
	}
	for _, ch := range srv.Checks() {
		as.Checks = append(as.Checks, admin.Check{Time: ch.Time, OK: ch.OK, Error: ch.Err})
		if !ch.OK {
			as.LastError = ch.Err
		}
	}
	return as
}

// override is o for the admin API; nil for none.
func override(o upstream.Override) *admin.Change {
	if o.IsZero() {
		return nil
	}
	c := &admin.Change{Weight: o.Weight}
	if o.State != nil {
		c.State = o.State.String()
	}
	return c
}

// find returns the running server address of backend, or a
// *admin.NotFoundError.
func (c control) find(backend, address string) error {
	g := c.s.graph.Load()
	var names []string
	for _, b := range g.Upstreams {
		names = append(names, b.Name())
		if b.Name() != backend {
			continue
		}
		var addrs []string
		for _, srv := range b.Servers() {
			if srv.Address() == address {
				return nil
			}
			addrs = append(addrs, srv.Address())
		}
		return &admin.NotFoundError{What: "server", Name: backend + "/" + address, Known: addrs}
	}
	return &admin.NotFoundError{What: "backend", Name: backend, Known: names}
}

// SetServer overrides a server's state and/or weight. A new weight
// applies the running configuration again (its balancers hold the
// weights); a state applies at once.
func (c control) SetServer(backend, address string, ch admin.Change) error {
	if err := c.find(backend, address); err != nil {
		return err
	}
	var o upstream.Override
	if ch.State != "" {
		a, err := balance.ParseAdmin(ch.State)
		if err != nil {
			return err
		}
		o.State = &a
	}
	if ch.Weight != 0 {
		if ch.Weight < 1 || ch.Weight > config.MaxWeight {
			return fmt.Errorf("weight %d: want 1 to %d", ch.Weight, config.MaxWeight)
		}
		o.Weight = ch.Weight
	}
	reg := c.s.start.reg
	if reg == nil {
		return fmt.Errorf("this process keeps no server state")
	}
	if o.Weight > 0 && c.s.start.proc.configPath == "" {
		return fmt.Errorf("the embedded quickstart cannot change weights: a weight applies by compiling the configuration file again, and it has none (a state can be changed)")
	}
	prev := reg.servers.Override(backend, address)
	if reg.servers.SetOverride(backend, address, o) {
		return c.replay(reg, backend, address, prev)
	}
	return nil
}

// ClearServer removes a server's override.
func (c control) ClearServer(backend, address string) error {
	if err := c.find(backend, address); err != nil {
		return err
	}
	reg := c.s.start.reg
	if reg == nil {
		return nil
	}
	prev := reg.servers.Override(backend, address)
	if reg.servers.ClearOverride(backend, address) {
		return c.replay(reg, backend, address, prev)
	}
	return nil
}

// replay applies the running configuration again, with the overrides; if
// that fails, the server's override goes back to prev.
func (c control) replay(reg *registry, backend, address string, prev upstream.Override) error {
	if err := c.s.request(true); err != nil {
		reg.servers.PutOverride(backend, address, prev)
		return fmt.Errorf("applying the new weight failed, nothing changed: %w", err)
	}
	return nil
}

// Reload reloads the configuration file.
func (c control) Reload() error { return c.s.request(false) }

// giveOverrides lists the servers' overrides for the next process of a
// binary upgrade.
func giveOverrides(reg *registry) []handoff.Override {
	if reg == nil {
		return nil
	}
	var out []handoff.Override
	for _, o := range reg.servers.Overrides() {
		ho := handoff.Override{Backend: o.Backend, Address: o.Address, Weight: o.Weight}
		if o.State != nil {
			ho.State = o.State.String()
		}
		out = append(out, ho)
	}
	return out
}

// takeOverrides turns the overrides a previous process handed off back
// into upstream's; a state this version does not know is dropped.
func takeOverrides(list []handoff.Override) []upstream.ServerOverride {
	var out []upstream.ServerOverride
	for _, o := range list {
		so := upstream.ServerOverride{Backend: o.Backend, Address: o.Address, Override: upstream.Override{Weight: o.Weight}}
		if a, err := balance.ParseAdmin(o.State); err == nil && o.State != "" {
			so.State = &a
		}
		out = append(out, so)
	}
	return out
}
