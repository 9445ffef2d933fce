// Package runtime turns a configuration into running servers: compile the
// configuration into an immutable graph, acquire sockets, drop privileges,
// serve, and stop gracefully.
package runtime

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os/user"
	"strconv"
	"time"

	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/hostname"
	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/privilege"
	"github.com/portcullis/portcullis/internal/proxy"
	"github.com/portcullis/portcullis/internal/upstream"
)

// Graph is a compiled configuration: everything the runtime serves, built
// once and never changed.
type Graph struct {
	// Grace is global.grace: how long a stop, a reload or an upgrade
	// lets connections finish.
	Grace     time.Duration
	Frontends []*Frontend
	Backends  []*proxy.Backend
	// User is who to become after binding when started as root; nil when
	// global.user is not set.
	User *privilege.Target
	// servers are the servers of every backend, which registry.commit
	// makes the live set.
	servers []*upstream.Server
	// binds maps the address of a bind of an http or tcp frontend to it.
	binds map[string]*Bind
	// relays maps the address of a bind of a udp frontend to it.
	relays map[string]*Relay
	// sendProxy is set when a server has send_proxy: HTTP client
	// connections then carry a proxy.ClientConn, for the private server
	// connections that PROXY headers need.
	sendProxy bool
	// notes are said once when the graph goes live (random QUIC keys).
	notes []string
	// maxConns is global.max_conns, derived when not set; conns are the
	// connection limits of each frontend, by name.
	maxConns int
	conns    map[string]connPlan
}

// Frontend is a compiled frontend.
type Frontend struct {
	Name string
	// Mode is config.ModeHTTP, ModeTCP or ModeUDP.
	Mode   string
	Binds  []*Bind  // http and tcp frontends
	Relays []*Relay // udp frontends
}

// Bind is a compiled bind: its sockets and what serves them.
type Bind struct {
	TCP listen.Spec
	// UDP is the template of the HTTP/3 sockets (one per shard); nil
	// without http3.
	UDP *listen.Spec
	// QUIC is the HTTP/3 configuration; nil without http3.
	QUIC *quicBind
	// TLS is nil for plain HTTP/1.1 and h2c, and for tcp frontends.
	TLS     *tls.Config
	Handler http.Handler // nil for tcp frontends
	// L4 is how a tcp frontend's connections are routed, and an http
	// frontend's sni (passthrough) routes; nil for an http bind without
	// them and without accept_proxy.
	L4 *l4Bind
	// Gate counts the bind's connections against its frontend's limits.
	Gate *limit.Gate
	// Limits are those its HTTP servers hold (http binds).
	Limits httpLimits
}

