package accesslog

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func lines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("\n"))
}

func TestWriterCloseFlushes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	w := NewWriter(path, 0, slog.New(slog.DiscardHandler))
	if err := w.Open(); err != nil {
		t.Fatal(err)
	}
	l := &Logger{W: w, Format: JSON}
	for range 1000 {
		l.Log(sample())
	}
	w.Close()
	if n := lines(t, path); n != 1000 {
		t.Errorf("%d lines after Close, want 1000", n)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm()&^0o640 != 0 {
		t.Errorf("mode %v, want 0640 (less by the umask)", fi.Mode().Perm())
	}
	l.Log(sample()) // after Close: dropped, no panic
	w.Close()
}

func TestWriterReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	w := NewWriter(path, 0, slog.New(slog.DiscardHandler))
	if err := w.Open(); err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var wg sync.WaitGroup
	const writers, each = 8, 2000
	for i := range writers {
		wg.Go(func() {
			for j := range each {
				w.Write(fmt.Appendf(nil, "%d %d\n", i, j))
			}
		})
	}
	rotated := filepath.Join(dir, "access.log.1")
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	if err := w.Reopen(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	w.Close()
	if a, b := lines(t, rotated), lines(t, path); a+b != writers*each {
		t.Errorf("%d + %d lines across both files, want %d", a, b, writers*each)
	}
}

// TestWriterDropsWhenFull: a full buffer drops lines and counts them,
// and the count is reported in the log.
func TestWriterDropsWhenFull(t *testing.T) {
	var logged bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logged}, nil))
	w := NewWriter("stdout", 100, log) // not opened: nothing drains it
	line := []byte(strings.Repeat("x", 39) + "\n")
	for range 10 {
		w.Write(line)
	}
	if d := w.Dropped(); d != 8 {
		t.Errorf("dropped %d, want 8 (two 40-byte lines fit in 100 bytes)", d)
	}
	w.report()
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logged.String(), "dropped=8") || w.Dropped() != 0 {
		t.Errorf("report: %q, %d left", logged.String(), w.Dropped())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func TestWriterOpenError(t *testing.T) {
	w := NewWriter(filepath.Join(t.TempDir(), "missing", "access.log"), 0, slog.New(slog.DiscardHandler))
	if err := w.Open(); err == nil || !strings.Contains(err.Error(), "the directory must exist") {
		t.Errorf("Open: %v", err)
	}
	w.Close()
}
