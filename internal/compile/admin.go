package compile

import (
	"bytes"

	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/listen"
)

// Admin is the compiled admin block: its sockets and token.
type Admin struct {
	// Socket is the unix socket that serves the whole API; nil: none.
	Socket *listen.Spec
	// Listen is the HTTP listener (/metrics, /stats, the API read-only
	// without the token); nil: none.
	Listen *listen.Spec
	// Token is the bearer token with which requests on Listen may change
	// things; "": Listen is read-only.
	Token string
}

// Purposes of the admin sockets, as the "listening" lines say them.
const (
	PurposeAdminSocket = "admin API"
	PurposeAdminListen = "admin HTTP (metrics, stats, API)"
)

// minToken is the shortest admin token accepted, in bytes.
const minToken = 16

// compileAdmin compiles cfg's admin block (nil when there is none). The
// unix socket is given the group the process drops to, when it drops.
func (g *Graph) compileAdmin(cfg *config.Config, readFile config.ReadFileFunc) (*Admin, *config.Error) {
	a := cfg.Admin
	if a == nil {
		return nil, nil
	}
	out := &Admin{}
	if a.Socket != "" {
		group := -1
		if g.User != nil {
			group = g.User.GID
		}
		out.Socket = &listen.Spec{Network: "unix", Address: a.Socket, FDName: a.SocketFDName, Purpose: PurposeAdminSocket, Group: group}
	}
	if a.Listen != "" {
		out.Listen = &listen.Spec{Network: "tcp", Address: a.Listen, FDName: a.FDName, Purpose: PurposeAdminListen, Group: -1}
	}
	if a.TokenFile != "" {
		b, err := readFile(cfg.Path(a.TokenFile))
		if err != nil {
			return nil, cfg.Errorf(a.At.Value("token_file"), "admin token_file: cannot read it: %v", err)
		}
		out.Token = string(bytes.TrimSpace(b))
		if len(out.Token) < minToken {
			return nil, cfg.Errorf(a.At.Value("token_file"), "admin token_file %s: the token is %d bytes; use at least %d, e.g. openssl rand -hex 32 > %s", a.TokenFile, len(out.Token), minToken, a.TokenFile)
		}
	}
	return out, nil
}

// specs lists the admin sockets (none for a nil Admin).
func (a *Admin) specs() []listen.Spec {
	var out []listen.Spec
	if a == nil {
		return nil
	}
	if a.Socket != nil {
		out = append(out, *a.Socket)
	}
	if a.Listen != nil {
		out = append(out, *a.Listen)
	}
	return out
}
