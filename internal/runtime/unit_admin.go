package runtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"golang.org/x/net/netutil"

	"github.com/portcullis/portcullis/internal/admin"
	"github.com/portcullis/portcullis/internal/compile"
	"github.com/portcullis/portcullis/internal/listen"
)

// unitAdmin is the kind of the admin socket's and the admin listener's
// units: "admin PATH" and "admin ADDR".
const unitAdmin = "admin"

// adminUnitSpecs lists the admin units of g.
func adminUnitSpecs(g *compile.Graph) []unitSpec {
	a := g.Admin
	if a == nil {
		return nil
	}
	var out []unitSpec
	for _, sp := range []*listen.Spec{a.Socket, a.Listen} {
		if sp != nil {
			out = append(out, unitSpec{key: unitAdmin + " " + sp.Address, kind: "admin " + sp.Network, specs: []listen.Spec{*sp}, admin: a})
		}
	}
	return out
}

// adminUnit serves the admin interface on one socket. A reload keeps it
// (and its connections) and gives it the new token.
type adminUnit struct {
	s       *serving
	us      atomic.Pointer[unitSpec]
	socks   socketSet
	l       net.Listener
	srv     *http.Server
	handler atomic.Pointer[http.Handler]
}

// The admin server's bounds: a client has adminReadTimeout to send a
// request and its body, an idle keep-alive connection is closed after
// adminIdleTimeout, and at most adminMaxConns connections are served at
// once (more wait in the socket's backlog): the admin interface cannot
// take the process's descriptors, whoever reaches it.
const (
	adminReadTimeout = 10 * time.Second
	adminIdleTimeout = 60 * time.Second
	adminMaxConns    = 64
)

// startAdmin starts the admin server of an "admin" unit on sock.
func (s *serving) startAdmin(us unitSpec, sock *listen.Socket) (*adminUnit, error) {
	l, err := net.FileListener(sock.File)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", sock.Spec, err)
	}
	u := &adminUnit{s: s, l: l}
	u.socks.list = []*listen.Socket{sock}
	u.update(us)
	u.srv = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*u.handler.Load()).ServeHTTP(w, r) }),
		ReadHeaderTimeout: adminReadTimeout,
		ReadTimeout:       adminReadTimeout,
		IdleTimeout:       adminIdleTimeout,
		MaxHeaderBytes:    64 << 10,
	}
	go func() {
		if err := u.srv.Serve(netutil.LimitListener(l, adminMaxConns)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.fail(fmt.Errorf("%s: %w", sock.Spec, err))
		}
	}()
	return u, nil
}

func (u *adminUnit) spec() unitSpec            { return *u.us.Load() }
func (u *adminUnit) sockets() []*listen.Socket { return u.socks.sockets() }
func (u *adminUnit) release()                  { u.socks.release() }
func (u *adminUnit) settle(context.Context)    {}

// update gives the unit the new graph's token.
func (u *adminUnit) update(us unitSpec) {
	u.us.Store(&us)
	u.socks.setSpecs(us.specs)
	o := admin.Options{Control: control{u.s}, Gatherer: u.s.metrics().Gatherer(), Log: u.s.log}
	if us.specs[0].Network == "unix" {
		o.Full = true
	} else {
		o.Token = us.admin.Token
	}
	h := admin.Handler(o)
	u.handler.Store(&h)
}

func (u *adminUnit) stopAccepting() {
	u.socks.closeFiles()
	u.l.Close()
}

func (u *adminUnit) drain(ctx context.Context) error { return u.srv.Shutdown(ctx) }

func (u *adminUnit) close() {
	u.stopAccepting()
	u.srv.Close()
}
