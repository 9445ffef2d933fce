package h3

import (
	"context"
	"log/slog"
	"time"

	"github.com/portcullis/portcullis/internal/quiclb"
)

// metricsInterval is how often per-shard QUIC numbers are logged (debug).
const metricsInterval = time.Minute

// watchShards logs a bind's per-shard numbers every metricsInterval, with
// the packet counts of its steering program, for the shards of generation
// gen, when it has one.
func watchShards(ctx context.Context, m *Metrics, counters *quiclb.Counters, gen quiclb.Generation, log *slog.Logger) {
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
			for i, n := range counters.ReadGeneration(gen, m.Shards()) {
				m.AddSteered(i, n-last[i])
				last[i] = n
			}
		}
	}()
}
