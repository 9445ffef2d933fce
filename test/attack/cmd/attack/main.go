// Command attack runs the hostile clients of package attack against a
// proxy, and the backend they are measured against, so that anyone can
// reproduce the table of docs/security.md against any proxy.
//
// Usage:
//
//	attack badchunk   -addr HOST:PORT [-tls] [-n 3]
//	attack bigheader  -addr HOST:PORT [-tls] [-size 1048576]
//	attack zerowindow -addr HOST:PORT [-tls] [-conns 10] [-streams 100] [-hold 10s]
//	attack rapidreset -addr HOST:PORT [-tls] [-rate 100] [-for 5s] [-streams N] [-reset-after 0]
//	attack l4idle     -addr HOST:PORT [-conns 100] [-hold 10s]
//	attack midreset   -addr HOST:PORT [-tls] [-h2] [-path /midreset?bytes=1000]
//	attack backend    -listen HOST:PORT [-name NAME] [-stats HOST:PORT] [-midreset K] [-for D]
//
// Every attack also takes -host (Host header, :authority, TLS server
// name), -path, -timeout (each wait on the proxy), -pid PID (sample the
// proxy's VmRSS and descriptors from /proc before, during and after) and
// -backend-stats HOST:PORT,... (the stats addresses of attack backend
// processes: connections and requests they counted during the attack).
// It prints the attack's result, then those measurements.
//
// Exit status: 0 when the attack ran (whatever the proxy did), 1 when it
// could not run (the proxy unreachable, say), 2 for a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/portcullis/portcullis/test/attack"
)

// commands are the subcommands, by name.
var commands = map[string]func(ctx context.Context, args []string) error{
	"badchunk":   runBadChunk,
	"bigheader":  runBigHeader,
	"zerowindow": runZeroWindow,
	"rapidreset": runRapidReset,
	"l4idle":     runL4Idle,
	"midreset":   runMidReset,
	"quicflood":  runQUICFlood,
	"backend":    runBackend,
}

// errUsage is returned for a usage error, already reported.
var errUsage = errors.New("usage")

func main() {
	if len(os.Args) < 2 || commands[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: attack badchunk|bigheader|zerowindow|rapidreset|l4idle|midreset|quicflood|backend -flags...\n"+
			"       attack NAME -h lists the flags of NAME")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := commands[os.Args[1]](ctx, os.Args[2:])
	stop()
	switch {
	case errors.Is(err, errUsage), errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	case err != nil && !errors.Is(err, context.Canceled):
		fmt.Fprintln(os.Stderr, "attack "+os.Args[1]+":", err)
		os.Exit(1)
	}
}

// common are the flags of every attack.
type common struct {
	target  attack.Target
	pid     int
	backend string
}

// flags makes the flag set of attack name with the common flags; l4 leaves
// out those that mean nothing to plain TCP.
func (c *common) flags(name string, l4 bool) *flag.FlagSet {
	fs := flag.NewFlagSet("attack "+name, flag.ContinueOnError)
	fs.StringVar(&c.target.Addr, "addr", "", "the proxy's `HOST:PORT` (required)")
	fs.DurationVar(&c.target.Timeout, "timeout", 10*time.Second, "bound on dialing and on each wait for the proxy")
	fs.IntVar(&c.pid, "pid", 0, "sample this process's VmRSS and fds from /proc (0: no)")
	fs.StringVar(&c.backend, "backend-stats", "", "stats addresses of attack backend processes, `HOST:PORT,...`")
	if !l4 {
		fs.BoolVar(&c.target.TLS, "tls", false, "speak TLS (the certificate is not verified)")
		fs.StringVar(&c.target.Host, "host", "", "Host header, :authority and TLS server name (default: -addr)")
		fs.StringVar(&c.target.Path, "path", "/", "request path")
	}
	return fs
}

// parse parses args into fs and checks the common flags.
func (c *common) parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.target.Addr == "" || fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "%s: -addr HOST:PORT is required, and no arguments follow the flags\n", fs.Name())
		fs.PrintDefaults()
		return errUsage
	}
	return nil
}

// watch starts the measurements the common flags ask for.
func (c *common) watch(ctx context.Context) *watcher {
	var stats []string
	if c.backend != "" {
		stats = strings.Split(c.backend, ",")
	}
	return startWatch(ctx, c.pid, stats)
}

// report prints the result of an attack and the measurements.
func report(res fmt.Stringer, w *watcher) {
	fmt.Println(res)
	for _, line := range w.stop() {
		fmt.Println(line)
	}
}
