package runtime

import (
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/portcullis/portcullis/internal/accesslog"
	"github.com/portcullis/portcullis/internal/compile"
)

// AccessLog returns the writer of access-log destination to: the running
// one, kept across reloads so that no line is lost or written twice, or
// a new one, opened only once a graph that uses it is about to serve
// (openLogs). A nil registry makes writers that are never opened
// (compile.Live).
func (r *registry) AccessLog(to string) *accesslog.Writer {
	if r == nil {
		return accesslog.NewWriter(to, 0, slog.New(slog.DiscardHandler))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if w := r.logs[to]; w != nil {
		return w
	}
	return accesslog.NewWriter(to, 0, r.log)
}

// openLogs opens the access logs of g that are not open yet (a file is
// created, as the user the process runs as). On failure it closes those
// it opened: the graph does not serve.
//
// passed are files opened before a privilege drop (handoff.LogFiles), by
// path: a writer of the same path takes its file; the others are closed.
func (r *registry) openLogs(g *compile.Graph, passed map[string]*os.File) error {
	r.mu.Lock()
	running := r.logs
	r.mu.Unlock()
	for to, f := range passed {
		if w := g.AccessLogs[to]; w != nil && running[to] != w {
			w.OpenWith(f)
		} else {
			f.Close()
		}
	}
	var opened []*accesslog.Writer
	for to, w := range g.AccessLogs {
		if running[to] == w {
			continue
		}
		if err := w.Open(); err != nil {
			for _, o := range opened {
				o.Close()
			}
			return err
		}
		opened = append(opened, w)
	}
	return nil
}

// closeUnused closes the writers of g that the running configuration
// does not use (g is a graph that will not serve: a refused reload).
func (r *registry) closeUnused(g *compile.Graph) {
	r.mu.Lock()
	running := r.logs
	r.mu.Unlock()
	for to, w := range g.AccessLogs {
		if running[to] != w {
			w.Close()
		}
	}
}

// commitLogs makes the access logs of g (nil: none) the running ones and
// closes, after flushing them, those no longer used: at once when g is
// nil (the process stops, its connections are over), else after g's
// grace, so that the requests the replaced configuration still serves
// get their lines.
func (r *registry) commitLogs(g *compile.Graph) {
	next := map[string]*accesslog.Writer{}
	var wait time.Duration
	if g != nil {
		next, wait = g.AccessLogs, g.Grace+time.Second
	}
	r.mu.Lock()
	old := r.logs
	r.logs = next
	r.mu.Unlock()
	for to, w := range old {
		switch {
		case next[to] == w:
		case wait > 0:
			time.AfterFunc(wait, func() { w.Close() })
		default:
			w.Close()
		}
	}
}

// reopenLogs reopens every access-log file (SIGUSR1, after logrotate
// moved them away).
func (r *registry) reopenLogs() error {
	r.mu.Lock()
	logs := r.logs
	r.mu.Unlock()
	var errs []error
	for _, w := range logs {
		errs = append(errs, w.Reopen())
	}
	return errors.Join(errs...)
}

// logFiles returns the open access-log files, by path, for the new
// process of a binary upgrade.
func (r *registry) logFiles() map[string]*os.File {
	r.mu.Lock()
	defer r.mu.Unlock()
	files := map[string]*os.File{}
	for to, w := range r.logs {
		if f := w.File(); f != nil {
			files[to] = f
		}
	}
	return files
}
