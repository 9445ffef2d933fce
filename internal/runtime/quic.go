package runtime

import (
	"errors"
	"fmt"
	gort "runtime"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/h3"
	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/quiclb"
)

// quicBind is the compiled HTTP/3 side of a bind.
type quicBind struct {
	// shards is how many sockets serve the address in each socket set.
	// Compile sets the configured number; startup lowers it to 1 when
	// steering cannot be loaded, and later generations take the number
	// the sockets have.
	shards int
	// sets is 2 when the steering program serves the bind (a set of
	// shards sockets per process generation, so that a binary upgrade
	// keeps the connections), else 1 (one socket, no steering).
	sets int
	// configured is the number of shards the configuration asks for (the
	// number of CPUs, at most maxAutoShards, when it sets none): a reload
	// compares it, not shards, to tell whether the transports must change.
	configured int
	format     quiclb.CIDFormat
	// resetFile and tokenFile are the key files; "" for a random key.
	resetFile, tokenFile string
	resetKey             *quic.StatelessResetKey
	tokenKey             *quic.TokenGeneratorKey
	// handshakes are the limits on new connections: Retry and
	// max_handshakes. A reload applies them to the running transports
	// (quicUnit.update).
	handshakes h3.HandshakeLimits
	// handshakeTimeout is quic.Config.HandshakeIdleTimeout.
	handshakeTimeout time.Duration
	// idleTimeout is quic.idle_timeout: 0 for the frontend's
	// limits.idle_timeout (see h3IdleTimeout).
	idleTimeout time.Duration
	rcvbuf      int
	sndbuf      int
	// notes are said when the bind goes live (random keys).
	notes []string
}

// maxAutoShards caps the default number of shards (one per CPU).
const maxAutoShards = 8

// compileQUIC builds the HTTP/3 settings of a bind: shards, connection ID
// format and keys. Notes (random keys) are logged once.
func compileQUIC(cfg *config.Config, fe string, b *config.Bind, readFile config.ReadFileFunc) (*quicBind, []string, config.ErrorList) {
	q := b.QUIC
	if q == nil {
		q = config.DefaultQUIC()
	}
	qb := &quicBind{shards: q.Shards, sets: 1, rcvbuf: q.RcvBuf, sndbuf: q.SndBuf,
		handshakeTimeout: q.HandshakeTimeout, idleTimeout: q.IdleTimeout}
	if qb.shards == 0 {
		qb.shards = min(gort.NumCPU(), maxAutoShards)
	}
	qb.configured = qb.shards
	var errs config.ErrorList
	var id []byte
	var err error
	if q.ServerID != "" {
		id, err = quiclb.ParseServerID(q.ServerID)
	}
	if err == nil {
		qb.format, err = quiclb.NewCIDFormat(id)
	}
	if err != nil {
		errs = append(errs, cfg.Errorf(q.At.Value("server_id"), "frontend %q: quic: %v", fe, err))
	}
	path := func(p string) string {
		if p == "" {
			return ""
		}
		return cfg.Path(p)
	}
	qb.resetFile, qb.tokenFile = path(q.StatelessResetKeyFile), path(q.TokenKeyFile)
	reset, token, notes, err := h3.LoadKeys(qb.resetFile, qb.tokenFile, readFile)
	if err != nil {
		pos := q.At.Self
		var kerr *h3.KeyFileError
		if errors.As(err, &kerr) {
			pos = q.At.Value(kerr.Setting)
		}
		errs = append(errs, cfg.Errorf(pos, "frontend %q: %v", fe, err))
	}
	mode, err := h3.ParseRetryMode(q.Retry)
	if err != nil {
		errs = append(errs, cfg.Errorf(q.At.Value("retry"), "frontend %q: %v", fe, err))
	}
	qb.handshakes = h3.HandshakeLimits{Retry: mode, RetryRate: q.RetryRate, RetryInProgress: q.RetryInProgress, MaxHandshakes: q.MaxHandshakes}
	if err := qb.handshakes.Check(); err != nil {
		errs = append(errs, cfg.Errorf(q.At.Self, "frontend %q: %v", fe, err))
	}
	qb.resetKey, qb.tokenKey = reset, token
	for i, n := range notes {
		notes[i] = fmt.Sprintf("frontend %q %s: %s", fe, b.Address, n)
	}
	qb.notes = notes
	return qb, notes, errs
}

// udpSpecs lists a bind's UDP sockets: one per shard, for each socket
// set (generation 0's shards, then generation 1's).
func (b *Bind) udpSpecs() []listen.Spec {
	if b.UDP == nil {
		return nil
	}
	n, sets := b.QUIC.shards, max(b.QUIC.sets, 1)
	specs := make([]listen.Spec, n*sets)
	for i := range specs {
		specs[i] = *b.UDP
		specs[i].Shard, specs[i].Shards = i%n, n
		if sets > 1 {
			specs[i].Set, specs[i].Sets = i/n, sets
		}
	}
	return specs
}

// shardCounts records the number of shards (per socket set) of every
// HTTP/3 bind.
func (g *Graph) shardCounts() map[string]int {
	m := map[string]int{}
	for _, b := range g.binds {
		if b.QUIC != nil {
			m[b.TCP.Address] = b.QUIC.shards
		}
	}
	return m
}

// setQUICSockets applies the shard counts decided earlier (by startup
// steering, or by the process that handed its sockets over) and gives the
// binds with a steering program two socket sets.
func (g *Graph) setQUICSockets(shards map[string]int, steered map[string]quiclb.SteeringFDs) {
	for addr, n := range shards {
		if b := g.binds[addr]; b != nil && b.QUIC != nil {
			b.QUIC.shards, b.QUIC.sets = n, 1
			if _, ok := steered[addr]; ok {
				b.QUIC.sets = 2
			}
		}
	}
}

// h3IdleTimeout is the idle timeout of the bind's HTTP/3 connections:
// quic.idle_timeout, or the frontend's limits.idle_timeout.
func (b *Bind) h3IdleTimeout() time.Duration {
	if b.QUIC.idleTimeout > 0 {
		return b.QUIC.idleTimeout
	}
	return b.Limits.idleTimeout
}
