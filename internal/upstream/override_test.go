package upstream

import (
	"log/slog"
	"testing"

	"github.com/portcullis/portcullis/internal/balance"
	"github.com/portcullis/portcullis/internal/health"
)

// TestOverride: an override wins over the configuration at once (state)
// or in the next graph (weight), survives a new configuration, and
// clearing it gives the configured values back.
func TestOverride(t *testing.T) {
	r := NewRegistry(slog.New(slog.DiscardHandler))
	defer r.Stop()
	conf := ServerConfig{Address: "127.0.0.1:1", Weight: 2, Admin: balance.Active}
	commit := func() *Server {
		s := r.Server("app", conf, nil, health.Passive{}, nil)
		r.Commit([]*Server{s})
		return s
	}
	s := commit()
	drain := balance.Drain
	if r.SetOverride("app", conf.Address, Override{State: &drain}) {
		t.Error("a state override reports a weight change")
	}
	if got := s.Member().State.Admin(); got != balance.Drain {
		t.Errorf("state after the override: %v, want drain at once", got)
	}
	if !r.SetOverride("app", conf.Address, Override{Weight: 7}) {
		t.Error("a weight override does not report a weight change")
	}
	s = commit() // the next graph, as a reload or a replay makes it
	if s.Member().Weight != 7 || s.Configured().Weight != 2 || s.Member().State.Admin() != balance.Drain {
		t.Errorf("after a new configuration: weight %d (configured %d), state %v; want 7 (2), drain", s.Member().Weight, s.Configured().Weight, s.Member().State.Admin())
	}
	if o := r.Overrides(); len(o) != 1 || *o[0].State != balance.Drain || o[0].Weight != 7 {
		t.Errorf("overrides: %+v", o)
	}
	if !r.ClearOverride("app", conf.Address) {
		t.Error("clearing a weight override does not report a weight change")
	}
	if got := s.Member().State.Admin(); got != balance.Active {
		t.Errorf("state after clearing: %v, want the configured active", got)
	}
	if s = commit(); s.Member().Weight != 2 || len(r.Overrides()) != 0 {
		t.Errorf("after clearing: weight %d, overrides %+v", s.Member().Weight, r.Overrides())
	}

	// A change that could not be applied is put back as it was.
	r.PutOverride("app", conf.Address, Override{State: &drain})
	if s.Member().State.Admin() != balance.Drain || len(r.Overrides()) != 1 {
		t.Errorf("put back a drain: state %v, overrides %+v", s.Member().State.Admin(), r.Overrides())
	}
	r.PutOverride("app", conf.Address, Override{})
	if s.Member().State.Admin() != balance.Active || len(r.Overrides()) != 0 {
		t.Errorf("put back no override: state %v, overrides %+v", s.Member().State.Admin(), r.Overrides())
	}

	// Handed to a new registry (a binary upgrade), an override applies
	// to the first configuration.
	r2 := NewRegistry(slog.New(slog.DiscardHandler))
	defer r2.Stop()
	r2.Restore([]ServerOverride{{Backend: "app", Address: conf.Address, Override: Override{State: &drain, Weight: 3}}})
	s2 := r2.Server("app", conf, nil, health.Passive{}, nil)
	r2.Commit([]*Server{s2})
	if s2.Member().Weight != 3 || s2.Member().State.Admin() != balance.Drain {
		t.Errorf("restored: weight %d state %v, want 3 drain", s2.Member().Weight, s2.Member().State.Admin())
	}
}
