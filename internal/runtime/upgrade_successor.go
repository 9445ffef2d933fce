package runtime

import (
	"errors"
	"slices"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/sys/unix"

	"github.com/portcullis/portcullis/internal/compile"
	"github.com/portcullis/portcullis/internal/handoff"
	"github.com/portcullis/portcullis/internal/quiclb"
)

// The new process's side of a binary upgrade (see upgrade.go): it serves
// the sockets handed off with the running configuration's bytes and the
// old process's keys, serves the other QUIC generation, says when it is
// ready, and watches the old process until it has exited.

// predecessor is the process a binary upgrade replaced with this one.
type predecessor struct {
	pid int
	// gen is the QUIC generation it serves.
	gen  quiclb.Generation
	gone chan struct{}
}

// running reports whether the process has not exited yet.
func (p *predecessor) running() bool {
	select {
	case <-p.gone:
		return false
	default:
		return true
	}
}

// useQUICKeys gives g's HTTP/3 binds the keys the old process's
// transports use, and drops the notes that announce random keys: they are
// not new.
func useQUICKeys(g *compile.Graph, up *handoff.Upgrade) {
	var drop []string
	for addr, k := range up.QUIC {
		b := g.BindAt[addr]
		if b == nil || b.QUIC == nil {
			continue
		}
		reset, token := quic.StatelessResetKey(k.ResetKey), quic.TokenGeneratorKey(k.TokenKey)
		b.QUIC.ResetKey, b.QUIC.TokenKey = &reset, &token
		drop = append(drop, b.QUIC.Notes...)
	}
	g.Notes = slices.DeleteFunc(g.Notes, func(n string) bool { return slices.Contains(drop, n) })
}

// watchPredecessor waits until the process this one replaced has exited,
// then stops forwarding it QUIC datagrams, and clears its record as
// serving its generation if it did not (it was killed): its clients then
// get a stateless reset at once rather than silence.
func (s *serving) watchPredecessor(p *predecessor) {
	s.prev.Store(p)
	go func() {
		waitExit(p.pid)
		close(p.gone)
		s.log.Info("the process this one replaced has exited", "pid", p.pid)
		for addr, u := range s.quicUnits() {
			if u.forward != nil {
				u.forward.StopForwarding()
			}
			if u.steer != nil {
				if err := forgetExited(u.steer, p); err != nil {
					s.log.Warn("QUIC steering: the process this one replaced is still recorded as serving its generation", "address", addr, "pid", p.pid, "error", err)
				}
			}
		}
	}()
}

// forgetExited clears p's record once the kernel no longer knows it (its
// parent may take a moment to reap it).
func forgetExited(st *quiclb.Steering, p *predecessor) error {
	for deadline := time.Now().Add(upgradeTimeout); ; {
		pid, err := st.ServingPID(p.gen)
		if err != nil || pid != p.pid {
			return err
		}
		if forgot, err := st.ForgetExited(p.gen); forgot || err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return errors.New("its process ID still exists")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitExit returns once process pid has exited: a pidfd says so, or,
// where pidfd_open is not available, kill(pid, 0) polled.
func waitExit(pid int) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		for !errors.Is(unix.Kill(pid, 0), unix.ESRCH) {
			time.Sleep(100 * time.Millisecond)
		}
		return
	}
	defer unix.Close(fd)
	for {
		_, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, -1)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}
