// Package runtime runs the lifecycle of a portcullis process: it loads
// and compiles a configuration (package compile), acquires every socket
// while privileged (binding, or taking systemd's or a predecessor's),
// drops privileges, starts one unit per socket (a TCP bind, the shards of
// an HTTP/3 bind, a UDP relay) and, on signals, reloads, hands off to a
// new process for a binary upgrade, or stops gracefully. It wires
// listeners to the protocols' servers (accept, httpserver, l4, h3); how a
// protocol is served is theirs. docs/architecture.md is the map.
package runtime

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/portcullis/portcullis/internal/compile"
	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/h3"
	"github.com/portcullis/portcullis/internal/handoff"
	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/systemd"
)

// Options configure Run and Validate.
type Options struct {
	// ConfigPath is the configuration file: compiled at start, again on
	// each reload (SIGHUP), and its bytes handed to the new process of a
	// binary upgrade. Empty: Run serves Embedded.
	ConfigPath string
	// Embedded is the configuration Run serves when ConfigPath is empty
	// (the command's quickstart). It has no file to reload, and a process
	// serving it cannot be upgraded. Validate ignores it.
	Embedded *Embedded
	// Log receives the process log.
	Log *slog.Logger
	// Argv is the command line, used to re-execute after dropping
	// privileges and to start the new process of a binary upgrade
	// (os.Args).
	Argv []string
	// Version is logged when the process is ready.
	Version string
	// Serving, if not nil, is called once every listener serves, before
	// the service manager hears READY=1 (the quickstart prints its
	// instructions there).
	Serving func()
}

// Embedded is a configuration that is not read from a file.
type Embedded struct {
	// Name is the file name its errors give (FILE:LINE:COL).
	Name string
	// Data is the configuration, YAML.
	Data []byte
	// ReadFile reads the files it names (certificates, keys).
	ReadFile config.ReadFileFunc
}

// errNoConfig is Run's error without a file or an embedded configuration.
var errNoConfig = errors.New("no configuration: give a file (Options.ConfigPath) or an embedded configuration")

// Validate runs the startup path of Run up to binding: load, validate and
// compile (certificates, keys, users). Problems with the file are a
// config.ErrorList.
func Validate(opt Options) (*compile.Graph, error) {
	cfg, err := config.Load(opt.ConfigPath, nil)
	return compileAll(cfg, err, os.ReadFile, opt.Log, nil)
}

// compileAll compiles what config.Load or config.Parse returned and
// reports the problems of both at once: a file with a typo and a missing
// key file gets both messages.
func compileAll(cfg *config.Config, err error, readFile config.ReadFileFunc, log *slog.Logger, reg *registry) (*compile.Graph, error) {
	if cfg == nil {
		return nil, err
	}
	g, cerr := compile.Compile(cfg, readFile, log, reg)
	if err := config.Join(err, cerr); err != nil {
		return nil, err
	}
	return g, nil
}

// Run starts portcullis and serves until SIGTERM or SIGINT, then stops
// gracefully. The lifecycle (DESIGN.md): load and compile → acquire
// sockets (handed off, socket-activated, or bound) → drop privileges by
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
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR2, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	reg := newRegistry(log)
	h, passed, err := handoff.Take()
	if err != nil {
		return err
	}
	reg.useMetrics(h)
	if h != nil && h.Upgrade != nil {
		reg.servers.Restore(takeOverrides(h.Upgrade.Overrides))
	}
	g, files, err := load(opt, h, reg)
	if err != nil {
		return err
	}
	var up *handoff.Upgrade
	if h != nil && h.Upgrade != nil {
		up = h.Upgrade
		useQUICKeys(g, up)
	}
	sockets, steer, err := acquire(g, h, passed, log)
	if err != nil {
		return err
	}
	proc := procInfo{exe: executable(h), argv: opt.Argv, configPath: opt.ConfigPath, dropped: h != nil && h.Dropped}
	me := self()
	if h == nil && mustDrop(g, me) {
		return dropAndExec(g, sockets, steer, files, proc.exe, opt.Argv, me, log)
	}
	if err := verifyPrivileges(me, proc.dropped, log); err != nil {
		closeSteering(steer)
		return err
	}
	st := &startState{steer: steer, files: files, proc: proc, reg: reg, version: opt.Version}
	if err := st.takeUpgrade(up); err != nil {
		closeSteering(steer)
		return err
	}
	// Access logs are opened by the process that serves, but for the
	// files opened before a privilege drop, which it takes over
	// (docs/logging.md).
	var passedLogs map[string]*os.File
	if h != nil {
		passedLogs = h.LogFiles
	}
	if err := reg.openLogs(g, passedLogs); err != nil {
		closeSteering(steer)
		return err
	}
	srv, err := serve(g, sockets, st, log)
	if err != nil {
		reg.closeUnused(g)
		return err
	}
	reg.commit(g)
	defer reg.stop()
	srv.reopenLogs, srv.logFiles = reg.reopenLogs, reg.logFiles
	srv.started(g, sockets, up, notifier, opt)
	return srv.loop(sigs, notifier, func(replay bool) error {
		rec := handoff.NewRecorder()
		if replay {
			rec = handoff.Replay(*srv.files.Load())
		}
		return srv.reload(opt.ConfigPath, reg, rec)
	})
}

