package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/portcullis/portcullis/internal/systemd"
)

// loop serves until SIGTERM or SIGINT (or a listener failure), reloading on
// SIGHUP and reopening the access logs on SIGUSR1, then stops gracefully within the current configuration's grace.
// On SIGUSR2 it starts a binary upgrade; once the new process serves,
// this one stops accepting, finishes its connections within grace and
// returns (signals that arrive meanwhile are left to the new process).
//
// reload(false) reloads the configuration file; reload(true) applies the
// running configuration again, from the bytes it was read from. Requests
// for either (the admin API) arrive on s.requests.
func (s *serving) loop(sigs <-chan os.Signal, n *systemd.Notifier, reload func(replay bool) error) error {
	var runErr error
	upgraded := false
wait:
	for {
		select {
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				s.reloadNow(n, reload, false)
				continue
			case syscall.SIGUSR1:
				s.reopen()
				continue
			case syscall.SIGUSR2:
				if upgraded = s.upgrade(n); upgraded {
					break wait
				}
				continue
			}
			s.log.Info("stopping", "signal", sig.String(), "grace", s.graph.Load().Grace)
			break wait
		case req := <-s.requests:
			req.done <- s.reloadNow(n, reload, req.replay)
			continue
		case runErr = <-s.errs:
			s.log.Error("a listener failed; stopping", "error", runErr)
			break wait
		}
	}
	close(s.stopping)
	grace := s.graph.Load().Grace
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	start := time.Now()
	var err error
	if upgraded {
		// The new process is the service's main process now: its status
		// is the one to show.
		err = s.stopForUpgrade(ctx)
	} else {
		n.Stopping(fmt.Sprintf("stopping: finishing in-flight requests (up to %s)", grace))
		err = s.shutdown(ctx)
	}
	if err != nil {
		s.log.Warn("grace period over; closed the remaining connections", "grace", grace, "error", err)
	} else {
		s.log.Info("stopped", "took", time.Since(start).Round(time.Millisecond))
	}
	return runErr
}

// reloadRequest asks the loop to reload (replay false) or to apply the
// running configuration again (replay true), and to send the result on
// done.
type reloadRequest struct {
	replay bool
	done   chan error
}

// reloadNow reloads (or replays) and records the outcome. A replay only
// applies what is already running, with an admin override: it is not
// counted as a reload.
func (s *serving) reloadNow(n *systemd.Notifier, reload func(replay bool) error, replay bool) error {
	if replay {
		return reload(true)
	}
	n.Reloading()
	start := time.Now()
	err := reload(false)
	s.history.record(err)
	s.metrics().Reloaded(err == nil)
	if err != nil {
		s.log.Error("reload refused; the running configuration keeps serving", "error", err)
		n.Ready("reload failed, still serving the previous configuration: " + firstLine(err.Error()))
		return err
	}
	s.log.Info("reloaded", "took", time.Since(start).Round(time.Millisecond))
	n.Ready("serving the reloaded configuration")
	return nil
}

// request asks the loop for a reload or a replay and waits for its
// result.
func (s *serving) request(replay bool) error {
	req := reloadRequest{replay: replay, done: make(chan error, 1)}
	select {
	case s.requests <- req:
	case <-s.stopping:
		return errStopping
	}
	return <-req.done // the loop answers every request it took
}

// errStopping is a request that came while the process stops.
var errStopping = errors.New("the process is stopping")

// reloadHistory counts the reloads since the process started.
type reloadHistory struct {
	mu          sync.Mutex
	total       int
	failed      int
	lastSuccess time.Time
	lastErr     string
}

func (h *reloadHistory) record(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.total++
	if err != nil {
		h.failed++
		h.lastErr = err.Error()
		return
	}
	h.lastSuccess, h.lastErr = time.Now(), ""
}

// reopen reopens the access-log files (SIGUSR1: logrotate moved them).
func (s *serving) reopen() {
	if s.reopenLogs == nil {
		return
	}
	if err := s.reopenLogs(); err != nil {
		s.log.Error("access log: reopening failed; lines go to the file as it was", "error", err)
		return
	}
	s.log.Info("access logs reopened")
}

// firstLine returns s up to its first newline.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
