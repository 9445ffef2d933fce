package runtime

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/portcullis/portcullis/internal/compile"
	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/handoff"
	"github.com/portcullis/portcullis/internal/listen"
)

// reload reads the configuration file again (as the unprivileged user),
// compiles it beside the running one and applies it, or refuses it as a
// whole and changes nothing (the bytes it read become those a binary
// upgrade hands off only when it is applied):
//
//  1. compile; a file with problems is refused with its FILE:LINE:COL
//     errors;
//  2. compare the running listeners with those the new graph needs
//     (diffUnits); changes that would drop HTTP/3 connections are refused;
//  3. bind the sockets of new listeners, as the running process may
//     (ports at or above net.ipv4.ip_unprivileged_port_start once
//     privileges are gone); if any cannot be had, close those bound and
//     refuse (ReloadSocketError);
//  4. start the servers of new listeners, and new servers on the sockets
//     of listeners whose kind changes;
//  5. swap the graph: kept listeners serve the new binds from their next
//     connection or request on, servers that stay keep their live state
//     (in-flight counts, health);
//  6. stop the listeners removed or replaced: they stop accepting at once
//     (a replaced one's socket stays open for its replacement) and drain
//     in the background for up to the new global.grace.
//
// In-flight requests finish with the configuration they started with.
//
// rec reads the files: handoff.NewRecorder for a reload, handoff.Replay of
// the running files to apply the running configuration again (after an
// admin override of a weight).
func (s *serving) reload(path string, reg *registry, rec *handoff.Recorder) error {
	if path == "" {
		return errors.New("the embedded configuration has no file to reload")
	}
	read := &deniedReads{read: rec.ReadFile}
	cfg, err := config.Load(path, read.ReadFile)
	g, err := compileAll(cfg, err, read.ReadFile, s.log, reg)
	if err != nil && s.start.proc.dropped && len(read.paths) > 0 {
		return &ReloadFilesError{Err: err, Paths: read.paths, Thread: self()}
	}
	if err != nil {
		return err
	}
	old := s.graph.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	running := make(map[string]unitSpec, len(s.units))
	for key, u := range s.units {
		running[key] = u.spec()
	}
	notes := reloadShards(g, running)
	d, err := diffUnits(running, unitSpecs(g))
	if err != nil {
		return err
	}
	if err := reg.openLogs(g, nil); err != nil {
		return err
	}
	started, err := s.startUnits(d, running)
	if err != nil {
		reg.closeUnused(g)
		return err
	}

	var retired []unit
	for _, us := range d.keep {
		s.units[us.key].update(us)
	}
	for _, us := range d.replace {
		u := s.units[us.key]
		u.release()
		retired = append(retired, u)
		s.units[us.key] = started[us.key]
	}
	for _, us := range d.add {
		s.units[us.key] = started[us.key]
	}
	for _, key := range d.remove {
		retired = append(retired, s.units[key])
		delete(s.units, key)
	}
	s.tickets.UseGraph(g.TLSConfigs())
	s.graph.Store(g)
	files := rec.Files()
	s.files.Store(&files)
	reg.commit(g)
	for _, b := range old.Backends {
		b.CloseIdleConnections()
	}
	for _, u := range retired {
		u.stopAccepting()
	}
	s.retire(retired, g.Grace)
	s.logChanges(d, running, started, notes, g.Grace)
	return nil
}

// deniedReads reads files through read and keeps the paths of those it
// was not allowed to read.
type deniedReads struct {
	read  config.ReadFileFunc
	paths []string
}

// ReadFile reads name through r.read.
func (r *deniedReads) ReadFile(name string) ([]byte, error) {
	b, err := r.read(name)
	if errors.Is(err, fs.ErrPermission) && !slices.Contains(r.paths, name) {
		r.paths = append(r.paths, name)
	}
	return b, err
}

// reloadShards sets the number of shards of every HTTP/3 bind of g: that
// of its running transports for a bind that keeps them, and one for a bind
// that gets HTTP/3 now: the reuseport program that steers packets between
// several shards can only be loaded at startup, while privileged. It
// returns a note for each new bind that wanted more.
func reloadShards(g *compile.Graph, running map[string]unitSpec) []string {
	var notes []string
	for addr, b := range g.BindAt {
		if b.QUIC == nil {
			continue
		}
		if r, ok := running[unitQUIC+" "+addr]; ok {
			b.QUIC.Shards, b.QUIC.Sets = r.bind.QUIC.Shards, r.bind.QUIC.Sets
			if r.bind.Limits != b.Limits {
				notes = append(notes, fmt.Sprintf("HTTP/3 on %s keeps idle_timeout, max_header_bytes and h2_max_streams as they were (%s): its transports hold them; restart or upgrade to change them (HTTP/1.1 and HTTP/2 use the new values)",
					addr, r.bind.Limits))
			}
			continue
		}
		b.QUIC.Shards, b.QUIC.Sets = 1, 1
		if b.QUIC.Configured > 1 {
			notes = append(notes, fmt.Sprintf("QUIC on %s: one shard instead of %d: HTTP/3 added by a reload runs on one UDP socket, because the program that steers packets between shards can only be loaded at startup, while privileged; restart to use %d (an upgrade keeps the sockets), or set quic shards: 1 to silence this",
				addr, b.QUIC.Configured, b.QUIC.Configured))
		}
	}
	sort.Strings(notes)
	return notes
}

