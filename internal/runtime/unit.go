package runtime

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/portcullis/portcullis/internal/compile"
	"github.com/portcullis/portcullis/internal/listen"
)

// The listeners of the process are units, keyed by kind and address:
//
//	"tcp ADDR"   the TCP socket of an http or tcp bind and its servers
//	             (an http.Server, an l4.TCP, or both)
//	"quic ADDR"  the UDP sockets (shards) of an http bind's HTTP/3 and
//	             their h3.Server (one quic.Transport each)
//	"udp ADDR"   the UDP socket of a udp frontend's bind and its l4.UDP
//	"admin ADDR" the admin listener, or the admin unix socket (ADDR its
//	             path), and its HTTP server (unit_admin.go)
//
// Each unit owns its sockets and its servers. A reload compares the running
// units with those the new graph needs (diffUnits): a unit with the same
// key and kind is kept, with its sockets, servers and connections; one with
// the same key and another kind gets new servers on the same sockets; new
// keys get new sockets; the others stop.
type unit interface {
	// spec is what the unit serves now.
	spec() unitSpec
	// sockets returns the unit's sockets, in shard order.
	sockets() []*listen.Socket
	// update makes a kept unit serve the new graph's bind or relay, of the
	// same kind, from the next connection (or request, or flow) on.
	update(unitSpec)
	// stopAccepting closes the unit's sockets and the servers' duplicates
	// of them, so that new connections are refused (unless release gave
	// the sockets to a replacement, which goes on accepting on them). It
	// does not wait.
	stopAccepting()
	// settle, before a reload drains the unit, lets connections accepted
	// just before it stopped accepting reach the point where drain serves
	// them (see tcpUnit.settle). A stop of the process does not wait for
	// it.
	settle(ctx context.Context)
	// drain lets the servers finish their connections (GOAWAY on HTTP/2
	// and HTTP/3, in-flight requests, relayed connections) until ctx
	// ends, then closes those left. Call stopAccepting first.
	drain(ctx context.Context) error
	// close closes the servers, their connections and the sockets at once.
	// It may be called more than once, and after drain.
	close()
	// release gives the sockets to the unit's replacement: stopAccepting
	// and close leave them open from then on.
	release()
}

// stop stops a unit gracefully: stopAccepting, then drain until ctx ends.
func stop(ctx context.Context, u unit) error {
	u.stopAccepting()
	return u.drain(ctx)
}

// unitSpec is a unit a graph needs.
type unitSpec struct {
	// key is "tcp ADDR", "quic ADDR" or "udp ADDR".
	key string
	// kind says what the servers are started for. Servers cannot change
	// kind: a reload that changes it gets new servers on the same sockets,
	// or, for HTTP/3, is refused.
	kind string
	// specs are the unit's sockets: one, or one per QUIC shard.
	specs []listen.Spec
	// bind is the bind of a "tcp" or "quic" unit.
	bind *compile.Bind
	// relay is the bind of a "udp" unit.
	relay *compile.Relay
	// admin is the admin block of an "admin" unit.
	admin *compile.Admin
}

// Kinds of units: the first word of a unit's key.
const (
	unitTCP  = "tcp"
	unitQUIC = "quic"
	unitUDP  = "udp"
)

// unitKind returns the first word of a unit key, and address the rest.
func unitKind(key string) (kind, address string) {
	kind, address, _ = strings.Cut(key, " ")
	return kind, address
}

// frontend names the frontend a unit serves, for messages.
func (us unitSpec) frontend() string {
	if len(us.specs) > 0 {
		return us.specs[0].Frontend
	}
	return ""
}

