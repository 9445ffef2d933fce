package runtime

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"time"

	"github.com/portcullis/portcullis/internal/h3"
	"github.com/portcullis/portcullis/internal/handoff"
	"github.com/portcullis/portcullis/internal/quiclb"
	"github.com/portcullis/portcullis/internal/systemd"
)

// A binary upgrade (SIGUSR2; docs/operations.md, "Binary upgrade") starts
// a new process from the executable at the path this one was started
// from, hands it every listening socket and what it needs to serve the
// running configuration (package handoff), waits until it serves, then
// stops accepting and finishes its own connections. This file is the old
// process's side; upgrade_successor.go is the new one's.

// upgradeTimeout bounds the wait for the new process to be ready.
const upgradeTimeout = 30 * time.Second

// pendingUpgrade is a new process started, not ready yet.
type pendingUpgrade struct {
	cmd *exec.Cmd
	gen quiclb.Generation
	// ready is the read end of the readiness pipe.
	ready *os.File
	// peers are this process's ends of the socket pairs over which the
	// two processes forward each other's QUIC datagrams, by address.
	peers map[string]*net.UnixConn
	// exited is closed once the new process has exited; err says how.
	exited chan struct{}
	err    error
}

// upgrade starts the new process and waits until it serves. It returns
// true once it does: this process has then stopped accepting, and the
// caller lets it finish its connections (stopForUpgrade). Otherwise it
// says why (log and service status) and this process goes on serving.
func (s *serving) upgrade(n *systemd.Notifier) bool {
	start := time.Now()
	up, err := s.startUpgrade()
	if err != nil {
		s.log.Error("upgrade refused; this process keeps serving", "error", err)
		n.Status("upgrade refused, still serving: " + firstLine(err.Error()))
		s.metrics().Upgraded(false)
		return false
	}
	pid := up.cmd.Process.Pid
	s.log.Info("upgrade: started the new process", "pid", pid, "executable", s.start.proc.exe, "generation", up.gen)
	n.Status(fmt.Sprintf("upgrading: waiting for the new process %d", pid))
	if err := up.waitReady(upgradeTimeout); err != nil {
		s.abortUpgrade(up)
		s.log.Error("upgrade failed; this process keeps serving", "pid", pid, "error", err)
		n.Status("upgrade failed, still serving: " + firstLine(err.Error()))
		s.metrics().Upgraded(false)
		return false
	}
	up.ready.Close()
	s.stopAccepting()
	for addr, peer := range up.peers {
		if u := s.quicUnits()[addr]; u != nil {
			if err := u.releaseSocket(peer); err != nil {
				s.log.Warn("upgrade: the new process did not take the HTTP/3 socket", "address", addr, "error", err)
			}
		} else {
			peer.Close()
		}
	}
	s.log.Info("upgrade: the new process serves; this one stopped accepting and finishes its connections",
		"pid", pid, "took", time.Since(start).Round(time.Millisecond), "grace", s.graph.Load().Grace)
	return true
}

// quicUnits returns the running HTTP/3 units by bind address.
func (s *serving) quicUnits() map[string]*quicUnit {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]*quicUnit{}
	for key, u := range s.units {
		if q, ok := u.(*quicUnit); ok {
			_, addr := unitKind(key)
			out[addr] = q
		}
	}
	return out
}

// canUpgrade says why an upgrade cannot start now, or nil. It returns the
// generation the new process is to serve.
func (s *serving) canUpgrade(units map[string]*quicUnit) (quiclb.Generation, error) {
	p := s.start.proc
	next := s.start.gen.Other()
	switch {
	case p.configPath == "":
		return next, errors.New("a process serving an embedded configuration cannot be upgraded: restart it")
	case p.exe == "":
		return next, errors.New("the path this process was started from is unknown")
	}
	if prev := s.prev.Load(); prev != nil && prev.running() {
		return next, fmt.Errorf("an upgrade is in progress: process %d, which the previous upgrade replaced, still finishes its connections (at most global.grace); upgrade again once it has exited", prev.pid)
	}
	for addr, u := range units {
		if u.steer == nil {
			continue
		}
		g, err := u.steer.NextGeneration()
		if err != nil {
			return next, fmt.Errorf("QUIC on %s: %w", addr, err)
		}
		if g != next {
			return next, fmt.Errorf("QUIC on %s: the steering program's next generation is %d, this process serves %d", addr, g, s.start.gen)
		}
	}
	return next, nil
}