// startUnits binds the sockets of the new units, then starts the servers
// of new and replacing units. On any failure it closes everything it
// started and bound, leaves the sockets of replaced units open, and
// returns why.
func (s *serving) startUnits(d unitDiff, running map[string]unitSpec) (map[string]unit, error) {
	var specs []listen.Spec
	for _, us := range d.add {
		specs = append(specs, us.specs...)
	}
	var sockets []*listen.Socket
	if len(specs) > 0 {
		var err error
		sockets, err = listen.Acquire(specs, nil, true)
		if err != nil {
			return nil, s.socketError(err, d, running)
		}
		s.sizeNewBuffers(sockets, d)
	}
	started := map[string]unit{}
	var replacements []unit
	fail := func(err error) (map[string]unit, error) {
		for _, u := range replacements {
			u.release()
		}
		for _, u := range started {
			u.close()
		}
		for _, sock := range sockets {
			sock.File.Close()
		}
		return nil, fmt.Errorf("cannot start the new listeners; nothing was applied: %w", err)
	}
	i := 0
	for _, us := range d.add {
		socks := sockets[i : i+len(us.specs)]
		i += len(us.specs)
		u, err := s.startUnit(us, socks)
		if err != nil {
			return fail(err)
		}
		started[us.key] = u
	}
	for _, us := range d.replace {
		u, err := s.startUnit(us, withSpecs(s.units[us.key].sockets(), us.specs))
		if err != nil {
			return fail(err)
		}
		started[us.key] = u
		replacements = append(replacements, u)
	}
	return started, nil
}

// socketError describes sockets a reload could not bind, with the
// sockets this process still holds that may be in the way.
func (s *serving) socketError(err error, d unitDiff, running map[string]unitSpec) error {
	e := &ReloadSocketError{Err: err, Thread: self()}
	for _, key := range d.remove {
		e.Removing = append(e.Removing, running[key].specs...)
	}
	for u := range s.draining {
		e.Draining = append(e.Draining, u.spec().specs...)
	}
	return e
}

// sizeNewBuffers sizes the buffers of new HTTP/3 sockets, as startup
// does (sizeUDPBuffers); unprivileged, the kernel's limits apply.
func (s *serving) sizeNewBuffers(sockets []*listen.Socket, d unitDiff) {
	for _, us := range d.add {
		if kind, _ := unitKind(us.key); kind != unitQUIC {
			continue
		}
		for _, sock := range sockets {
			if sock.Network == "udp" && sock.Address == us.bind.UDP.Address {
				if err := listen.SizeBuffers(sock.File, us.bind.QUIC.RcvBuf, us.bind.QUIC.SndBuf); err != nil {
					s.log.Warn("QUIC socket buffers", "frontend", sock.Frontend, "address", sock.Address, "warning", err)
					break
				}
			}
		}
	}
}

// retire drains units a reload stopped, in the background, for up to
// grace, then closes what is left. shutdown waits for them too (within
// its own grace) and closes them at its end. The caller holds s.mu.
func (s *serving) retire(units []unit, grace time.Duration) {
	if len(units) == 0 {
		return
	}
	for _, u := range units {
		s.draining[u] = struct{}{}
	}
	var keys []string
	for _, u := range units {
		keys = append(keys, u.spec().key)
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	start := time.Now()
	s.drains.Go(func() {
		defer cancel()
		var wg sync.WaitGroup
		errs := make([]error, len(units))
		for i, u := range units {
			wg.Go(func() {
				u.settle(ctx)
				errs[i] = u.drain(ctx)
			})
		}
		wg.Wait()
		s.mu.Lock()
		for _, u := range units {
			u.close()
			delete(s.draining, u)
		}
		s.mu.Unlock()
		if err := errors.Join(errs...); err != nil {
			s.log.Warn("listeners stopped by the reload: grace period over; closed their remaining connections", "listeners", strings.Join(keys, ", "), "grace", grace, "error", err)
			return
		}
		s.log.Info("listeners stopped by the reload have finished their connections", "listeners", strings.Join(keys, ", "), "took", time.Since(start).Round(time.Millisecond))
	})
}

// logChanges says what a reload did to the listeners.
func (s *serving) logChanges(d unitDiff, running map[string]unitSpec, started map[string]unit, notes []string, grace time.Duration) {
	for _, us := range d.add {
		logListening(started[us.key].sockets(), s.log)
	}
	for _, n := range notes {
		s.log.Warn(n)
	}
	for _, us := range d.replace {
		s.log.Info("listener changed: new servers accept on the same socket; the old ones finish their connections",
			"frontend", us.frontend(), "network", us.specs[0].Network, "address", us.specs[0].Address,
			"was", running[us.key].kind, "now", us.kind, "grace", grace)
	}
	for _, key := range d.remove {
		sp := running[key].specs[0]
		s.log.Info("listener removed: new connections are refused; open ones finish",
			"frontend", sp.Frontend, "network", sp.Network, "address", sp.Address, "serves", sp.Purpose, "grace", grace)
	}
}
