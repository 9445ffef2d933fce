package runtime

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/portcullis/portcullis/internal/systemd"
)

// loop serves until SIGTERM or SIGINT (or a listener failure), reloading on
// SIGHUP and reopening the access logs on SIGUSR1, then stops gracefully within the current configuration's grace.
// On SIGUSR2 it starts a binary upgrade; once the new process serves,
// this one stops accepting, finishes its connections within grace and
// returns (signals that arrive meanwhile are left to the new process).
func (s *serving) loop(sigs <-chan os.Signal, n *systemd.Notifier, reload func() error) error {
	var runErr error
	upgraded := false
wait:
	for {
		select {
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
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
		case runErr = <-s.errs:
			s.log.Error("a listener failed; stopping", "error", runErr)
			break wait
		}
	}
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
