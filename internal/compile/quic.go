package compile

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

// QUIC is the compiled HTTP/3 side of a bind.
type QUIC struct {
	// Shards is how many sockets serve the address in each socket set.
	// Compile sets the configured number; startup lowers it to 1 when
	// steering cannot be loaded, and later generations take the number
	// the sockets have (SetQUICSockets).
	Shards int
	// Sets is 2 when the steering program serves the bind (a set of
	// Shards sockets per process generation, so that a binary upgrade
	// keeps the connections), else 1 (one socket, no steering).
	Sets int
	// Configured is the number of shards the configuration asks for (the
	// number of CPUs, at most 8, when it sets none): a reload compares
	// it, not Shards, to tell whether the transports must change.
	Configured int
	// Format is the connection ID format (quic.server_id).
	Format quiclb.CIDFormat
	// ResetFile and TokenFile are the key files; "" for a random key.
	ResetFile, TokenFile string
	// ResetKey and TokenKey are the keys, read from the files or random.
	ResetKey *quic.StatelessResetKey
	TokenKey *quic.TokenGeneratorKey
	// Handshakes are the limits on new connections: Retry and
	// max_handshakes. A reload applies them to the running transports.
	Handshakes h3.HandshakeLimits
	// HandshakeTimeout is quic.Config.HandshakeIdleTimeout
	// (quic.handshake_timeout).
	HandshakeTimeout time.Duration
	// IdleTimeout is quic.idle_timeout: 0 for the frontend's
	// limits.idle_timeout (see Bind.H3IdleTimeout).
	IdleTimeout time.Duration
	// RcvBuf and SndBuf are the sockets' buffer sizes in bytes
	// (quic.rcvbuf, quic.sndbuf).
	RcvBuf, SndBuf int
	// Notes are said when the bind goes live (random keys).
	Notes []string
}

// maxAutoShards caps the default number of shards (one per CPU).
const maxAutoShards = 8

// compileQUIC builds the HTTP/3 settings of a bind: shards, connection ID
// format and keys. Notes (random keys) are logged once.
func compileQUIC(cfg *config.Config, fe string, b *config.Bind, readFile config.ReadFileFunc) (*QUIC, []string, config.ErrorList) {
	q := b.QUIC
	if q == nil {
		q = config.DefaultQUIC()
	}
	qb := &QUIC{Shards: q.Shards, Sets: 1, RcvBuf: q.RcvBuf, SndBuf: q.SndBuf,
		HandshakeTimeout: q.HandshakeTimeout, IdleTimeout: q.IdleTimeout}
	if qb.Shards == 0 {
		qb.Shards = min(gort.NumCPU(), maxAutoShards)
	}
	qb.Configured = qb.Shards
	var errs config.ErrorList
	var id []byte
	var err error
	if q.ServerID != "" {
		id, err = quiclb.ParseServerID(q.ServerID)
	}
	if err == nil {
		qb.Format, err = quiclb.NewCIDFormat(id)
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
	qb.ResetFile, qb.TokenFile = path(q.StatelessResetKeyFile), path(q.TokenKeyFile)
	reset, token, notes, err := h3.LoadKeys(qb.ResetFile, qb.TokenFile, readFile)
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
	qb.Handshakes = h3.HandshakeLimits{Retry: mode, RetryRate: q.RetryRate, RetryInProgress: q.RetryInProgress, MaxHandshakes: q.MaxHandshakes}
	if err := qb.Handshakes.Check(); err != nil {
		errs = append(errs, cfg.Errorf(q.At.Self, "frontend %q: %v", fe, err))
	}
	qb.ResetKey, qb.TokenKey = reset, token
	for i, n := range notes {
		notes[i] = fmt.Sprintf("frontend %q %s: %s", fe, b.Address, n)
	}
	qb.Notes = notes
	return qb, notes, errs
}

// UDPSpecs lists a bind's UDP sockets: one per shard, for each socket
// set (generation 0's shards, then generation 1's).
func (b *Bind) UDPSpecs() []listen.Spec {
	if b.UDP == nil {
		return nil
	}
	n, sets := b.QUIC.Shards, max(b.QUIC.Sets, 1)
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

// ShardCounts records the number of shards (per socket set) of every
// HTTP/3 bind.
func (g *Graph) ShardCounts() map[string]int {
	m := map[string]int{}
	for _, b := range g.BindAt {
		if b.QUIC != nil {
			m[b.TCP.Address] = b.QUIC.Shards
		}
	}
	return m
}

// SetQUICSockets applies the shard counts decided earlier (by startup
// steering, or by the process that handed its sockets over) and gives the
// binds with a steering program two socket sets.
func (g *Graph) SetQUICSockets(shards map[string]int, steered map[string]quiclb.SteeringFDs) {
	for addr, n := range shards {
		if b := g.BindAt[addr]; b != nil && b.QUIC != nil {
			b.QUIC.Shards, b.QUIC.Sets = n, 1
			if _, ok := steered[addr]; ok {
				b.QUIC.Sets = 2
			}
		}
	}
}

// H3IdleTimeout is the idle timeout of the bind's HTTP/3 connections:
// quic.idle_timeout, or the frontend's limits.idle_timeout.
func (b *Bind) H3IdleTimeout() time.Duration {
	if b.QUIC.IdleTimeout > 0 {
		return b.QUIC.IdleTimeout
	}
	return b.Limits.IdleTimeout
}
