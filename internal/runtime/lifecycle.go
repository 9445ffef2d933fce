package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/systemd"
)

// loop serves until SIGTERM or SIGINT (or a listener failure), reloading on
// SIGHUP, then stops gracefully within the current configuration's grace.
func (s *serving) loop(sigs <-chan os.Signal, n *systemd.Notifier, reload func() error) error {
	var runErr error
wait:
	for {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				n.Reloading()
				start := time.Now()
				if err := reload(); err != nil {
					s.log.Error("reload refused; the running configuration keeps serving", "error", err)
					n.Ready("reload failed, still serving the previous configuration: " + firstLine(err.Error()))
					continue
				}
				s.log.Info("reloaded", "took", time.Since(start).Round(time.Millisecond))
				n.Ready("serving the reloaded configuration")
				continue
			}
			s.log.Info("stopping", "signal", sig.String(), "grace", s.graph.Load().Config.Global.Grace)
			break wait
		case runErr = <-s.errs:
			s.log.Error("a listener failed; stopping", "error", runErr)
			break wait
		}
	}
	grace := s.graph.Load().Config.Global.Grace
	n.Stopping(fmt.Sprintf("stopping: finishing in-flight requests (up to %s)", grace))
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	start := time.Now()
	if err := s.shutdown(ctx); err != nil {
		s.log.Warn("grace period over; closed the remaining connections", "grace", grace, "error", err)
	} else {
		s.log.Info("stopped", "took", time.Since(start).Round(time.Millisecond))
	}
	return runErr
}

// reload reads the configuration file again (as the unprivileged user),
// compiles it beside the running one and swaps it in atomically. Servers
// that stay keep their live state (in-flight counts, health); drain and
// disabled take effect for the next request; in-flight requests finish on
// the configuration they started with. A configuration that needs a
// socket the process does not hold is refused as a whole.
func (s *serving) reload(path string, reg *registry) error {
	if path == "" {
		return errors.New("the embedded quickstart has no file to reload")
	}
	cfg, err := config.Load(path, nil)
	g, err := compileAll(cfg, err, os.ReadFile, s.log, reg)
	if err != nil {
		return err
	}
	old := s.graph.Load()
	g.setShardCounts(old.shardCounts())
	if err := sameSockets(old, g); err != nil {
		return err
	}
	s.graph.Store(g)
	reg.commit(g.servers)
	for _, b := range old.Backends {
		b.Transport.CloseIdleConnections()
	}
	return nil
}

// sameSockets refuses a configuration whose listeners differ from the
// running ones: portcullis never binds after startup.
func sameSockets(old, g *Graph) error {
	shape := func(g *Graph) []string {
		var out []string
		for _, sp := range g.Specs() {
			out = append(out, fmt.Sprintf("%s %s (%s)", sp.Network, sp.Address, sp.Purpose))
		}
		slices.Sort(out)
		return out
	}
	a, b := shape(old), shape(g)
	if slices.Equal(a, b) {
		return sameL4Settings(old, g)
	}
	return fmt.Errorf("the listeners changed (running: %s; new: %s): a reload cannot add, remove or change a bind; restart portcullis to apply it",
		strings.Join(a, ", "), strings.Join(b, ", "))
}

// sameL4Settings refuses a configuration that changes how a running
// layer-4 listener accepts connections (PROXY headers, timeouts): those
// are fixed when the listener starts. Routes and backends may change.
func sameL4Settings(old, g *Graph) error {
	for addr, ob := range old.binds {
		if was, now := ob.L4.settings(), g.binds[addr].L4.settings(); was != now {
			return fmt.Errorf("frontend %q, %s: a reload cannot change how the listener accepts connections (running: %s; new: %s); restart portcullis to apply it",
				ob.TCP.Frontend, addr, orNone(was), orNone(now))
		}
	}
	for addr, or := range old.relays {
		if nr := g.relays[addr]; nr.IdleTimeout != or.IdleTimeout {
			return fmt.Errorf("frontend %q, udp %s: a reload cannot change idle_timeout of a udp frontend (running: %s; new: %s); restart portcullis to apply it",
				or.Spec.Frontend, addr, or.IdleTimeout, nr.IdleTimeout)
		}
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "plain HTTP accept"
	}
	return s
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
