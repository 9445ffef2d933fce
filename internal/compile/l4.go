package compile

import (
	"fmt"
	"github.com/portcullis/portcullis/internal/accesslog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/hostname"
	"github.com/portcullis/portcullis/internal/l4"
	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/proxyproto"
	"github.com/portcullis/portcullis/internal/upstream"
)

// L4 is the layer-4 part of a bind: the routes of a tcp frontend (or
// the sni routes of an http one) and how connections are accepted.
type L4 struct {
	// Table routes connections; for an http bind it holds only the sni
	// (passthrough) routes, and connections no route takes are served as
	// HTTP.
	Table *l4.Table
	// AcceptProxy reads PROXY headers from the Trusted peers
	// (trusted_proxies) and refuses them from anyone else.
	AcceptProxy bool
	Trusted     proxyproto.Trusted
	// HeaderTimeout bounds the PROXY header and the ClientHello: the
	// bind's proxy_timeout (default config.DefaultProxyTimeout).
	HeaderTimeout time.Duration
	// IdleTimeout closes idle relayed connections: the frontend's
	// idle_timeout (default config.DefaultTCPIdleTimeout, which is also
	// the one of an http frontend's sni passthrough routes).
	IdleTimeout time.Duration
	// Log writes one line per relayed connection; nil: none.
	Log *accesslog.Logger
}

// Relay is a compiled bind of a udp frontend.
type Relay struct {
	// Spec is the relay's UDP socket.
	Spec listen.Spec
	// Backend gets every datagram; BackendName names it in logs.
	Backend     *upstream.Backend
	BackendName string
	// IdleTimeout forgets idle flows: the frontend's idle_timeout
	// (default config.DefaultUDPIdleTimeout).
	IdleTimeout time.Duration
	// Gate counts the flows against the frontend's connection limits.
	Gate *limit.Gate
	// Log writes one line per flow; nil: none.
	Log *accesslog.Logger
}

// compileL4 builds the layer-4 part of a bind of an http or tcp frontend;
// nil for an http bind that has neither sni routes nor accept_proxy.
// Errors point into cfg.
func compileL4(cfg *config.Config, fe *config.Frontend, b *config.Bind, backends map[string]*upstream.Backend) (*L4, config.ErrorList) {
	var routes []l4.Route
	var errs config.ErrorList
	for _, r := range fe.Routes {
		if fe.Mode == config.ModeTCP || r.SNI != "" {
			name, err := hostname.ParsePattern(r.SNI)
			if err != nil {
				errs = append(errs, cfg.Errorf(r.At.Value("sni"), "frontend %q: sni %v", fe.Name, err))
			}
			routes = append(routes, l4.Route{SNI: name, ALPN: r.ALPN, Backend: backends[r.Backend], BackendName: r.Backend})
		}
	}
	if fe.Mode != config.ModeTCP && len(routes) == 0 && !b.AcceptProxy {
		return nil, errs
	}
	// The configuration validated the prefixes.
	trusted, _ := proxyproto.ParseTrusted(b.TrustedProxies)
	return &L4{
		Table:         l4.NewTable(routes),
		AcceptProxy:   b.AcceptProxy,
		Trusted:       trusted,
		HeaderTimeout: b.ProxyTimeout,
		IdleTimeout:   relayIdleTimeout(fe),
	}, errs
}

// relayIdleTimeout is the idle timeout of the connections fe relays: its
// idle_timeout, or for an http frontend, which has none (configuration
// refuses it there), that of a tcp frontend that sets none.
func relayIdleTimeout(fe *config.Frontend) time.Duration {
	if fe.IdleTimeout == 0 {
		return config.DefaultTCPIdleTimeout
	}
	return fe.IdleTimeout
}

// compileRelay builds a bind of a udp frontend.
func compileRelay(fe *config.Frontend, b *config.Bind, backends map[string]*upstream.Backend) *Relay {
	name := ""
	if len(fe.Routes) > 0 {
		name = fe.Routes[0].Backend
	}
	return &Relay{
		Spec:        listen.Spec{Frontend: fe.Name, Network: "udp", Address: b.Address, FDName: b.FDName, Purpose: "UDP relay"},
		Backend:     backends[name],
		BackendName: name,
		IdleTimeout: fe.IdleTimeout,
	}
}

// TrustedGate returns the Gate for the accept loop of a bind with a layer-4
// side, g told which peers send PROXY headers: their connections count in
// the totals at accept and against the client a header names once it is
// read (accept.ReadProxyHeader calls Ticket.Move), not against the proxy
// that sent them. Nil for nil.
func (l *L4) TrustedGate(g *limit.Gate) *limit.Gate {
	if g == nil || !l.AcceptProxy || g.Trusted != nil {
		return g
	}
	trusted := l.Trusted
	c := *g
	c.Trusted = func(ip netip.Addr) bool {
		return trusted.Contains(net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	}
	return &c
}

// Settings describes how a bind's accept path takes connections, which
// its steps fix when they start (part of tcpKind).
func (l *L4) Settings() string {
	if l == nil {
		return ""
	}
	var trusted []string
	for _, p := range l.Trusted {
		trusted = append(trusted, p.String())
	}
	return fmt.Sprintf("accept_proxy %v, trusted_proxies [%s], proxy_timeout %s, idle_timeout %s, sni routes %v",
		l.AcceptProxy, strings.Join(trusted, " "), l.HeaderTimeout, l.IdleTimeout, l.Table.NeedHello())
}
