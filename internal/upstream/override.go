package upstream

import (
	"cmp"
	"slices"

	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/health"
)

// Override is what an operator set on a server at run time (the admin
// API): it wins over the configuration, and outlives reloads (and, handed
// off, binary upgrades) until cleared.
type Override struct {
	// State, when set, replaces the server's configured state.
	State *balance.Admin
	// Weight, when above 0, replaces the server's configured weight.
	Weight int
}

// IsZero reports whether o overrides nothing.
func (o Override) IsZero() bool { return o.State == nil && o.Weight <= 0 }

// merge returns o with the fields that c sets taken from c.
func (o Override) merge(c Override) Override {
	if c.State != nil {
		o.State = c.State
	}
	if c.Weight > 0 {
		o.Weight = c.Weight
	}
	return o
}

// ServerOverride is one server's override, for listings and handoffs.
type ServerOverride struct {
	Backend, Address string
	Override
}

// Configured is what the configuration gave a server, before overrides.
type Configured struct {
	Weight int
	State  balance.Admin
}

// SetOverride merges o into the override of server address of backend and
// applies its state at once (the next request sees it). It reports
// whether the server's weight changed: the balancers then need the
// configuration applied again (its weights are fixed per graph).
func (r *Registry) SetOverride(backend, address string, o Override) (weightChanged bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := key{backend, address}
	prev := r.overrides[k]
	next := prev.merge(o)
	r.overrides[k] = next
	r.applyState(k)
	return next.Weight != prev.Weight
}

// PutOverride makes o the override of server address of backend (the zero
// Override removes it), as it was before a change that could not be
// applied, and applies its state at once.
func (r *Registry) PutOverride(backend, address string, o Override) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := key{backend, address}
	if o.IsZero() {
		delete(r.overrides, k)
	} else {
		r.overrides[k] = o
	}
	r.applyState(k)
}

// ClearOverride removes the override of a server, which goes back to its
// configured state at once. It reports whether a weight was overridden.
func (r *Registry) ClearOverride(backend, address string) (weightChanged bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := key{backend, address}
	prev, ok := r.overrides[k]
	if !ok {
		return false
	}
	delete(r.overrides, k)
	r.applyState(k)
	return prev.Weight > 0
}

// applyState gives the live server k the state its override or its
// configuration says, and logs a change. r.mu is held.
func (r *Registry) applyState(k key) {
	ls := r.servers[k]
	if ls == nil {
		return
	}
	a, by := ls.configured.State, "configuration"
	if o := r.overrides[k]; o.State != nil {
		a, by = *o.State, "admin override"
	}
	if ls.state.SetAdmin(a) {
		r.log.Info("server state", "backend", k.backend, "server", k.address, "state", a.String(), "by", by)
	}
}

// Overrides lists every override, by backend and address.
func (r *Registry) Overrides() []ServerOverride {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]ServerOverride, 0, len(r.overrides))
	for k, o := range r.overrides {
		out = append(out, ServerOverride{Backend: k.backend, Address: k.address, Override: o})
	}
	slices.SortFunc(out, func(a, b ServerOverride) int {
		return cmp.Or(cmp.Compare(a.Backend, b.Backend), cmp.Compare(a.Address, b.Address))
	})
	return out
}

// Restore sets the overrides a previous process handed off, before the
// first configuration is compiled.
func (r *Registry) Restore(list []ServerOverride) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range list {
		if !o.IsZero() {
			r.overrides[key{o.Backend, o.Address}] = o.Override
		}
	}
}

// override returns the override of k. r may be nil.
func (r *Registry) override(k key) Override {
	if r == nil {
		return Override{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.overrides[k]
}

// Override returns the override of server address of backend (the zero
// Override without one).
func (r *Registry) Override(backend, address string) Override {
	return r.override(key{backend, address})
}

// Configured returns what the configuration gave the server.
func (s *Server) Configured() Configured {
	if s.plan == nil {
		return Configured{Weight: s.member.Weight}
	}
	return s.plan.configured
}

// Checks returns the server's last active health checks, oldest first;
// nil without active checks.
func (s *Server) Checks() []health.Check {
	if s.plan == nil {
		return nil
	}
	return s.plan.live.monitor.Checks()
}
