package runtime

import (
	"log/slog"
	"testing"

	"github.com/portcullis/portcullis/internal/compile"
	"github.com/portcullis/portcullis/internal/testutil"
)

// compileFile compiles yaml, written to dir as portcullis.yaml, as
// Validate does.
func compileFile(t *testing.T, dir, yaml string) (*compile.Graph, error) {
	t.Helper()
	path := testutil.WriteConfig(t, dir, yaml)
	return Validate(Options{ConfigPath: path, Log: slog.New(slog.DiscardHandler)})
}
