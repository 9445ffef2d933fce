package config

import (
	"path/filepath"
	"strings"
)

// Admin is the admin interface (docs/admin.md): a unix socket that serves
// the whole admin API, and an HTTP listener that serves /metrics, /stats
// and the read-only API (and, with a token, the rest of it). Both sockets
// are created before privileges are dropped, like every other. Nil: none.
type Admin struct {
	// Socket is the path of the unix socket that serves the whole API
	// (reads and changes), absolute. It is created with mode 0660, owned
	// by global.group when set (else by the group the process runs as),
	// so that only root and that group's members may connect. Its
	// directory must exist (systemd's RuntimeDirectory=). Empty: none.
	Socket string `yaml:"socket"`
	// Listen is the "IP:PORT" of the HTTP listener that serves /metrics,
	// /stats and the API, read-only unless the request carries the token
	// of TokenFile. Empty: none.
	Listen string `yaml:"listen"`
	// TokenFile is a file (relative to the configuration's directory)
	// that holds the bearer token with which requests on Listen may also
	// change things (drain a server, reload). Surrounding white space is
	// ignored; at least 16 bytes. Empty: Listen is read-only.
	TokenFile string `yaml:"token_file"`
	// FDName selects the socket-activated socket for Listen by name
	// (FileDescriptorName=), as a bind's fd_name does. Empty: matched by
	// address.
	FDName string `yaml:"fd_name"`
	// SocketFDName selects the socket-activated unix socket for Socket by
	// name. Empty: matched by path.
	SocketFDName string `yaml:"socket_fd_name"`

	At Positions `yaml:"-"`
}

// AdminSocketMode is the admin unix socket's file mode: root and the
// socket's group may connect.
const AdminSocketMode = 0o660

// maxSocketPath is the longest path a unix socket address can hold
// (sun_path is 108 bytes, with a terminating NUL).
const maxSocketPath = 107

// validate checks the admin block; bound holds the frontends' sockets,
// which the admin listener may not overlap.
func (a *Admin) validate(bound claims, add func(Pos, string, ...any)) {
	if a.Socket == "" && a.Listen == "" {
		add(a.At.Self, "admin: set socket (a unix socket path, the whole API), listen (IP:PORT for /metrics, /stats and the read-only API), or both")
	}
	if a.Socket != "" {
		switch {
		case !filepath.IsAbs(a.Socket):
			add(a.At.Value("socket"), "admin socket %q: write an absolute path, e.g. /run/portcullis/admin.sock", a.Socket)
		case len(a.Socket) > maxSocketPath:
			add(a.At.Value("socket"), "admin socket: the path is %d bytes; a unix socket path holds at most %d", len(a.Socket), maxSocketPath)
		case strings.HasSuffix(a.Socket, "/"):
			add(a.At.Value("socket"), "admin socket %q names a directory: add the socket's file name, e.g. %sadmin.sock", a.Socket, a.Socket)
		}
	}
	if a.Listen != "" {
		addr, err := ListenAddress(a.Listen)
		if err != nil {
			add(a.At.Value("listen"), "admin listen: %v", err)
		} else {
			a.Listen = addr
			a.claim(bound, add)
		}
	}
	if a.TokenFile != "" && a.Listen == "" {
		add(a.At.Key("token_file"), "admin token_file: it opens changes on listen, which is not set; the unix socket needs no token (its file mode decides who may connect)")
	}
	if a.SocketFDName != "" && a.Socket == "" {
		add(a.At.Key("socket_fd_name"), "admin socket_fd_name: set socket as well (the path the passed socket is bound to)")
	}
	if a.FDName != "" && a.Listen == "" {
		add(a.At.Key("fd_name"), "admin fd_name: set listen as well (the address the passed socket is bound to)")
	}
}

// claim refuses an admin listener on a frontend's TCP address, or one
// that overlaps it.
func (a *Admin) claim(bound claims, add func(Pos, string, ...any)) {
	o := socketOwner{socket: socket{"tcp", a.Listen}, pos: a.At.Value("listen"), named: a.FDName != ""}
	prev, same, found := bound.find(o)
	switch {
	case !found:
		bound[o.key()] = append(bound[o.key()], o)
	case same:
		add(o.pos, "admin listen: address %s is already bound for TCP by frontend %q at line %d: give the admin listener a port no frontend binds", a.Listen, prev.fe.Name, prev.pos.Line)
	default:
		add(o.pos, "admin listen: address %s%s overlaps %s%s, bound for TCP by frontend %q at line %d: give the admin listener a port no frontend binds",
			a.Listen, wildcard(a.Listen), prev.address, wildcard(prev.address), prev.fe.Name, prev.pos.Line)
	}
}
