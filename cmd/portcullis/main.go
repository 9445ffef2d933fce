// Command portcullis is a reverse proxy and load balancer for HTTP/1.1,
// HTTP/2 and HTTP/3 that binds every socket before it drops privileges.
//
//	portcullis run [-c FILE]     serve (the embedded quickstart without -c)
//	portcullis validate -c FILE  check a configuration as run would, without binding
//	portcullis ctl COMMAND       show and steer a running portcullis (admin API)
//	portcullis version           print the version
//
// Exit status: 0 success, 1 runtime failure, 2 usage or configuration error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/quickstart"
	"github.com/portcullis/portcullis/internal/runtime"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

const usage = `usage:
  portcullis run [-c FILE] [-log-level LEVEL]   serve; without -c, the embedded quickstart
  portcullis validate -c FILE                   check FILE exactly as run would, without binding
  portcullis ctl [-s SOCKET] [-json] COMMAND    show and steer a running portcullis: servers, drain, reload... (ctl -h)
  portcullis version                            print the version
`

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// run runs the command line args and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) < 2 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[1] {
	case "run":
		return cmdRun(args, stdout, stderr)
	case "validate":
		return cmdValidate(args[2:], stdout, stderr)
	case "ctl":
		return cmdCtl(args[2:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "portcullis %s\n", versionString())
		return exitOK
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "portcullis: unknown command %q\n%s", args[1], usage)
	return exitUsage
}

// cmdRun is `portcullis run`: it serves the file given with -c, or the
// embedded quickstart.
func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "configuration `file` (default: the embedded quickstart)")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args[2:]); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "portcullis run: unexpected argument %q\n%s", fs.Arg(0), usage)
		return exitUsage
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "portcullis run: -log-level %q: want debug, info, warn or error\n", *level)
		return exitUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	opt := runtime.Options{ConfigPath: *path, Log: log, Argv: args, Version: versionString()}
	if *path == "" {
		q, err := quickstart.Start()
		if err != nil {
			return report(err, stderr)
		}
		defer q.Close()
		useQuickstart(&opt, q, stdout)
	}
	return report(runtime.Run(opt), stderr)
}

// useQuickstart makes opt serve the quickstart q, which prints its
// instructions to stdout once it serves. A privilege drop re-executes the
// command, which starts a quickstart of its own; a process serving it is
// not upgraded (runtime.Embedded).
func useQuickstart(opt *runtime.Options, q *quickstart.Quickstart, stdout io.Writer) {
	opt.Embedded = &runtime.Embedded{Name: quickstart.File, Data: q.Config, ReadFile: q.ReadFile}
	opt.Serving = func() { fmt.Fprint(stdout, q.Instructions()) }
}

// cmdValidate is `portcullis validate -c FILE`.
func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "configuration `file` to check (required)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "portcullis validate: unexpected argument %q\n%s", fs.Arg(0), usage)
		return exitUsage
	}
	if *path == "" {
		fmt.Fprintf(stderr, "portcullis validate: give the file with -c FILE\n%s", usage)
		return exitUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	g, err := runtime.Validate(runtime.Options{ConfigPath: *path, Log: log})
	if code := report(err, stderr); code != exitOK {
		return code
	}
	// The sockets run binds, as its "ready" line counts them: HTTP/3
	// binds have more when the steering program loads.
	steered, unsteered := g.StartSpecs(true), g.StartSpecs(false)
	fmt.Fprintf(stdout, "%s: valid (%s, %s, %s)\n", *path, count(len(g.Frontends), "frontend"), count(len(g.Backends), "backend"), count(len(steered), "socket"))
	if len(unsteered) != len(steered) {
		fmt.Fprintf(stdout, "%s: %s; %d if run cannot load the QUIC steering program (it needs root or CAP_BPF at startup; docs/quic.md)\n",
			*path, listen.Tally(steered), len(unsteered))
	}
	return exitOK
}

// count is n and noun, in the plural unless n is 1: "1 frontend", "2 sockets".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// report prints err and maps it to an exit code: configuration problems
// are 2, everything else 1.
func report(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	var cerr config.ErrorList
	if errors.As(err, &cerr) {
		fmt.Fprintln(stderr, cerr.Error())
		fmt.Fprintf(stderr, "portcullis: %s in the configuration\n", count(len(cerr), "problem"))
		return exitUsage
	}
	fmt.Fprintf(stderr, "portcullis: %v\n", err)
	return exitFailure
}

// versionString is the version set at build time, or the module's.
func versionString() string {
	if version != "" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" {
		return info.Main.Version
	}
	return "(devel)"
}
