package compile

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os/user"
	"strconv"

	"github.com/portcullis/portcullis/internal/accesslog"
	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/hostname"
	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/metrics"
	"github.com/portcullis/portcullis/internal/privilege"
	"github.com/portcullis/portcullis/internal/proxy"
	"github.com/portcullis/portcullis/internal/upstream"
)

// Live is the state of the running configuration that a new graph takes
// over: the servers' live state and health monitors, and the frontends'
// connection counters, which outlive configurations.
type Live interface {
	// Servers is the registry of live servers; nil makes fresh ones.
	Servers() *upstream.Registry
	// FrontendConns returns the connection counter of frontend name (the
	// running one, or a new one not yet in use) and the summarizer of the
	// limits that fire.
	FrontendConns(name string) (*limit.Conns, *limit.Events)
	// AccessLog returns the writer of access-log destination to (stdout,
	// stderr or a file's absolute path): the running one, or a new one
	// not yet opened.
	AccessLog(to string) *accesslog.Writer
	// Metrics is the process's metrics, whose handles compiled objects
	// count into; nil: none.
	Metrics() *metrics.Metrics
}

// Compile builds the graph of cfg: it reads certificates and keys through
// readFile and looks up global.user and global.group. Problems are
// returned as a config.ErrorList pointing into the file (FILE:LINE:COL).
//
// live supplies the state the running configuration already has; nil
// (for validate) makes fresh state. Compile changes no live state: the
// caller commits the graph once it serves, so that a rejected reload
// leaves no trace.
func Compile(cfg *config.Config, readFile config.ReadFileFunc, log *slog.Logger, live Live) (*Graph, error) {
	if live == nil {
		live = fresh{}
	}
	var errs config.ErrorList
	g := &Graph{Grace: cfg.Global.Grace, BindAt: map[string]*Bind{}, RelayAt: map[string]*Relay{}, Conns: map[string]ConnPlan{}, AccessLogs: map[string]*accesslog.Writer{}}
	var warning string
	if g.MaxConns, warning = maxConnsFor(cfg); warning != "" {
		g.Notes = append(g.Notes, warning)
	}
	if cfg.Global.User != "" {
		t, err := lookupUser(cfg)
		if err != nil {
			errs = append(errs, err)
		}
		g.User = t
	}
	var err *config.Error
	if g.Admin, err = g.compileAdmin(cfg, readFile); err != nil {
		errs = append(errs, err)
	}
	backends := map[string]*proxy.Backend{}
	upstreams := map[string]*upstream.Backend{}
	for _, b := range cfg.Backends {
		pb, ub, err := compileBackend(cfg, b, readFile, live, log.With("backend", b.Name))
		if err != nil {
			errs = append(errs, err...)
			continue
		}
		backends[b.Name] = pb
		upstreams[b.Name] = ub
		for _, srv := range b.Servers {
			g.SendProxy = g.SendProxy || srv.SendProxy != ""
		}
		g.Backends = append(g.Backends, pb)
		g.Upstreams = append(g.Upstreams, ub)
		g.Servers = append(g.Servers, ub.Servers()...)
	}
	for _, fe := range cfg.Frontends {
		f := &Frontend{Name: fe.Name, Mode: fe.Mode, Metrics: live.Metrics().Frontend(fe.Name)}
		g.Frontends = append(g.Frontends, f)
		var err *config.Error
		if f.AccessLog, err = g.accessLog(cfg, fe, live); err != nil {
			errs = append(errs, err)
		}
		conns, events := live.FrontendConns(fe.Name)
		g.Conns[fe.Name] = ConnPlan{Conns: conns, Max: fe.Limits.MaxConns, PerClient: fe.Limits.MaxConnsPerClient}
		switch fe.Mode {
		case config.ModeTCP:
			for _, b := range fe.Bind {
				l4b, l4errs := compileL4(cfg, fe, b, upstreams)
				errs = append(errs, l4errs...)
				l4b.Log = f.AccessLog
				cb := &Bind{
					TCP:  listen.Spec{Frontend: fe.Name, Network: "tcp", Address: b.Address, FDName: b.FDName, Purpose: "TCP proxy"},
					L4:   l4b,
					Gate: gateFor(conns, events, fe.Name, b.Address),
				}
				f.Binds = append(f.Binds, cb)
				g.BindAt[b.Address] = cb
			}
			continue
		case config.ModeUDP:
			for _, b := range fe.Bind {
				r := compileRelay(fe, b, upstreams)
				r.Log = f.AccessLog
				r.Gate = gateFor(conns, events, fe.Name, b.Address)
				f.Relays = append(f.Relays, r)
				g.RelayAt[b.Address] = r
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
				errs = append(errs, cfg.Errorf(r.At.Value("host"), "frontend %q: host %v", fe.Name, err))
			}
			h, cerr := routeHandler(cfg, fe, r, backends[r.Backend])
			if cerr != nil {
				errs = append(errs, cerr)
			}
			router.Routes = append(router.Routes, proxy.Route{Host: host, PathPrefix: r.PathPrefix, Backend: backends[r.Backend], Handler: h})
		}
	}
	rl, rerrs := rateLimit(cfg, fe)
	errs = append(errs, rerrs...)
	pages, perrs := errorPages(cfg, fe, readFile)
	errs = append(errs, perrs...)
	f.ErrorPages = pages
	for _, b := range fe.Bind {
		limited := func(h http.Handler) http.Handler {
			lim := proxy.RateLimited(proxy.Limited(h, requestLimits(fe.Limits), events, fe.Name), rl, events, fe.Name)
			lim = proxy.Measured(lim, f.Metrics)
			return proxy.Paged(proxy.Logged(lim, proxy.LogOptions{Log: f.AccessLog, Frontend: fe.Name, TrustRequestID: b.AcceptProxy}), pages)
		}
		l4b, l4errs := compileL4(cfg, fe, b, upstreams)
		errs = append(errs, l4errs...)
		if l4b != nil {
			l4b.Log = f.AccessLog
		}
		cb := &Bind{
			TCP:     listen.Spec{Frontend: fe.Name, Network: "tcp", Address: b.Address, FDName: b.FDName, Purpose: "HTTP/1.1, h2c"},
			Handler: limited(&proxy.Handler{Router: router, Log: log.With("frontend", fe.Name)}),
			L4:      l4b,
			Gate:    gateFor(conns, events, fe.Name, b.Address),
			Limits:  httpLimits(fe.Limits),
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
			g.Notes = append(g.Notes, notes...)
			_, port, _ := net.SplitHostPort(b.Address)
			cb.Handler = limited(&proxy.Handler{Router: router, AltSvc: fmt.Sprintf(`h3=":%s"; ma=86400`, port), Log: log.With("frontend", fe.Name)})
		}
		f.Binds = append(f.Binds, cb)
		g.BindAt[b.Address] = cb
	}
	return errs
}

