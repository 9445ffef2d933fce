package runtime

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/privilege"
	"github.com/portcullis/portcullis/internal/quickstart"
	"github.com/portcullis/portcullis/internal/quiclb"
	"github.com/portcullis/portcullis/internal/systemd"
)

// Options configure Run and Validate.
type Options struct {
	// ConfigPath is the configuration file; empty runs the embedded
	// quickstart.
	ConfigPath string
	// Log receives the process log.
	Log *slog.Logger
	// Stdout receives the quickstart's instructions.
	Stdout io.Writer
	// Argv is the command line, used to re-execute after dropping
	// privileges and to start the new process of a binary upgrade
	// (os.Args).
	Argv []string
	// Version is logged when the process is ready.
	Version string
}

// Validate runs the startup path of Run up to binding: load, validate and
// compile (certificates, keys, users). Problems with the file are a
// config.ErrorList.
func Validate(opt Options) (*Graph, error) {
	cfg, err := config.Load(opt.ConfigPath, nil)
	return compileAll(cfg, err, os.ReadFile, opt.Log, nil)
}

// compileAll compiles what config.Load or config.Parse returned and
// reports the problems of both at once: a file with a typo and a missing
// key file gets both messages.
func compileAll(cfg *config.Config, err error, readFile config.ReadFileFunc, log *slog.Logger, reg *registry) (*Graph, error) {
	if cfg == nil {
		return nil, err
	}
	g, cerr := compile(cfg, readFile, log, reg)
	if err := config.Join(err, cerr); err != nil {
		return nil, err
	}
	return g, nil
}

// Run starts portcullis and serves until SIGTERM or SIGINT, then stops
// gracefully. The lifecycle (DESIGN.md): load and compile → acquire
// sockets (handed over, socket-activated, or bound) → drop privileges by
// re-executing → verify → serve → READY=1. SIGHUP reloads; SIGUSR2 starts
// a binary upgrade (upgrade.go), after which this process finishes its
// connections and exits.
func Run(opt Options) error {
	log := opt.Log
	notifier := systemd.NewNotifier()
	// Catch signals before anything is bound: a SIGHUP, SIGUSR2 or
	// SIGTERM during startup must not kill the process with its default
	// action.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(sigs)

	reg := newRegistry(log)
	h, passed, err := takeHandoff()
	if err != nil {
		return err
	}
	rec := newRecorder()
	readFile := rec.ReadFile
	files := rec.files
	proc := procInfo{exe: executable(h), argv: opt.Argv, configPath: opt.ConfigPath}
	if h != nil {
		readFile = h.ReadFile
		files = h.Files
		proc.dropped = h.Dropped
	}
	var cfg *config.Config
	var instructions string // printed once serving, for the quickstart
	if opt.ConfigPath == "" {
		q, err := quickstart.Start()
		if err != nil {
			return err
		}
		defer q.Close()
		readFile = q.ReadFile
		instructions = q.Instructions()
		cfg, err = config.Parse(quickstart.File, "", q.Config)
		if err != nil {
			return err
		}
	} else {
		cfg, err = config.Load(opt.ConfigPath, readFile)
	}
	g, err := compileAll(cfg, err, readFile, log, reg)
	if err != nil {
		return err
	}
	var up *upgradeHandoff
	if h != nil {
		up = h.Upgrade
	}
	if up != nil {
		up.applyKeys(g)
	}

	sockets, steer, err := acquire(g, h, passed, log)
	if err != nil {
		return err
	}

	me := self()
	if h == nil && mustDrop(g, me) {
		return dropAndExec(g, sockets, steer, files, proc.exe, opt.Argv, me, log)
	}
	if err := privilege.Verify(me.IsRoot() && !proc.dropped, proc.dropped); err != nil {
		closeSteering(steer)
		return fmt.Errorf("privileges were not dropped as required; refusing to serve:\n%w", err)
	}
	if me.IsRoot() {
		log.Warn("running as root: set global.user (and global.group) so that portcullis drops to an unprivileged user after binding")
	}

	st := &startState{steer: steer, files: files, proc: proc}
	if up != nil {
		st.gen, st.ticketKeys = up.Generation, up.TicketKeys
		if st.peers, err = up.peers(); err != nil {
			closeSteering(steer)
			return err
		}
	}
	srv, err := serve(g, sockets, st, log)
	if err != nil {
		return err
	}
	reg.commit(g)
	defer reg.stop()
	for _, n := range g.notes {
		log.Info(n)
	}
	logListening(sockets, log)
	if instructions != "" {
		fmt.Fprint(opt.Stdout, instructions)
	}
	status := fmt.Sprintf("serving %d sockets as %s", len(sockets), strings.SplitN(self().String(), " with", 2)[0])
	srv.announce(up, notifier, status, opt.Version)
	return srv.loop(sigs, notifier, func() error { return srv.reload(opt.ConfigPath, reg) })
}

