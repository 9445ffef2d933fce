package h3

import (
	"context"
	"log/slog"
	"time"
)

// metricsInterval is how often per-shard QUIC numbers are logged (debug).
const metricsInterval = time.Minute

// watchShards logs a bind's per-shard numbers every metricsInterval.
func watchShards(ctx context.Context, m *Metrics, log *slog.Logger) {
	go m.LogEvery(ctx, metricsInterval, log)
}