// load compiles the configuration to start with: the file, or the
// embedded configuration. The files it names are read from the file
// system, or, after a privilege drop or for the new process of a binary
// upgrade, from the handoff h. It returns the graph and the bytes of the
// files read, for the next handoff.
func load(opt Options, h *handoff.Handoff, reg *registry) (*compile.Graph, map[string][]byte, error) {
	rec := handoff.NewRecorder()
	readFile, files := rec.ReadFile, rec.Files()
	if h != nil {
		readFile, files = h.ReadFile, h.Files
	}
	var cfg *config.Config
	var err error
	switch e := opt.Embedded; {
	case opt.ConfigPath != "":
		cfg, err = config.Load(opt.ConfigPath, readFile)
	case e != nil:
		readFile = e.ReadFile
		if cfg, err = config.Parse(e.Name, "", e.Data); err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, errNoConfig
	}
	g, err := compileAll(cfg, err, readFile, opt.Log, reg)
	return g, files, err
}

// takeUpgrade sets, for the new process of a binary upgrade (up not nil),
// the QUIC generation, ticket keys and forwarding socket pairs the old
// process handed off.
func (st *startState) takeUpgrade(up *handoff.Upgrade) error {
	if up == nil {
		return nil
	}
	st.gen, st.ticketKeys, st.generation = up.Generation, up.TicketKeys, up.Process
	st.peers = map[string]*net.UnixConn{}
	for addr, f := range up.Peers() {
		c, err := h3.PeerConn(f)
		if err != nil {
			for _, c := range st.peers {
				c.Close()
			}
			return fmt.Errorf("handoff: QUIC on %s: %w", addr, err)
		}
		st.peers[addr] = c
	}
	return nil
}

// started says what the process serves: the graph's notes, each
// listening socket, the caller's Serving hook, then readiness.
func (s *serving) started(g *compile.Graph, sockets []*listen.Socket, up *handoff.Upgrade, n *systemd.Notifier, opt Options) {
	for _, note := range g.Notes {
		s.log.Info(note)
	}
	logListening(sockets, s.log)
	if opt.Serving != nil {
		opt.Serving()
	}
	specs := make([]listen.Spec, len(sockets))
	for i, s := range sockets {
		specs[i] = s.Spec
	}
	status := fmt.Sprintf("serving %s, as %s", listen.Tally(specs), strings.SplitN(self().String(), " with", 2)[0])
	s.announce(up, n, status, opt.Version)
}

// announce says the process serves: in the log, and to the service
// manager (as its new main process, after a binary upgrade, which also
// tells the process it replaces).
func (s *serving) announce(up *handoff.Upgrade, n *systemd.Notifier, status, version string) {
	var err error
	if up == nil {
		s.log.Info("ready", "status", status, "pid", os.Getpid(), "version", version)
		err = n.Ready(status)
	} else {
		s.metrics().Upgraded(true)
		s.watchPredecessor(&predecessor{pid: up.PID, gen: up.Generation.Other(), gone: make(chan struct{})})
		if err := up.TellReady(); err != nil {
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
func executable(h *handoff.Handoff) string {
	if h != nil && h.Executable != "" {
		return h.Executable
	}
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return exe
}

// logListening says what each socket serves, once per address.
func logListening(sockets []*listen.Socket, log *slog.Logger) {
	for _, s := range sockets {
		if s.Shard > 0 || s.Set > 0 {
			continue // said with shard 0 of set 0
		}
		attrs := []any{"frontend", s.Frontend, "network", s.Network, "address", s.Address, "serves", s.Purpose, "socket", s.Source}
		if s.Frontend == "" {
			attrs = attrs[2:]
		}
		if s.Sets > 1 {
			attrs = append(attrs, "shards", s.Shards, "steering", "by connection ID and generation (reuseport eBPF)")
		}
		log.Info("listening", attrs...)
	}
}
