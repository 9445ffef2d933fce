package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	gort "runtime"
	"sort"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/listen"
	pquic "github.com/portcullis/portcullis/internal/quic"
)

// quicBind is the compiled HTTP/3 side of a bind.
type quicBind struct {
	// shards is how many sockets serve the address. Compile sets the
	// configured number; startup lowers it to 1 when steering cannot be
	// loaded, and later generations take the number the sockets have.
	shards int
	// configured is the number of shards the configuration asks for (the
	// number of CPUs, at most maxAutoShards, when it sets none): a reload
	// compares it, not shards, to tell whether the transports must change.
	configured int
	format     pquic.CIDFormat
	// resetFile and tokenFile are the key files; "" for a random key.
	resetFile, tokenFile string
	resetKey             *quic.StatelessResetKey
	tokenKey             *quic.TokenGeneratorKey
	retry                *pquic.RetryPolicy
	rcvbuf               int
	sndbuf               int
}

// maxAutoShards caps the default number of shards (one per CPU).
const maxAutoShards = 8

// compileQUIC builds the HTTP/3 settings of a bind: shards, connection ID
// format and keys. Notes (random keys) are logged once.
func compileQUIC(cfg *config.Config, fe string, b *config.Bind, readFile config.ReadFileFunc) (*quicBind, []string, config.ErrorList) {
	q := b.QUIC
	if q == nil {
		q = &config.QUIC{Retry: config.DefaultRetry, RcvBuf: config.DefaultQUICBuffer, SndBuf: config.DefaultQUICBuffer}
	}
	qb := &quicBind{shards: q.Shards, rcvbuf: q.RcvBuf, sndbuf: q.SndBuf}
	if qb.shards == 0 {
		qb.shards = min(gort.NumCPU(), maxAutoShards)
	}
	qb.configured = qb.shards
	var errs config.ErrorList
	var id []byte
	var err error
	if q.ServerID != "" {
		id, err = pquic.ParseServerID(q.ServerID)
	}
	if err == nil {
		qb.format, err = pquic.NewCIDFormat(id)
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
	reset, token, notes, err := pquic.LoadKeys(qb.resetFile, qb.tokenFile, readFile)
	if err != nil {
		pos := q.At.Self
		var kerr *pquic.KeyFileError
		if errors.As(err, &kerr) {
			pos = q.At.Value(kerr.Setting)
		}
		errs = append(errs, cfg.Errorf(pos, "frontend %q: %v", fe, err))
	}
	mode, err := pquic.ParseRetryMode(q.Retry)
	if err == nil {
		qb.retry, err = pquic.NewRetryPolicy(mode, pquic.RetryLimits{})
	}
	if err != nil {
		errs = append(errs, cfg.Errorf(q.At.Value("retry"), "frontend %q: %v", fe, err))
	}
	qb.resetKey, qb.tokenKey = reset, token
	for i, n := range notes {
		notes[i] = fmt.Sprintf("frontend %q %s: %s", fe, b.Address, n)
	}
	return qb, notes, errs
}

// udpSpecs lists a bind's UDP sockets, one per shard.
func (b *Bind) udpSpecs() []listen.Spec {
	if b.UDP == nil {
		return nil
	}
	n := b.QUIC.shards
	specs := make([]listen.Spec, n)
	for i := range specs {
		specs[i] = *b.UDP
		specs[i].Shard, specs[i].Shards = i, n
	}
	return specs
}

// shardCounts records the number of shards of every HTTP/3 bind.
func (g *Graph) shardCounts() map[string]int {
	m := map[string]int{}
	for _, b := range g.binds {
		if b.QUIC != nil {
			m[b.TCP.Address] = b.QUIC.shards
		}
	}
	return m
}

// setShardCounts applies counts decided earlier (by startup steering, or
// by the process that handed its sockets over).
func (g *Graph) setShardCounts(m map[string]int) {
	for addr, n := range m {
		if b := g.binds[addr]; b != nil && b.QUIC != nil {
			b.QUIC.shards = n
		}
	}
}

// steering loads the reuseport program of every bind with more than one
// shard, before any socket is bound. A bind whose program cannot be loaded
// falls back to one shard, said once with the reason and the remedy: shards
// are never run unsteered. passed sockets (socket activation) fix the
// number of shards of their address.
func steering(g *Graph, passed []*listen.Passed, log *slog.Logger) (map[string]*pquic.Steering, error) {
	passedUDP := map[string]int{}
	for _, p := range passed {
		if p.Network == "udp" {
			for addr := range g.binds {
				if p.MatchesAddress(addr) {
					passedUDP[addr]++
				}
			}
		}
	}
	out := map[string]*pquic.Steering{}
	addrs := make([]string, 0, len(g.binds))
	for addr := range g.binds {
		addrs = append(addrs, addr)
	}
	sort.Strings(addrs)
	for _, addr := range addrs {
		b := g.binds[addr]
		if b.QUIC == nil {
			continue
		}
		if n := passedUDP[addr]; n > 0 {
			b.QUIC.shards = n
		}
		if b.QUIC.shards <= 1 {
			continue
		}
		st, err := pquic.LoadSteering(b.QUIC.shards, b.QUIC.format.ShardOffset())
		if err != nil {
			if passedUDP[addr] > 1 {
				// The sockets exist already, and several unsteered shards
				// would reset connections whose address changes.
				for _, st := range out {
					st.Close()
				}
				return nil, fmt.Errorf("QUIC on %s: %d UDP sockets were passed, but the steering program that keeps each connection on its socket cannot be loaded (%v): pass one ListenDatagram= socket for the address, or grant CAP_BPF at startup", addr, passedUDP[addr], err)
			}
			log.Warn("QUIC: one shard instead of several: the steering program cannot be loaded; to use every core for HTTP/3, start as root (or grant CAP_BPF, or CAP_SYS_ADMIN, at startup only), or set quic shards: 1 to silence this",
				"address", addr, "shards_wanted", b.QUIC.shards, "reason", err)
			b.QUIC.shards = 1
			continue
		}
		out[addr] = st
	}
	return out, nil
}

// attachSteering puts each bind's sockets into its program's map, in shard
// order, and attaches the program. It returns the programs' packet
// counters by address.
func attachSteering(steer map[string]*pquic.Steering, sockets []*listen.Socket) (map[string]*pquic.Counters, error) {
	counters := map[string]*pquic.Counters{}
	for addr, st := range steer {
		var fds []int
		for _, s := range sockets {
			if s.Network == "udp" && s.Address == addr {
				fds = append(fds, int(s.File.Fd()))
			}
		}
		if err := st.Attach(fds); err != nil {
			return nil, fmt.Errorf("QUIC on %s: %w", addr, err)
		}
		st.Close() // the kernel keeps the attached program and its map
		counters[addr] = st.Counters
	}
	return counters, nil
}

// metricsInterval is how often per-shard QUIC numbers are logged (debug).
const metricsInterval = time.Minute

// watchShards logs a bind's per-shard numbers every metricsInterval, with
// the packet counts of its steering program when it has one.
func watchShards(ctx context.Context, m *pquic.Metrics, counters *pquic.Counters, log *slog.Logger) {
	go m.LogEvery(ctx, metricsInterval, log)
	if counters == nil {
		return
	}
	go func() {
		last := make([]uint64, m.Shards())
		t := time.NewTicker(metricsInterval / 4)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			for i, n := range counters.Read(m.Shards()) {
				m.AddSteered(i, n-last[i])
				last[i] = n
			}
		}
	}()
}
