package runtime

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/quiclb"
)

// handoffEnv names the file descriptor of the handoff a process passes to
// the next program image: its own re-executed, unprivileged self (the
// privilege drop), or the new process of a binary upgrade.
const handoffEnv = "PORTCULLIS_HANDOFF"

// handoff is what a process gives the next image: every socket, and the
// bytes of every file the running configuration was compiled from
// (configuration, certificates, keys), so that key files may stay
// readable by root only. File descriptors are the numbers the next image
// sees.
type handoff struct {
	// Dropped says privileges were dropped before the exec: the new image
	// must find no capability, no root and no_new_privs on every thread.
	Dropped bool
	// Executable is the path the first process was started from, resolved
	// before any drop: a binary upgrade starts the file found there then.
	Executable string
	Files      map[string][]byte
	Sockets    []handoffSocket
	// Shards is the number of QUIC shards (per socket set) of each HTTP/3
	// bind, by address, as decided while privileged (steering loaded, or
	// one shard).
	Shards map[string]int
	// Steering are the descriptors of the steering programs' maps, by
	// address: the binds with two socket sets.
	Steering map[string]quiclb.SteeringFDs
	// Upgrade is set for the new process of a binary upgrade.
	Upgrade *upgradeHandoff `json:",omitempty"`
}

type handoffSocket struct {
	FD     int
	Name   string
	Source string
}

// recorder reads files and remembers their bytes for a handoff.
type recorder struct {
	files map[string][]byte
}

func newRecorder() *recorder { return &recorder{files: map[string][]byte{}} }

func (r *recorder) ReadFile(name string) ([]byte, error) {
	b, err := os.ReadFile(name)
	if err == nil {
		r.files[name] = b
	}
	return b, err
}

// ReadFile serves the files the previous image read.
func (h *handoff) ReadFile(name string) ([]byte, error) {
	if b, ok := h.Files[name]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("open %s: not among the files the previous process read", name)
}

var _ config.ReadFileFunc = (*handoff)(nil).ReadFile

// fdPasser gives file descriptors to the next image and says which number
// each will have there.
type fdPasser interface {
	// pass keeps f open for the next image.
	pass(f *os.File) (int, error)
	// passFD does the same for a descriptor this process keeps owning.
	passFD(fd int) (int, error)
}

// inPlace passes descriptors across an exec of this process: they keep
// their numbers once close-on-exec is cleared.
type inPlace struct{}

func (inPlace) pass(f *os.File) (int, error) { return inPlace{}.passFD(int(f.Fd())) }

func (inPlace) passFD(fd int) (int, error) {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
		return 0, fmt.Errorf("keep fd %d open across exec: %w", fd, err)
	}
	return fd, nil
}

// toChild collects descriptors for exec.Cmd.ExtraFiles, which the child
// sees as 3, 4, ... in order. It passes duplicates, made without
// os.File.Fd, which would turn a socket this process still serves on to
// blocking mode: the file description, and its flags, are shared.
type toChild struct {
	files []*os.File
}

func (c *toChild) pass(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var d int
	var derr error
	if err := rc.Control(func(fd uintptr) { d, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return 0, err
	}
	if derr != nil {
		return 0, fmt.Errorf("duplicate %s: %w", f.Name(), derr)
	}
	c.files = append(c.files, os.NewFile(uintptr(d), f.Name()))
	return 2 + len(c.files), nil
}

func (c *toChild) passFD(fd int) (int, error) {
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("duplicate fd %d: %w", fd, err)
	}
	c.files = append(c.files, os.NewFile(uintptr(d), "handoff"))
	return 2 + len(c.files), nil
}

// close closes the duplicates: call it once the child has started.
func (c *toChild) close() {
	for _, f := range c.files {
		f.Close()
	}
}

// write passes every socket and steering map through p, stores h in an
// anonymous memory file and passes that too. It returns the environment
// entry to set and the file, which the caller closes once the next image
// has it.
func (h *handoff) write(sockets []*listen.Socket, steer map[string]*quiclb.Steering, p fdPasser) (string, *os.File, error) {
	h.Steering = map[string]quiclb.SteeringFDs{}
	for addr, st := range steer {
		fds := st.FDs()
		var err error
		for _, fd := range []*int{&fds.Sockets, &fds.State, &fds.Counters} {
			if *fd, err = p.passFD(*fd); err != nil {
				return "", nil, fmt.Errorf("the steering maps of %s: %w", addr, err)
			}
		}
		h.Steering[addr] = fds
	}
	h.Sockets = nil
	for _, s := range sockets {
		fd, err := p.pass(s.File)
		if err != nil {
			return "", nil, fmt.Errorf("%s: %w", s.Spec, err)
		}
		source := s.Source
		if source == "bound" {
			source = "inherited"
		}
		h.Sockets = append(h.Sockets, handoffSocket{FD: fd, Name: s.Name, Source: source})
	}
	data, err := json.Marshal(h)
	if err != nil {
		return "", nil, err
	}
	mfd, err := unix.MemfdCreate("portcullis-handoff", unix.MFD_CLOEXEC)
	if err != nil {
		return "", nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(mfd), "handoff")
	if _, err := f.Write(data); err != nil {
		f.Close()
		return "", nil, fmt.Errorf("write handoff: %w", err)
	}
	fd, err := p.pass(f)
	if err != nil {
		f.Close()
		return "", nil, err
	}
	return handoffEnv + "=" + strconv.Itoa(fd), f, nil
}

// takeHandoff reads the handoff named by the environment, if any, and
// removes the variable.
func takeHandoff() (*handoff, []*listen.Passed, error) {
	v, ok := os.LookupEnv(handoffEnv)
	if !ok {
		return nil, nil, nil
	}
	os.Unsetenv(handoffEnv)
	fd, err := strconv.Atoi(v)
	if err != nil {
		return nil, nil, fmt.Errorf("%s=%q: not a file descriptor", handoffEnv, v)
	}
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "handoff")
	defer f.Close()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, nil, fmt.Errorf("read handoff: %w", err)
	}
	var h handoff
	if err := json.NewDecoder(f).Decode(&h); err != nil {
		return nil, nil, fmt.Errorf("read handoff: %w", err)
	}
	if h.Upgrade != nil {
		h.Upgrade.closeOnExec()
	}
	var passed []*listen.Passed
	for _, s := range h.Sockets {
		p, err := listen.FromFD(s.FD, s.Name, s.Source)
		if err != nil {
			return nil, nil, fmt.Errorf("handoff: %w", err)
		}
		passed = append(passed, p)
	}
	return &h, passed, nil
}