// TLSConfigs returns the certificates' configurations of g's binds, for
// the session ticket keys (tickets.Keys.UseGraph).
func (g *Graph) TLSConfigs() []*tls.Config {
	var confs []*tls.Config
	for _, b := range g.BindAt {
		if b.TLS != nil {
			confs = append(confs, b.TLS)
		}
	}
	return confs
}

// Specs lists every socket the graph needs.
func (g *Graph) Specs() []listen.Spec {
	return g.specs((*Bind).UDPSpecs)
}

// StartSpecs lists the sockets a fresh start (no passed sockets) binds
// for the graph: each HTTP/3 bind has its configured shards in two sets
// when the steering program loads (steered), else one socket. validate
// tells them from Specs, which lists the sockets of the compiled graph
// before startup has decided.
func (g *Graph) StartSpecs(steered bool) []listen.Spec {
	return g.specs(func(b *Bind) []listen.Spec {
		if b.QUIC == nil {
			return nil
		}
		q := *b.QUIC
		q.Shards, q.Sets = 1, 1
		if steered {
			q.Shards, q.Sets = q.Configured, 2
		}
		return (&Bind{UDP: b.UDP, QUIC: &q}).UDPSpecs()
	})
}

// specs lists every socket of the graph, with udp giving a bind's UDP
// sockets.
func (g *Graph) specs(udp func(*Bind) []listen.Spec) []listen.Spec {
	var specs []listen.Spec
	for _, f := range g.Frontends {
		for _, b := range f.Binds {
			specs = append(specs, b.TCP)
			specs = append(specs, udp(b)...)
		}
		for _, r := range f.Relays {
			specs = append(specs, r.Spec)
		}
	}
	return append(specs, g.Admin.specs()...)
}

// lookupUser looks up global.user and global.group, the identity to drop
// to. os/user's errors already say "user: " or "group: ", so a name that
// does not exist is reported in words of our own.
func lookupUser(cfg *config.Config) (*privilege.Target, *config.Error) {
	g := cfg.Global
	u, err := user.Lookup(g.User)
	if errors.As(err, new(user.UnknownUserError)) {
		return nil, cfg.Errorf(g.At.Value("user"), "global user %q: no such user (create it, e.g. useradd --system --no-create-home %s)", g.User, g.User)
	}
	if err != nil {
		return nil, cfg.Errorf(g.At.Value("user"), "global user %q: %v", g.User, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if uid == 0 {
		return nil, cfg.Errorf(g.At.Value("user"), "global user %q is root: choose an unprivileged account", g.User)
	}
	if g.Group != "" {
		grp, err := user.LookupGroup(g.Group)
		if errors.As(err, new(user.UnknownGroupError)) {
			return nil, cfg.Errorf(g.At.Value("group"), "global group %q: no such group (create it, e.g. groupadd --system %s)", g.Group, g.Group)
		}
		if err != nil {
			return nil, cfg.Errorf(g.At.Value("group"), "global group %q: %v", g.Group, err)
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
		// Both files are read before either error is reported, so a
		// missing certificate and a missing key are named together.
		certPEM, certErr := readFile(cfg.Path(c.Cert))
		if certErr != nil {
			errs = append(errs, cfg.Errorf(c.At.Value("cert"), "frontend %q: cannot read certificate: %v", frontend, certErr))
		}
		keyPEM, keyErr := readFile(cfg.Path(c.Key))
		if keyErr != nil {
			errs = append(errs, cfg.Errorf(c.At.Value("key"), "frontend %q: cannot read key: %v", frontend, keyErr))
		}
		if certErr != nil || keyErr != nil {
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

// accessLog returns the logger of fe's access log (nil without one), and
// records its writer in g.AccessLogs, shared by every frontend that
// names the same destination.
func (g *Graph) accessLog(cfg *config.Config, fe *config.Frontend, live Live) (*accesslog.Logger, *config.Error) {
	a := fe.AccessLog
	if a == nil {
		return nil, nil
	}
	format, err := accesslog.ParseFormat(a.Format)
	if err != nil {
		return nil, cfg.Errorf(a.At.Value("format"), "frontend %q: access_log %v (leave it out for json)", fe.Name, err)
	}
	to := a.To
	if to != "stdout" && to != "stderr" {
		to = cfg.Path(to)
	}
	w := g.AccessLogs[to]
	if w == nil {
		w = live.AccessLog(to)
		g.AccessLogs[to] = w
	}
	return &accesslog.Logger{W: w, Format: format}, nil
}