// startUpgrade starts the new process with the handoff.
func (s *serving) startUpgrade() (*pendingUpgrade, error) {
	units := s.quicUnits()
	next, err := s.canUpgrade(units)
	if err != nil {
		return nil, err
	}
	p := s.start.proc
	up := &handoff.Upgrade{PID: os.Getpid(), Generation: next, QUIC: map[string]handoff.QUICBind{}, TicketKeys: s.tickets.Current(),
		Process: s.start.generation + 1, Overrides: giveOverrides(s.start.reg), Metrics: s.metrics().Snapshot()}
	h := &handoff.Handoff{Dropped: p.dropped, Executable: p.exe, Files: *s.files.Load(), Shards: s.graph.Load().ShardCounts(), Upgrade: up}
	if s.logFiles != nil {
		// The new process writes to the same files, whatever the
		// permissions of their directories (docs/logging.md).
		h.LogFiles = s.logFiles()
	}
	pu := &pendingUpgrade{gen: next, peers: map[string]*net.UnixConn{}, exited: make(chan struct{})}
	c := &handoff.ToChild{}
	defer c.Close()
	fail := func(err error) (*pendingUpgrade, error) {
		pu.closeAll()
		return nil, err
	}

	r, w, err := os.Pipe()
	if err != nil {
		return fail(fmt.Errorf("readiness pipe: %w", err))
	}
	pu.ready = r
	up.Ready, err = c.Pass(w)
	w.Close()
	if err != nil {
		return fail(err)
	}
	steer, err := pu.passQUIC(units, up, c)
	if err != nil {
		return fail(err)
	}
	env, mem, err := h.Write(s.sockets(), steer, c)
	if err != nil {
		return fail(err)
	}
	defer mem.Close()

	cmd := exec.Command(p.exe)
	cmd.Args = p.argv
	cmd.Env = append(os.Environ(), env)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.ExtraFiles = c.Files()
	if err := cmd.Start(); err != nil {
		return fail(fmt.Errorf("start %s: %w", p.exe, err))
	}
	pu.cmd = cmd
	go func() {
		pu.err = cmd.Wait()
		close(pu.exited)
	}()
	return pu, nil
}

// passQUIC records in up the keys of each HTTP/3 unit, and how its
// datagrams reach the new process: through the steering program, which
// it returns by address for the handoff, or, for a bind with one
// unsteered socket, over a socket pair whose other end it passes through
// c and keeps in pu.peers.
func (pu *pendingUpgrade) passQUIC(units map[string]*quicUnit, up *handoff.Upgrade, c *handoff.ToChild) (map[string]*quiclb.Steering, error) {
	steer := map[string]*quiclb.Steering{}
	for addr, u := range units {
		k := u.keys
		switch {
		case u.steer != nil:
			steer[addr] = u.steer
		case u.forward != nil:
			mine, theirs, err := h3.SocketPair()
			if err != nil {
				return nil, fmt.Errorf("QUIC on %s: forwarding socket pair: %w", addr, err)
			}
			k.Forward, err = c.Pass(theirs)
			theirs.Close()
			if err == nil {
				pu.peers[addr], err = h3.PeerConn(mine)
			} else {
				mine.Close()
			}
			if err != nil {
				return nil, fmt.Errorf("QUIC on %s: forwarding socket pair: %w", addr, err)
			}
		}
		up.QUIC[addr] = k
	}
	return steer, nil
}

// waitReady waits until the new process says it serves, exits, or
// timeout passes.
func (pu *pendingUpgrade) waitReady(timeout time.Duration) error {
	ready := make(chan bool, 1)
	go func() { ready <- handoff.ReadReady(pu.ready) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case ok := <-ready:
		if ok {
			return nil
		}
		// It closed the pipe without a word: it is exiting.
		select {
		case <-pu.exited:
		case <-t.C:
			return fmt.Errorf("the new process closed its readiness pipe and was still running after %s; it was killed", timeout)
		}
		return fmt.Errorf("the new process exited before it was ready (%v); its log says why", pu.err)
	case <-pu.exited:
		return fmt.Errorf("the new process exited before it was ready (%v); its log says why", pu.err)
	case <-t.C:
		return fmt.Errorf("the new process was not ready within %s; it was killed", timeout)
	}
}

// abortUpgrade kills a new process that did not become ready, waits for
// it, and undoes what it may have changed: the current generation of the
// steering programs, and its record as serving the other one.
func (s *serving) abortUpgrade(pu *pendingUpgrade) {
	pu.cmd.Process.Kill()
	<-pu.exited
	pu.closeAll()
	for addr, u := range s.quicUnits() {
		if u.steer == nil {
			continue
		}
		if cur, err := u.steer.Generation(); err == nil && cur != u.gen {
			if err := u.steer.SetGeneration(u.gen); err != nil {
				s.log.Error("upgrade: cannot make this process's generation current again", "address", addr, "error", err)
			}
		}
		if _, err := u.steer.ForgetExited(pu.gen); err != nil {
			s.log.Warn("upgrade: steering", "address", addr, "error", err)
		}
	}
}

// closeAll closes this process's ends of the readiness pipe and of the
// forwarding socket pairs.
func (pu *pendingUpgrade) closeAll() {
	if pu.ready != nil {
		pu.ready.Close()
	}
	for _, p := range pu.peers {
		p.Close()
	}
}