// announce says the process serves: in the log, and to the service
// manager (as its new main process, after a binary upgrade, which also
// tells the process it replaces).
func (s *serving) announce(up *upgradeHandoff, n *systemd.Notifier, status, version string) {
	var err error
	if up == nil {
		s.log.Info("ready", "status", status, "pid", os.Getpid(), "version", version)
		err = n.Ready(status)
	} else {
		s.watchPredecessor(&predecessor{pid: up.PID, gen: up.Generation.Other(), gone: make(chan struct{})})
		if err := up.tellReady(); err != nil {
			s.log.Warn("upgrade: cannot tell the previous process that this one is ready", "pid", up.PID, "error", err)
		}
		status += fmt.Sprintf(" (upgraded from process %d)", up.PID)
		s.log.Info("ready", "status", status, "pid", os.Getpid(), "version", version, "replaces", up.PID)
		err = n.ReadyMain(os.Getpid(), status)
	}
	if err != nil {
		s.log.Warn("cannot notify the service manager", "error", err)
	}
}

// executable is the path of the executable this process was started
// from, as the first process of the chain resolved it before any
// privilege drop: the new process of a binary upgrade is started from
// the file found there then, which may have been replaced since.
func executable(h *handoff) string {
	if h != nil && h.Executable != "" {
		return h.Executable
	}
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return exe
}

// acquire gets every socket the graph needs while the process is still
// privileged: it loads the QUIC steering programs (which decides how many
// shards and socket sets each HTTP/3 bind gets), binds or takes passed
// sockets, attaches the programs and sizes the UDP buffers; none of that
// can be done after the drop. A re-executed process, or the new process
// of a binary upgrade, takes what the previous one handed over instead.
// It returns the steering programs by address.
func acquire(g *Graph, h *handoff, passed []*listen.Passed, log *slog.Logger) ([]*listen.Socket, map[string]*quiclb.Steering, error) {
	if h != nil {
		g.setQUICSockets(h.Shards, h.Steering)
		sockets, err := listen.Acquire(g.Specs(), passed, false)
		if err != nil {
			return nil, nil, &StartupError{Err: err, Thread: self()}
		}
		steer, err := openSteering(g, h.Steering)
		return sockets, steer, err
	}
	passed, err := listen.Activated()
	if err != nil {
		return nil, nil, &StartupError{Err: err, Thread: self()}
	}
	steer, err := steering(g, passed, log)
	if err != nil {
		return nil, nil, &StartupError{Err: err, Thread: self()}
	}
	sockets, err := listen.Acquire(g.Specs(), passed, true)
	if err != nil {
		closeSteering(steer)
		return nil, nil, &StartupError{Err: err, Thread: self()}
	}
	if err := attachSteering(steer, sockets); err != nil {
		return nil, nil, err
	}
	sizeUDPBuffers(g, sockets, log)
	return sockets, steer, nil
}

// logListening says what each socket serves, once per address.
func logListening(sockets []*listen.Socket, log *slog.Logger) {
	for _, s := range sockets {
		if s.Shard > 0 || s.Set > 0 {
			continue // said with shard 0 of set 0
		}
		attrs := []any{"frontend", s.Frontend, "network", s.Network, "address", s.Address, "serves", s.Purpose, "socket", s.Source}
		if s.Sets > 1 {
			attrs = append(attrs, "shards", s.Shards, "steering", "by connection ID and generation (reuseport eBPF)")
		}
		log.Info("listening", attrs...)
	}
}

// sizeUDPBuffers sets each QUIC socket's buffers to its bind's rcvbuf and
// sndbuf. One warning is enough: every socket meets the same limit.
func sizeUDPBuffers(g *Graph, sockets []*listen.Socket, log *slog.Logger) {
	for _, s := range sockets {
		b := g.binds[s.Address]
		if s.Network != "udp" || b == nil || b.QUIC == nil {
			continue
		}
		if err := listen.SizeBuffers(s.File, b.QUIC.rcvbuf, b.QUIC.sndbuf); err != nil {
			log.Warn("QUIC socket buffers", "frontend", s.Frontend, "address", s.Address, "warning", err)
			return
		}
	}
}

// mustDrop reports whether the process re-executes itself unprivileged:
// started as root with global.user, or as another user that holds a
// capability or lacks no_new_privs. Root without global.user keeps running
// as root (with a warning).
func mustDrop(g *Graph, me privilege.Thread) bool {
	if me.IsRoot() {
		return g.User != nil
	}
	return me.HasCaps() || !me.NoNewPrivs
}

func self() privilege.Thread {
	t, _ := privilege.Self()
	return t
}

// dropAndExec hands the sockets, the steering programs and the files read
// so far to a re-executed, unprivileged image of this binary. It returns
// only on error.
func dropAndExec(g *Graph, sockets []*listen.Socket, steer map[string]*quiclb.Steering, files map[string][]byte, exe string, argv []string, me privilege.Thread, log *slog.Logger) error {
	target := privilege.Target{}
	if g.User != nil && me.IsRoot() {
		target = *g.User
	}
	h := &handoff{Dropped: true, Executable: exe, Files: files, Shards: g.shardCounts()}
	env, f, err := h.write(sockets, steer, inPlace{})
	if err != nil {
		return err
	}
	defer f.Close()
	log.Debug("dropping privileges", "uid", target.UID, "gid", target.GID, "switch", target.Switch)
	err = privilege.ExecDropped(target, argv, append(os.Environ(), env))
	return errors.Join(err, errors.New("cannot drop privileges"))
}
