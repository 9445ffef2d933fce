package runtime

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/privilege"
)

// StartupError is a failure to get every socket. Its message names each
// socket, who the process is, and how to fix it.
type StartupError struct {
	Err    error
	Thread privilege.Thread
}

func (e *StartupError) Error() string {
	var b strings.Builder
	b.WriteString("cannot get every listening socket; nothing was served:\n")
	p := classify(e.Err)
	for _, err := range p.all {
		fmt.Fprintf(&b, "  %v\n", err)
	}
	fmt.Fprintf(&b, "this process runs as %s\n", e.Thread)
	if len(p.denied) > 0 {
		fmt.Fprintf(&b, "ports below %s (net.ipv4.ip_unprivileged_port_start) need one of:\n", unprivilegedPortStart())
		b.WriteString("  1. start portcullis as root with global.user (and global.group) set: it binds every socket, then drops to that user (dist/systemd/portcullis.service)\n")
		b.WriteString("  2. run as the service user with CAP_NET_BIND_SERVICE: AmbientCapabilities=CAP_NET_BIND_SERVICE under systemd (dist/systemd/portcullis-ambient.service), or setpriv --ambient-caps=+net_bind_service; portcullis clears it after binding\n")
		fmt.Fprintf(&b, "  3. socket activation: let systemd bind it, no privilege needed (dist/systemd/portcullis-activated.socket):%s\n", activationDirectives(p.denied))
	}
	writeInUse(&b, p.inUse, nil, nil)
	return strings.TrimSuffix(b.String(), "\n")
}

func (e *StartupError) Unwrap() error { return e.Err }

// ReloadSocketError is a reload refused because a socket of a new
// listener could not be bound by the running process, which no longer
// holds the privileges it started with. Nothing of the reload was applied.
type ReloadSocketError struct {
	Err    error
	Thread privilege.Thread
	// Removing are the sockets of the listeners the reload would remove,
	// and Draining those of listeners an earlier reload removed that
	// still finish their connections: they hold their addresses while the
	// new sockets are bound.
	Removing, Draining []listen.Spec
}

// Error is one line that names the first socket and the reason (for the
// service status), then every socket, the process's identity and the
// remedies.
func (e *ReloadSocketError) Error() string {
	var b strings.Builder
	p := classify(e.Err)
	fmt.Fprintf(&b, "the reload needs a new listening socket that this process cannot bind as %s; nothing was applied: %v\n",
		strings.SplitN(e.Thread.String(), " with", 2)[0], p.all[0])
	if len(p.all) > 1 {
		for _, err := range p.all {
			fmt.Fprintf(&b, "  %v\n", err)
		}
	}
	fmt.Fprintf(&b, "this process runs as %s\n", e.Thread)
	if len(p.denied) > 0 {
		fmt.Fprintf(&b, "ports below %s (net.ipv4.ip_unprivileged_port_start) need a privilege that portcullis gave up once it started; to listen on%s:\n",
			unprivilegedPortStart(), addresses(p.denied))
		fmt.Fprintf(&b, "  1. use a port at or above %s, which a reload can bind, or\n", unprivilegedPortStart())
		b.WriteString("  2. restart portcullis (systemctl restart): it binds every socket while privileged, then drops privileges again, or\n")
		fmt.Fprintf(&b, "  3. pass the socket by socket activation (dist/systemd/portcullis-activated.socket:%s) or grant CAP_NET_BIND_SERVICE (AmbientCapabilities=CAP_NET_BIND_SERVICE, dist/systemd/portcullis-ambient.service); both take effect at the next restart\n",
			activationDirectives(p.denied))
	}
	writeInUse(&b, p.inUse, e.Removing, e.Draining)
	return strings.TrimSuffix(b.String(), "\n")
}

func (e *ReloadSocketError) Unwrap() error { return e.Err }

// ReloadFilesError is a reload refused because files the configuration
// names could not be read: the process dropped privileges at startup,
// where it read them as root, and reloads read them as global.user. A
// 0600 root key starts fine and fails every reload after it.
type ReloadFilesError struct {
	// Err holds every problem of the file (a config.ErrorList).
	Err error
	// Paths are the files that could not be read for lack of permission.
	Paths  []string
	Thread privilege.Thread
}

