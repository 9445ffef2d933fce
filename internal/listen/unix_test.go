package listen

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBindUnix: the socket is 0660 from the start, a stale socket file
// is replaced, and a socket another process serves or a file that is not
// a socket is refused.
func TestBindUnix(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "admin.sock")
	f, err := BindUnix(path, -1)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != UnixMode {
		t.Fatalf("socket file: %v %v, want a socket with mode %o", fi.Mode(), err, UnixMode)
	}
	p, err := FromFD(int(f.Fd()), "admin", SourceBound)
	if err != nil || p.Network != "unix" || p.Path != path || !p.MatchesAddress(path) {
		t.Fatalf("FromFD of the socket: %+v %v", p, err)
	}
	if _, err := BindUnix(path, -1); err == nil || !strings.Contains(err.Error(), "another process accepts") {
		t.Errorf("bind over a served socket: %v", err)
	}
	f.Close() // the file stays; nothing accepts on it now
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("closing removed the socket file: %v", err)
	}
	f, err = BindUnix(path, -1)
	if err != nil {
		t.Fatalf("bind over a stale socket: %v", err)
	}
	f.Close()
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		t.Error("a closed socket still accepts")
	}

	plain := filepath.Join(dir, "file")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := BindUnix(plain, -1); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("bind over a regular file: %v", err)
	}
}