// unitSpecs lists the units g needs, in the order of the configuration.
func unitSpecs(g *compile.Graph) []unitSpec {
	var out []unitSpec
	for _, f := range g.Frontends {
		for _, b := range f.Binds {
			out = append(out, unitSpec{key: unitTCP + " " + b.TCP.Address, kind: tcpKind(b), specs: []listen.Spec{b.TCP}, bind: b})
			if b.UDP != nil {
				out = append(out, unitSpec{key: unitQUIC + " " + b.TCP.Address, kind: quicKind(b.QUIC), specs: b.UDPSpecs(), bind: b})
			}
		}
		for _, r := range f.Relays {
			out = append(out, unitSpec{key: unitUDP + " " + r.Spec.Address, kind: relayKind(r), specs: []listen.Spec{r.Spec}, relay: r})
		}
	}
	return append(out, adminUnitSpecs(g)...)
}

// tcpKind is what the servers of a bind's TCP socket are started for: the
// frontend (named in their logs), HTTP or HTTPS or a layer-4 proxy, and how
// the layer-4 side accepts connections.
func tcpKind(b *compile.Bind) string {
	what := "tcp proxy"
	switch {
	case b.Handler != nil && b.TLS != nil:
		what = "HTTPS"
	case b.Handler != nil:
		what = "HTTP"
	}
	kind := fmt.Sprintf("frontend %q, %s", b.TCP.Frontend, what)
	if b.Handler != nil {
		kind += ", " + b.Limits.String()
	}
	if b.L4 != nil {
		kind += ", " + b.L4.Settings()
	}
	return kind
}

// relayKind is what a udp relay is started for.
func relayKind(r *compile.Relay) string {
	return fmt.Sprintf("frontend %q, udp relay, idle_timeout %s", r.Spec.Frontend, r.IdleTimeout)
}

// quicSetting is one setting fixed in a bind's QUIC transports.
type quicSetting struct {
	name, value string
	// shown says whether value may appear in messages (keys may not).
	shown bool
}

// quicSettings are the settings of a bind's HTTP/3 that its
// quic.Transports (and their quic.Config) hold from their start: changing
// one needs new transports, which would drop the bind's connections. Keys
// from files are compared by a hash of their bytes; random keys compare
// equal (a kept transport keeps its own). The retry mode and the
// handshake limits are not among them: transports ask the current ones.
// idle_timeout is the quic block's own (0 when it follows the frontend's
// limits.idle_timeout, which a reload keeps for HTTP/3 with a note).
func quicSettings(q *compile.QUIC) []quicSetting {
	key := func(file string, k []byte) string {
		if file == "" {
			return "random"
		}
		return fmt.Sprintf("%s sha256:%x", file, sha256.Sum256(k))
	}
	return []quicSetting{
		{"server_id", fmt.Sprintf("%x", q.Format.ServerID), true},
		{"stateless_reset_key_file", key(q.ResetFile, q.ResetKey[:]), false},
		{"token_key_file", key(q.TokenFile, q.TokenKey[:]), false},
		{"shards", fmt.Sprint(q.Configured), true},
		{"rcvbuf", fmt.Sprint(q.RcvBuf), true},
		{"sndbuf", fmt.Sprint(q.SndBuf), true},
		{"handshake_timeout", q.HandshakeTimeout.String(), true},
		{"idle_timeout", q.IdleTimeout.String(), true},
	}
}

func quicKind(q *compile.QUIC) string {
	var b strings.Builder
	for _, s := range quicSettings(q) {
		fmt.Fprintf(&b, "%s=%s;", s.name, s.value)
	}
	return b.String()
}

// quicChanges names the transport settings that differ between a and b.
func quicChanges(a, b *compile.QUIC) []string {
	var out []string
	sb := quicSettings(b)
	for i, s := range quicSettings(a) {
		switch {
		case s.value == sb[i].value:
		case s.shown:
			out = append(out, fmt.Sprintf("%s (running: %s; new: %s)", s.name, orDefault(s.value), orDefault(sb[i].value)))
		default:
			out = append(out, s.name+" (another key)")
		}
	}
	return out
}

func orDefault(v string) string {
	if v == "" {
		return "none"
	}
	return v
}

