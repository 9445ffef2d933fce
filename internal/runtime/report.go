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
	var bindErrs []*listen.BindError
	var list listen.Errors
	if !errors.As(e.Err, &list) {
		list = listen.Errors{e.Err}
	}
	for _, err := range list {
		fmt.Fprintf(&b, "  %v\n", err)
		var be *listen.BindError
		if errors.As(err, &be) {
			bindErrs = append(bindErrs, be)
		}
	}
	fmt.Fprintf(&b, "this process runs as %s\n", e.Thread)
	var denied, inUse []*listen.BindError
	for _, be := range bindErrs {
		switch {
		case errors.Is(be.Err, syscall.EACCES), errors.Is(be.Err, syscall.EPERM):
			denied = append(denied, be)
		case errors.Is(be.Err, syscall.EADDRINUSE):
			inUse = append(inUse, be)
		}
	}
	if len(denied) > 0 {
		fmt.Fprintf(&b, "ports below %s (net.ipv4.ip_unprivileged_port_start) need one of:\n", unprivilegedPortStart())
		b.WriteString("  1. start portcullis as root with global.user (and global.group) set: it binds every socket, then drops to that user (dist/systemd/portcullis.service)\n")
		b.WriteString("  2. run as the service user with CAP_NET_BIND_SERVICE: AmbientCapabilities=CAP_NET_BIND_SERVICE under systemd (dist/systemd/portcullis-ambient.service), or setpriv --ambient-caps=+net_bind_service; portcullis clears it after binding\n")
		b.WriteString("  3. socket activation: let systemd bind it, no privilege needed (dist/systemd/portcullis-activated.socket):")
		for _, be := range denied {
			directive := "ListenStream"
			if be.Spec.Network == "udp" {
				directive = "ListenDatagram"
			}
			fmt.Fprintf(&b, " %s=%s", directive, be.Spec.Address)
		}
		b.WriteString("\n")
	}
	for _, be := range inUse {
		fmt.Fprintf(&b, "%s %s is in use by another process: find it with ss -lnp%s 'sport = %s'\n",
			be.Spec.Network, be.Spec.Address, map[string]string{"tcp": "t", "udp": "u"}[be.Spec.Network], portOf(be.Spec.Address))
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func (e *StartupError) Unwrap() error { return e.Err }

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
