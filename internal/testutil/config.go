package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

// WriteConfig writes yaml to dir as portcullis.yaml and returns its path.
func WriteConfig(t testing.TB, dir, yaml string) string {
	t.Helper()
	path := filepath.Join(dir, "portcullis.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TwoCerts is a configuration with one HTTPS bind, with HTTP/3, on
// 127.0.0.1:8443 and two certificates (WriteCert's default.test, the
// default, and other.test), in front of one server.
const TwoCerts = `frontends:
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
