package runtime

import (
	"github.com/portcullis/portcullis/internal/compile"
	"github.com/portcullis/portcullis/internal/h3"
	"github.com/portcullis/portcullis/internal/handoff"
	"github.com/portcullis/portcullis/internal/metrics"
)

// useMetrics makes the process's metrics, starting from what the old
// process of a binary upgrade handed over (h), and gives the servers
// their handles.
func (r *registry) useMetrics(h *handoff.Handoff) {
	var handed []byte
	if h != nil && h.Upgrade != nil {
		handed = h.Upgrade.Metrics
	}
	r.metrics = metrics.New(handed)
	r.servers.UseMetrics(r.metrics)
}

// Metrics is the process's metrics (compile.Live); nil for a nil
// registry.
func (r *registry) Metrics() *metrics.Metrics {
	if r == nil {
		return nil
	}
	return r.metrics
}

// commitMetrics exports the metrics of g's frontends, backends and
// servers (nil g: none).
func (r *registry) commitMetrics(g *compile.Graph) {
	var fs, bs []string
	var ss [][2]string
	if g != nil {
		for _, f := range g.Frontends {
			fs = append(fs, f.Name)
		}
		for _, b := range g.Upstreams {
			bs = append(bs, b.Name())
			for _, s := range b.Servers() {
				ss = append(ss, [2]string{b.Name(), s.Address()})
			}
		}
	}
	r.metrics.Commit(fs, bs, ss)
}

// metrics is the process's metrics; nil in tests that serve a graph
// without a registry.
func (s *serving) metrics() *metrics.Metrics { return s.start.reg.Metrics() }

// quicMetrics exports the shard counters of u's server.
func (u *quicUnit) quicMetrics(frontend, address string) *metrics.QUIC {
	return u.s.metrics().QUIC(frontend, address, func() []metrics.QUICShard {
		return quicShards(u.srv.ShardStats(), u.forward)
	})
}

func quicShards(stats []h3.ShardStats, fwd *h3.ForwardConn) []metrics.QUICShard {
	out := make([]metrics.QUICShard, len(stats))
	for i, st := range stats {
		out[i] = metrics.QUICShard{PacketsIn: st.Packets, PacketsOut: st.Sent, Misrouted: st.Misrouted, Retries: st.Retries, Handshakes: st.Accepted}
	}
	if fwd != nil && len(out) == 1 {
		out[0].Forwarded, _ = fwd.Forwarded()
	}
	return out
}
