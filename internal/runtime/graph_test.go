package runtime

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/portcullis/portcullis/internal/compile"
)

// compileFile compiles yaml, written to dir as portcullis.yaml, as
// Validate does.
func compileFile(t *testing.T, dir, yaml string) (*compile.Graph, error) {
	t.Helper()
	path := filepath.Join(dir, "portcullis.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return Validate(Options{ConfigPath: path, Log: slog.New(slog.DiscardHandler)})
}

const twoCerts = `frontends:
  web:
    bind:
      - address: 127.0.0.1:8443
        http3: true
        tls:
          certificates:
            - cert: default.test.pem
              key: default.test.key
            - cert: other.test.pem
              key: other.test.key
    routes:
      - backend: app
backends:
  app:
    servers:
      - address: 127.0.0.1:9001
`
