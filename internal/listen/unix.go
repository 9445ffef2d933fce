package listen

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// UnixMode is the file mode of the unix sockets BindUnix creates: the
// owner and the socket's group may connect, nobody else.
const UnixMode = 0o660

// BindUnix creates a listening unix stream socket at path, with mode
// UnixMode and, when group ≥ 0, owned by that group. A missing directory
// is created (mode 0755). A stale socket file (nothing accepts on it) is
// replaced; a socket another process serves, or a file that is not a
// socket, is an error. The file stays when the socket is closed, so that
// the next process of a binary upgrade goes on serving it; the next start
// replaces it. The caller owns the returned file.
func BindUnix(path string, group int) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("%v (create the directory before starting, e.g. with RuntimeDirectory= in the systemd unit)", unwrapPath(err))
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	// The socket is created with the group and mode it keeps: no moment
	// where anyone else could connect. The group is the process's
	// effective group for the bind (which needs CAP_SETGID, as the drop
	// does; chown would need CAP_CHOWN, which the units do not grant).
	if group >= 0 && group != os.Getegid() {
		egid := os.Getegid()
		if err := syscall.Setegid(group); err != nil {
			return nil, fmt.Errorf("create the socket with group %d: setegid: %v", group, err)
		}
		defer syscall.Setegid(egid)
	}
	old := unix.Umask(0o777 &^ UnixMode)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, unwrapOp(err)
	}
	l.SetUnlinkOnClose(false)
	defer l.Close()
	return l.File()
}

// removeStale removes a socket file at path that nothing accepts on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return unwrapPath(err)
	case fi.Mode()&fs.ModeSocket == 0:
		return fmt.Errorf("%s exists and is not a socket: remove it or choose another path", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("another process accepts on %s (a running portcullis?): stop it, or choose another path", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove the stale socket: %v", unwrapPath(err))
	}
	return nil
}

// unwrapPath strips a *fs.PathError's operation, keeping the path and
// the cause.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %v", pe.Path, pe.Err)
	}
	return err
}

// fromUnixFD describes a passed unix socket: it must be a listening
// stream socket bound to a path.
func fromUnixFD(fd int, name, source string, typ int, path string) (*Passed, error) {
	if typ != unix.SOCK_STREAM {
		return nil, fmt.Errorf("fd %d (%q) is a unix socket but not a stream socket: use ListenStream=", fd, name)
	}
	if on, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); on == 0 {
		return nil, fmt.Errorf("fd %d (%q, unix %s) is not listening: use ListenStream= with Accept=no", fd, name, path)
	}
	unix.CloseOnExec(fd)
	p := &Passed{Name: name, Network: "unix", Path: path, Source: source}
	p.File = os.NewFile(uintptr(fd), fmt.Sprintf("%s:unix/%s", name, path))
	return p, nil
}

// where is the passed socket's address or path, for messages.
func (p *Passed) where() string {
	if p.Network == "unix" {
		return p.Path
	}
	return p.Addr.String()
}
