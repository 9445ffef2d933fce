package runtime

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/internal/testutil"
)

// TestLoadEmbedded: without a file, Run compiles the embedded
// configuration, reads the files it names with its ReadFile (nothing from
// the file system, nothing recorded for a handoff), and names it in its
// errors; with neither, it refuses to start.
func TestLoadEmbedded(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteCert(t, dir, "default.test")
	files := map[string][]byte{}
	for _, name := range []string{"default.test.pem", "default.test.key"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = b
	}
	var read []string
	readFile := func(name string) ([]byte, error) {
		read = append(read, name)
		if b, ok := files[name]; ok {
			return b, nil
		}
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	const conf = `frontends:
  web:
    bind:
      - address: 127.0.0.1:8443
        tls:
          certificates:
            - cert: default.test.pem
              key: default.test.key
    routes:
      - backend: demo
backends:
  demo:
    servers:
      - address: 127.0.0.1:9001
`
	opt := Options{Log: slog.New(slog.DiscardHandler), Embedded: &Embedded{Name: "embedded.yaml", Data: []byte(conf), ReadFile: readFile}}
	g, recorded, err := load(opt, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if g.BindAt["127.0.0.1:8443"] == nil || len(read) != 2 {
		t.Errorf("compiled binds %v, read %q; want the bind on 127.0.0.1:8443 and its two files", g.BindAt, read)
	}
	if len(recorded) != 0 {
		t.Errorf("recorded %d files for a handoff, want none", len(recorded))
	}

	opt.Embedded.Data = []byte("frontends: [\n")
	if _, _, err := load(opt, nil, nil); err == nil || !strings.Contains(err.Error(), "embedded.yaml:") {
		t.Errorf("a broken embedded configuration: %v, want an error naming embedded.yaml", err)
	}
	if _, _, err := load(Options{Log: opt.Log}, nil, nil); !errors.Is(err, errNoConfig) {
		t.Errorf("no configuration at all: %v, want errNoConfig", err)
	}
}
