package handoff

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteTakeLogs: the access-log files a handoff carries reach the
// next image as open files, by path.
func TestWriteTakeLogs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := &Handoff{LogFiles: map[string]*os.File{path: f}}
	env, mem, err := h.Write(nil, nil, dupPasser{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	_, fd, _ := strings.Cut(env, "=")
	t.Setenv(Env, fd)
	got, _, err := Take()
	if err != nil {
		t.Fatal(err)
	}
	g := got.LogFiles[path]
	if g == nil || len(got.LogFiles) != 1 {
		t.Fatalf("Take returned the log files %v, want %s", got.LogFiles, path)
	}
	defer g.Close()
	if _, err := g.Write([]byte("line\n")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "line\n" {
		t.Errorf("the file holds %q, want the line written through the passed descriptor", b)
	}
}
