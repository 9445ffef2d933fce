package runtime

import (
	"errors"
	"fmt"
	"github.com/portcullis/portcullis/internal/accesslog"
	"log/slog"
	"os"

	"github.com/portcullis/portcullis/internal/compile"
	"github.com/portcullis/portcullis/internal/handoff"
	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/privilege"
	"github.com/portcullis/portcullis/internal/quiclb"
)

// mustDrop reports whether the process re-executes itself unprivileged:
// started as root with global.user, or as another user that holds a
// capability or lacks no_new_privs. Root without global.user keeps running
// as root (with a warning).
func mustDrop(g *compile.Graph, me privilege.Thread) bool {
	if me.IsRoot() {
		return g.User != nil
	}
	return me.HasCaps() || !me.NoNewPrivs
}

// self returns the privileges of the calling thread.
func self() privilege.Thread {
	t, _ := privilege.Self()
	return t
}

// verifyPrivileges refuses to serve with privileges a drop should have
// removed (dropped says one was made), and warns about running as root
// without global.user.
func verifyPrivileges(me privilege.Thread, dropped bool, log *slog.Logger) error {
	if err := privilege.Verify(me.IsRoot() && !dropped, dropped); err != nil {
		return fmt.Errorf("privileges were not dropped as required; refusing to serve:\n%w", err)
	}
	if me.IsRoot() {
		log.Warn("running as root: set global.user (and global.group) so that portcullis drops to an unprivileged user after binding")
	}
	return nil
}

// dropAndExec hands the sockets, the steering programs and the files read
// so far to a re-executed, unprivileged image of this binary. It returns
// only on error.
func dropAndExec(g *compile.Graph, sockets []*listen.Socket, steer map[string]*quiclb.Steering, files map[string][]byte, exe string, argv []string, me privilege.Thread, log *slog.Logger) error {
	target := privilege.Target{}
	if g.User != nil && me.IsRoot() {
		target = *g.User
	}
	h := &handoff.Handoff{Dropped: true, Executable: exe, Files: files, Shards: g.ShardCounts()}
	logs, err := openLogFiles(g, target)
	if err != nil {
		return err
	}
	h.LogFiles = logs
	env, f, err := h.Write(sockets, steer, handoff.InPlace{})
	if err != nil {
		return err
	}
	defer f.Close()
	log.Debug("dropping privileges", "uid", target.UID, "gid", target.GID, "switch", target.Switch)
	err = privilege.ExecDropped(target, argv, append(os.Environ(), env))
	return errors.Join(err, errors.New("cannot drop privileges"))
}

// openLogFiles opens the access-log files of g while privileged, for the
// process after the drop: a file in a directory that only root may write
// to stays writable through its descriptor. A file created here is given
// to target's user and group.
func openLogFiles(g *compile.Graph, target privilege.Target) (map[string]*os.File, error) {
	uid, gid := -1, -1
	if target.Switch {
		uid, gid = target.UID, target.GID
	}
	files := map[string]*os.File{}
	for to := range g.AccessLogs {
		if !accesslog.IsFile(to) {
			continue
		}
		f, err := accesslog.OpenFile(to, uid, gid)
		if err != nil {
			for _, o := range files {
				o.Close()
			}
			return nil, err
		}
		files[to] = f
	}
	return files, nil
}
