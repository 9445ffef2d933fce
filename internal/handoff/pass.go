package handoff

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Passer gives file descriptors to the next image and says which number
// each will have there.
type Passer interface {
	// Pass keeps f open for the next image.
	Pass(f *os.File) (int, error)
	// PassFD does the same for a descriptor this process keeps owning.
	PassFD(fd int) (int, error)
}

// InPlace passes descriptors across an exec of this process: they keep
// their numbers once close-on-exec is cleared.
type InPlace struct{}

// Pass clears close-on-exec on f's descriptor.
func (InPlace) Pass(f *os.File) (int, error) { return InPlace{}.PassFD(int(f.Fd())) }

// PassFD clears close-on-exec on fd.
func (InPlace) PassFD(fd int) (int, error) {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
		return 0, fmt.Errorf("keep fd %d open across exec: %w", fd, err)
	}
	return fd, nil
}

// ToChild collects descriptors for exec.Cmd.ExtraFiles (Files), which
// the child sees as 3, 4, ... in order. It passes duplicates, made
// without os.File.Fd, which would turn a socket this process still serves
// on to blocking mode: the file description, and its flags, are shared.
// The zero value is ready to use.
type ToChild struct {
	files []*os.File
}

// Pass duplicates f for the child.
func (c *ToChild) Pass(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("duplicate %s: %w", f.Name(), err)
	}
	var d int
	var derr error
	if err := rc.Control(func(fd uintptr) { d, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return 0, fmt.Errorf("duplicate %s: %w", f.Name(), err)
	}
	if derr != nil {
		return 0, fmt.Errorf("duplicate %s: %w", f.Name(), derr)
	}
	c.files = append(c.files, os.NewFile(uintptr(d), f.Name()))
	return 2 + len(c.files), nil
}

// PassFD duplicates fd for the child.
func (c *ToChild) PassFD(fd int) (int, error) {
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("duplicate fd %d: %w", fd, err)
	}
	c.files = append(c.files, os.NewFile(uintptr(d), "handoff"))
	return 2 + len(c.files), nil
}

// Files returns the duplicates in the order passed: exec.Cmd.ExtraFiles.
func (c *ToChild) Files() []*os.File { return c.files }

// Close closes the duplicates: call it once the child has started.
func (c *ToChild) Close() {
	for _, f := range c.files {
		f.Close()
	}
}