// unitDiff is what a reload does to the units.
type unitDiff struct {
	// keep are units whose key and kind stay: they go on serving, with the
	// new bind or relay.
	keep []unitSpec
	// replace are units whose key stays and whose kind changes ("tcp",
	// "udp"): new servers start on the same sockets, the old ones stop
	// accepting and drain.
	replace []unitSpec
	// add are new keys: their sockets are acquired first.
	add []unitSpec
	// remove are the keys of units the new graph does not have.
	remove []string
}

// diffUnits compares the running units with those a new graph wants. It
// refuses changes that would drop connections or that need a socket the
// process still holds for another purpose:
//   - an HTTP/3 bind whose transport settings change (see quicSettings);
//   - a UDP address that moves between HTTP/3 and a udp frontend.
func diffUnits(running map[string]unitSpec, want []unitSpec) (unitDiff, error) {
	var d unitDiff
	var errs []string
	wanted := map[string]bool{}
	for _, w := range want {
		wanted[w.key] = true
		r, ok := running[w.key]
		kind, addr := unitKind(w.key)
		switch {
		case !ok:
			d.add = append(d.add, w)
		case r.kind == w.kind:
			d.keep = append(d.keep, w)
		case kind == unitQUIC:
			errs = append(errs, fmt.Sprintf("frontend %q, HTTP/3 on udp %s: a reload cannot change %s: the bind's QUIC transports would have to be replaced, dropping their connections; restart to apply it (an upgrade keeps the running configuration and its QUIC sockets)",
				w.frontend(), addr, strings.Join(quicChanges(r.bind.QUIC, w.bind.QUIC), ", ")))
		default:
			d.replace = append(d.replace, w)
		}
	}
	for key := range running {
		if !wanted[key] {
			d.remove = append(d.remove, key)
		}
	}
	slices.Sort(d.remove)
	for _, a := range d.add {
		kind, addr := unitKind(a.key)
		other := map[string]string{unitQUIC: unitUDP, unitUDP: unitQUIC}[kind]
		if r, ok := running[other+" "+addr]; ok && other != "" {
			errs = append(errs, fmt.Sprintf("udp %s: a reload cannot move the address from %s (frontend %q) to %s (frontend %q) at once: its socket is still in use; remove the bind in one reload and add the new one in the next, or restart",
				addr, describeUnit(other), r.frontend(), describeUnit(kind), a.frontend()))
		}
	}
	if len(errs) > 0 {
		return unitDiff{}, fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return d, nil
}

func describeUnit(kind string) string {
	if kind == unitQUIC {
		return "HTTP/3"
	}
	return "a udp frontend"
}

// socketSet is the sockets of a unit, closed with it unless released.
type socketSet struct {
	mu       sync.Mutex
	list     []*listen.Socket
	released bool
}

func (s *socketSet) sockets() []*listen.Socket {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.list)
}

// setSpecs gives the sockets a kept unit's new specs (frontend, purpose,
// fd_name): the same sockets, described by the configuration that now
// uses them.
func (s *socketSet) setSpecs(specs []listen.Spec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, sock := range s.list {
		if i < len(specs) {
			c := *sock
			c.Spec = specs[i]
			c.Spec.Shard, c.Spec.Shards = sock.Shard, sock.Shards
			s.list[i] = &c
		}
	}
}

func (s *socketSet) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.released = true
}

// closeFiles closes the sockets' own descriptors unless released. The
// servers' duplicates (net.FileListener, net.FilePacketConn) are closed by
// the unit.
func (s *socketSet) closeFiles() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.released {
		return
	}
	for _, sock := range s.list {
		sock.File.Close()
	}
}

// withSpecs returns sockets with the same files described by specs, for a
// replacement unit.
func withSpecs(socks []*listen.Socket, specs []listen.Spec) []*listen.Socket {
	out := make([]*listen.Socket, len(socks))
	for i, sock := range socks {
		c := *sock
		if i < len(specs) {
			c.Spec = specs[i]
			c.Spec.Shard, c.Spec.Shards = sock.Shard, sock.Shards
		}
		out[i] = &c
	}
	return out
}
