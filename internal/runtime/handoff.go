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
	pquic "github.com/portcullis/portcullis/internal/quic"
)

// handoffEnv names the file descriptor of the handoff a privileged process
// passes to its re-executed, unprivileged self.
const handoffEnv = "PORTCULLIS_HANDOFF"

// handoff is what the privileged stage gives the unprivileged one: every
// socket, and the bytes of every file it read (configuration, certificates,
// keys), so that key files may stay readable by root only.
type handoff struct {
	// Dropped says privileges were dropped before the exec: the new image
	// must find no capability, no root and no_new_privs on every thread.
	Dropped bool
	Files   map[string][]byte
	Sockets []handoffSocket
	// Shards is the number of QUIC shards of each HTTP/3 bind, by address,
	// as decided while privileged (steering loaded, or one shard).
	Shards map[string]int
	// Counters are the file descriptors of the steering programs' packet
	// counter maps, by address.
	Counters map[string]int
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

func (r *recorder) ReadFile(name string) ([]byte, error) {
	b, err := os.ReadFile(name)
	if err == nil {
		r.files[name] = b
	}
	return b, err
}

// ReadFile serves the files the privileged stage read.
func (h *handoff) ReadFile(name string) ([]byte, error) {
	if b, ok := h.Files[name]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("open %s: not read before privileges were dropped", name)
}

var _ config.ReadFileFunc = (*handoff)(nil).ReadFile

// write stores h in an anonymous memory file and marks it and every socket
// to survive exec. It returns the environment entry to pass and the file,
// which the caller keeps referenced until the exec.
func (h *handoff) write(sockets []*listen.Socket, counters map[string]*pquic.Counters) (string, *os.File, error) {
	h.Counters = map[string]int{}
	for addr, c := range counters {
		if _, err := unix.FcntlInt(uintptr(c.FD()), unix.F_SETFD, 0); err != nil {
			return "", nil, fmt.Errorf("keep the steering counters of %s open across exec: %w", addr, err)
		}
		h.Counters[addr] = c.FD()
	}
	for _, s := range sockets {
		fd := int(s.File.Fd())
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
			return "", nil, fmt.Errorf("keep %s open across exec: %w", s.Spec, err)
		}
		name, source := s.Name, s.Source
		if source == "bound" {
			source = "inherited"
		}
		h.Sockets = append(h.Sockets, handoffSocket{FD: fd, Name: name, Source: source})
	}
	data, err := json.Marshal(h)
	if err != nil {
		return "", nil, err
	}
	fd, err := unix.MemfdCreate("portcullis-handoff", 0)
	if err != nil {
		return "", nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "handoff")
	if _, err := f.Write(data); err != nil {
		f.Close()
		return "", nil, fmt.Errorf("write handoff: %w", err)
	}
	return handoffEnv + "=" + strconv.Itoa(fd), f, nil
}

// counters opens the handed-over steering counter maps.
func (h *handoff) counters() (map[string]*pquic.Counters, error) {
	out := map[string]*pquic.Counters{}
	for addr, fd := range h.Counters {
		unix.CloseOnExec(fd)
		c, err := pquic.OpenCounters(fd)
		if err != nil {
			return nil, fmt.Errorf("handoff: %w", err)
		}
		out[addr] = c
	}
	return out, nil
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