// Error is the problems of the file (the first line, for the service
// status, is one of them), then who the process is and the remedies.
func (e *ReloadFilesError) Error() string {
	files := strings.Join(e.Paths, " ")
	who := strings.SplitN(e.Thread.String(), " with", 2)[0]
	return fmt.Sprintf("%v\n"+
		"cannot read %s as %s: portcullis dropped privileges after reading its files as root at startup, and a reload reads them as that user; to reload:\n"+
		"  1. let group %s read them: chgrp %s %s; chmod 0640 %s (every directory above them must be traversable), or\n"+
		"  2. restart instead (systemctl restart): a restart reads the files as root again",
		e.Err, files, who, e.Thread.GroupName(), e.Thread.GroupName(), files, files)
}

func (e *ReloadFilesError) Unwrap() error { return e.Err }

// socketProblems are the problems of listen.Acquire, by kind.
type socketProblems struct {
	all    []error
	denied []*listen.BindError // EACCES, EPERM
	inUse  []*listen.BindError // EADDRINUSE
}

func classify(err error) socketProblems {
	var p socketProblems
	var list listen.Errors
	if !errors.As(err, &list) {
		list = listen.Errors{err}
	}
	p.all = list
	for _, err := range list {
		var be *listen.BindError
		if !errors.As(err, &be) {
			continue
		}
		switch {
		case errors.Is(be.Err, syscall.EACCES), errors.Is(be.Err, syscall.EPERM):
			p.denied = append(p.denied, be)
		case errors.Is(be.Err, syscall.EADDRINUSE):
			p.inUse = append(p.inUse, be)
		}
	}
	return p
}

// activationDirectives are the socket unit lines that would pass the
// sockets.
func activationDirectives(bes []*listen.BindError) string {
	var b strings.Builder
	for _, be := range bes {
		directive := "ListenStream"
		if be.Spec.Network == "udp" {
			directive = "ListenDatagram"
		}
		fmt.Fprintf(&b, " %s=%s", directive, be.Spec.Address)
	}
	return b.String()
}

func addresses(bes []*listen.BindError) string {
	var b strings.Builder
	for _, be := range bes {
		fmt.Fprintf(&b, " %s %s", be.Spec.Network, be.Spec.Address)
	}
	return b.String()
}

// writeInUse says who may hold each address in use: another process, or,
// on a reload, a listener of this one that the reload removes (removing)
// or that an earlier reload removed and that still drains (draining).
func writeInUse(b *strings.Builder, inUse []*listen.BindError, removing, draining []listen.Spec) {
	held := func(be *listen.BindError, specs []listen.Spec) *listen.Spec {
		for i, h := range specs {
			if h.Network == be.Spec.Network && portOf(h.Address) == portOf(be.Spec.Address) {
				return &specs[i]
			}
		}
		return nil
	}
	for _, be := range inUse {
		fmt.Fprintf(b, "%s %s is in use by another process: find it with ss -lnp%s 'sport = %s'\n",
			be.Spec.Network, be.Spec.Address, map[string]string{"tcp": "t", "udp": "u"}[be.Spec.Network], portOf(be.Spec.Address))
		if h := held(be, removing); h != nil {
			fmt.Fprintf(b, "  or by this process: frontend %q holds %s %s, which this reload removes; remove it in one reload and add %s in the next, or restart\n",
				h.Frontend, h.Network, h.Address, be.Spec.Address)
		} else if h := held(be, draining); h != nil {
			fmt.Fprintf(b, "  or by this process: frontend %q still holds %s %s for a listener an earlier reload removed, until its connections finish (at most global.grace); reload again then, or restart\n",
				h.Frontend, h.Network, h.Address)
		}
	}
}

func unprivilegedPortStart() string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		return "1024"
	}
	return strings.TrimSpace(string(b))
}

func portOf(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return ":" + addr[i+1:]
	}
	return addr
}