// compile builds the graph: it reads certificates and keys through
// readFile and looks up global.user and global.group. Problems are
// returned as a config.ErrorList pointing into the file.
//
// reg supplies the live state of servers the running configuration
// already has; nil (for validate) makes fresh state. Compile changes no
// live state: see registry.commit.
func compile(cfg *config.Config, readFile config.ReadFileFunc, log *slog.Logger, reg *registry) (*Graph, error) {
	var errs config.ErrorList
	g := &Graph{Grace: cfg.Global.Grace, binds: map[string]*Bind{}, relays: map[string]*Relay{}, conns: map[string]connPlan{}}
	var warning string
	if g.maxConns, warning = maxConnsFor(cfg); warning != "" {
		g.notes = append(g.notes, warning)
	}
	if cfg.Global.User != "" {
		t, err := lookupUser(cfg)
		if err != nil {
			errs = append(errs, err)
		}
		g.User = t
	}
	backends := map[string]*proxy.Backend{}
	upstreams := map[string]*upstream.Backend{}
	for _, b := range cfg.Backends {
		pb, ub, err := compileBackend(cfg, b, readFile, reg, log.With("backend", b.Name))
		if err != nil {
			errs = append(errs, err...)
			continue
		}
		backends[b.Name] = pb
		upstreams[b.Name] = ub
		for _, srv := range b.Servers {
			g.sendProxy = g.sendProxy || srv.SendProxy != ""
		}
		g.Backends = append(g.Backends, pb)
		g.servers = append(g.servers, ub.Servers()...)
	}
	for _, fe := range cfg.Frontends {
		f := &Frontend{Name: fe.Name, Mode: fe.Mode}
		g.Frontends = append(g.Frontends, f)
		conns, events := reg.frontendConns(fe.Name)
		g.conns[fe.Name] = connPlan{conns: conns, max: fe.Limits.MaxConns, perClient: fe.Limits.MaxConnsPerClient}
		switch fe.Mode {
		case config.ModeTCP:
			for _, b := range fe.Bind {
				l4b, l4errs := compileL4(cfg, fe, b, upstreams)
				errs = append(errs, l4errs...)
				cb := &Bind{
					TCP:  listen.Spec{Frontend: fe.Name, Network: "tcp", Address: b.Address, FDName: b.FDName, Purpose: "TCP proxy"},
					L4:   l4b,
					Gate: gateFor(conns, events, fe.Name, b.Address),
				}
				f.Binds = append(f.Binds, cb)
				g.binds[b.Address] = cb
			}
			continue
		case config.ModeUDP:
			for _, b := range fe.Bind {
				r := compileRelay(fe, b, upstreams)
				r.Gate = gateFor(conns, events, fe.Name, b.Address)
				f.Relays = append(f.Relays, r)
				g.relays[b.Address] = r
			}
			continue
		}
		errs = append(errs, g.compileHTTP(cfg, fe, f, conns, events, backends, upstreams, readFile, log)...)
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return g, nil
}

// compileHTTP compiles the binds of http frontend fe into f and g: each
// serves the frontend's routes (but sni routes, which the layer-4 side
// takes) behind its request limits, over TLS with the bind's
// certificates, and over HTTP/3 when the bind has it.
func (g *Graph) compileHTTP(cfg *config.Config, fe *config.Frontend, f *Frontend, conns *limit.Conns, events *limit.Events, backends map[string]*proxy.Backend, upstreams map[string]*upstream.Backend, readFile config.ReadFileFunc, log *slog.Logger) config.ErrorList {
	var errs config.ErrorList
	router := &proxy.Router{}
	for _, r := range fe.Routes {
		if r.SNI == "" {
			host, err := hostname.ParsePattern(r.Host)
			if err != nil {
				errs = append(errs, cfg.Errorf(r.At.Value("host"), "frontend %q: %v", fe.Name, err))
			}
			router.Routes = append(router.Routes, proxy.Route{Host: host, PathPrefix: r.PathPrefix, Backend: backends[r.Backend]})
		}
	}
	limited := func(h http.Handler) http.Handler {
		return proxy.Limited(h, requestLimits(fe.Limits), events, fe.Name)
	}
	for _, b := range fe.Bind {
		l4b, l4errs := compileL4(cfg, fe, b, upstreams)
		errs = append(errs, l4errs...)
		cb := &Bind{
			TCP:     listen.Spec{Frontend: fe.Name, Network: "tcp", Address: b.Address, FDName: b.FDName, Purpose: "HTTP/1.1, h2c"},
			Handler: limited(&proxy.Handler{Router: router, Log: log.With("frontend", fe.Name)}),
			L4:      l4b,
			Gate:    gateFor(conns, events, fe.Name, b.Address),
			Limits:  compileHTTPLimits(fe.Limits),
		}
		if b.TLS != nil {
			cb.TCP.Purpose = "HTTPS: HTTP/1.1, HTTP/2"
			conf, err := loadTLS(cfg, fe.Name, b.TLS, readFile)
			if err != nil {
				errs = append(errs, err...)
			}
			cb.TLS = conf
		}
		if b.HTTP3 {
			name := b.FDNameUDP
			if name == "" {
				name = b.FDName
			}
			cb.UDP = &listen.Spec{Frontend: fe.Name, Network: "udp", Address: b.Address, FDName: name, Purpose: "HTTP/3 over QUIC"}
			qb, notes, qerrs := compileQUIC(cfg, fe.Name, b, readFile)
			errs = append(errs, qerrs...)
			cb.QUIC = qb
			g.notes = append(g.notes, notes...)
			_, port, _ := net.SplitHostPort(b.Address)
			cb.Handler = limited(&proxy.Handler{Router: router, AltSvc: fmt.Sprintf(`h3=":%s"; ma=86400`, port), Log: log.With("frontend", fe.Name)})
		}
		f.Binds = append(f.Binds, cb)
		g.binds[b.Address] = cb
	}
	return errs
}

// Specs lists every socket the graph needs.
func (g *Graph) Specs() []listen.Spec {
	var specs []listen.Spec
	for _, f := range g.Frontends {
		for _, b := range f.Binds {
			specs = append(specs, b.TCP)
			specs = append(specs, b.udpSpecs()...)
		}
		for _, r := range f.Relays {
			specs = append(specs, r.Spec)
		}
	}
	return specs
}

func lookupUser(cfg *config.Config) (*privilege.Target, *config.Error) {
	g := cfg.Global
	u, err := user.Lookup(g.User)
	if err != nil {
		return nil, cfg.Errorf(g.At.Value("user"), "global user: %v (create it, e.g. useradd --system --no-create-home %s)", err, g.User)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if uid == 0 {
		return nil, cfg.Errorf(g.At.Value("user"), "global user %q is root: choose an unprivileged account", g.User)
	}
	if g.Group != "" {
		grp, err := user.LookupGroup(g.Group)
		if err != nil {
			return nil, cfg.Errorf(g.At.Value("group"), "global group: %v", err)
		}
		gid, _ = strconv.Atoi(grp.Gid)
	}
	return &privilege.Target{Switch: true, UID: uid, GID: gid}, nil
}

// loadTLS reads every certificate of a bind. The first is the default; the
// others are chosen by SNI (crypto/tls picks the first certificate whose
// names match the ClientHello).
func loadTLS(cfg *config.Config, frontend string, t *config.TLS, readFile config.ReadFileFunc) (*tls.Config, config.ErrorList) {
	var errs config.ErrorList
	conf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
	}
	for _, c := range t.Certificates {
		if c.Cert == "" || c.Key == "" {
			continue // validation reported it
		}
		certPEM, err := readFile(cfg.Path(c.Cert))
		if err != nil {
			errs = append(errs, cfg.Errorf(c.At.Value("cert"), "frontend %q: cannot read certificate: %v", frontend, err))
			continue
		}
		keyPEM, err := readFile(cfg.Path(c.Key))
		if err != nil {
			errs = append(errs, cfg.Errorf(c.At.Value("key"), "frontend %q: cannot read key: %v", frontend, err))
			continue
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			errs = append(errs, cfg.Errorf(c.At.Self, "frontend %q: certificate %s with key %s: %v", frontend, c.Cert, c.Key, err))
			continue
		}
		if pair.Leaf == nil {
			pair.Leaf, _ = x509.ParseCertificate(pair.Certificate[0])
		}
		conf.Certificates = append(conf.Certificates, pair)
	}
	return conf, errs
}
