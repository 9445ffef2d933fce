package runtime

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/hostname"
	"github.com/portcullis/portcullis/internal/l4"
	"github.com/portcullis/portcullis/internal/limit"
	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/proxy"
	"github.com/portcullis/portcullis/internal/proxyproto"
)

// l4Bind is the layer-4 part of a bind: the routes of a tcp frontend (or
// the sni routes of an http one) and how connections are accepted.
type l4Bind struct {
	// Table routes connections; for an http bind it holds only the sni
	// (passthrough) routes, and connections no route takes are served as
	// HTTP.
	Table *l4.Table
	// AcceptProxy reads PROXY headers from Trusted peers.
	AcceptProxy bool
	Trusted     proxyproto.Trusted
	// HeaderTimeout bounds the PROXY header and the ClientHello.
	HeaderTimeout time.Duration
	// IdleTimeout closes idle relayed connections (tcp frontends).
	IdleTimeout time.Duration
}

// Relay is a compiled bind of a udp frontend.
type Relay struct {
	Spec        listen.Spec
	Backend     *proxy.Backend
	BackendName string
	IdleTimeout time.Duration
	// Gate counts the flows against the frontend's connection limits.
	Gate *limit.Gate
}

// compileL4 builds the layer-4 part of a bind of an http or tcp frontend;
// nil for an http bind that has neither sni routes nor accept_proxy.
// Errors point into cfg.
func compileL4(cfg *config.Config, fe *config.Frontend, b *config.Bind, backends map[string]*proxy.Backend) (*l4Bind, config.ErrorList) {
	var routes []l4.Route
	var errs config.ErrorList
	for _, r := range fe.Routes {
		if fe.Mode == config.ModeTCP || r.SNI != "" {
			name, err := hostname.ParsePattern(r.SNI)
			if err != nil {
				errs = append(errs, cfg.Errorf(r.At.Value("sni"), "frontend %q: %v", fe.Name, err))
			}
			routes = append(routes, l4.Route{SNI: name, ALPN: r.ALPN, Backend: backends[r.Backend], BackendName: r.Backend})
		}
	}
	if fe.Mode != config.ModeTCP && len(routes) == 0 && !b.AcceptProxy {
		return nil, errs
	}
	// The configuration validated the prefixes.
	trusted, _ := proxyproto.ParseTrusted(b.TrustedProxies)
	return &l4Bind{
		Table:         l4.NewTable(routes),
		AcceptProxy:   b.AcceptProxy,
		Trusted:       trusted,
		HeaderTimeout: b.ProxyTimeout,
		IdleTimeout:   fe.IdleTimeout,
	}, errs
}

// compileRelay builds a bind of a udp frontend.
func compileRelay(fe *config.Frontend, b *config.Bind, backends map[string]*proxy.Backend) *Relay {
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

// gate returns the Gate for the layer-4 side of a bind, g told which peers
// send PROXY headers: their connections count in the totals at accept and
// against the client a header names once it is read (l4.TCP calls
// Ticket.Move), not against the proxy that sent them. Nil for nil.
func (l *l4Bind) gate(g *limit.Gate) *limit.Gate {
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

// settings describes how a layer-4 listener accepts connections, which
// its l4.TCP fixes when it starts (part of tcpKind).
func (l *l4Bind) settings() string {
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

// proxyListener accepts connections on a bind with accept_proxy and
// passes each to its http.Server once the PROXY header of a trusted peer
// is read, in the connection's own goroutine, so that a slow peer holds up
// nobody else.
//
// Once ln is closed, connections still reading their header are passed on
// until the proxyListener itself is closed (the http.Server's Shutdown or
// Close does), so that a listener a reload replaces loses none.
type proxyListener struct {
	ln    net.Listener
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	// waiting counts connections accepted and not yet taken by Accept
	// (or closed).
	waiting atomic.Int64
}

// newProxyListener starts accepting on ln. Accept errors are summarized
// by gate (one line per second); without one, logged each.
func newProxyListener(ln net.Listener, b *l4Bind, gate *limit.Gate, log *slog.Logger) *proxyListener {
	p := &proxyListener{ln: ln, conns: make(chan net.Conn), done: make(chan struct{})}
	go func() {
		var delay time.Duration
		for {
			c, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				// Out of file descriptors, most likely: back off as
				// net/http does, and keep serving.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				if gate != nil && gate.Events != nil {
					gate.AcceptFailed(err)
				} else {
					log.Warn("accept failed; retrying", "in", delay, "error", err)
				}
				time.Sleep(delay)
				continue
			}
			delay = 0
			p.waiting.Add(1)
			go func() {
				defer p.waiting.Add(-1)
				pc, err := proxyproto.Accept(c, b.Trusted, b.HeaderTimeout)
				if err != nil {
					log.Warn("closing connection: no valid PROXY header from a trusted proxy", "peer", c.RemoteAddr().String(), "error", err)
					c.Close()
					return
				}
				if !verifyUntrusted(pc, b.HeaderTimeout, log) {
					return
				}
				select {
				case p.conns <- pc:
				case <-p.done:
					c.Close()
				}
			}()
		}
	}()
	return p
}

// verifyUntrusted waits up to timeout for the first bytes of a peer
// outside trusted_proxies and refuses the connection, with a log line,
// when they start a PROXY header: the http.Server would otherwise answer
// it with a bare 400. A peer that sends nothing in time (a browser's
// preconnection) is served: the check then happens at its first read. It
// reports whether the connection may be served.
func verifyUntrusted(pc *proxyproto.Conn, timeout time.Duration, log *slog.Logger) bool {
	pc.SetReadDeadline(time.Now().Add(timeout))
	err := pc.Verify()
	pc.SetReadDeadline(time.Time{})
	switch {
	case err == nil, errors.Is(err, os.ErrDeadlineExceeded):
		return true
	case errors.Is(err, proxyproto.ErrUntrustedHeader):
		log.Warn("closing connection: PROXY header from an address outside trusted_proxies; add the address there, or stop the client sending one", "peer", pc.Peer().String(), "error", err)
	}
	pc.Close()
	return false
}

// Accept returns the next connection whose header has been read.
func (p *proxyListener) Accept() (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.done:
		return nil, net.ErrClosed
	}
}

// pending returns the number of accepted connections not yet taken by
// Accept: still reading their header, or waiting for Accept.
func (p *proxyListener) pending() int { return int(p.waiting.Load()) }

// Close stops accepting; connections still reading their header are
// closed.
func (p *proxyListener) Close() error {
	p.once.Do(func() {
		close(p.done)
		p.ln.Close()
	})
	return nil
}

func (p *proxyListener) Addr() net.Addr { return p.ln.Addr() }
