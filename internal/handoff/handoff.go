// Package handoff is what a portcullis process passes to the next program
// image: its own re-executed, unprivileged self (the privilege drop), or
// the new process of a binary upgrade. A handoff carries every listening
// socket, the QUIC steering maps, the bytes of every file the running
// configuration was compiled from, and, for an upgrade, the keys the
// running servers use. It travels as JSON in an anonymous memory file
// whose descriptor the environment variable Env names.
//
// The runtime decides when to hand off and starts the next image; this
// package only writes and reads what is handed off.
package handoff

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/quiclb"
)

// Env names the file descriptor of the handoff in the next image's
// environment.
const Env = "PORTCULLIS_HANDOFF"

// Handoff is what a process gives the next image: every socket, and the
// bytes of every file the running configuration was compiled from
// (configuration, certificates, keys), so that key files may stay
// readable by root only. File descriptors are the numbers the next image
// sees.
type Handoff struct {
	// Dropped says privileges were dropped before the exec: the new image
	// must find no capability, no root and no_new_privs on every thread.
	Dropped bool
	// Executable is the path the first process was started from, resolved
	// before any drop: a binary upgrade starts the file found there then.
	Executable string
	// Files are the bytes of the files the running configuration was
	// compiled from, by the name the configuration gives them (ReadFile).
	Files map[string][]byte
	// Sockets are the listening sockets, set by Write.
	Sockets []Socket
	// Shards is the number of QUIC shards (per socket set) of each HTTP/3
	// bind, by address, as decided while privileged (steering loaded, or
	// one shard).
	Shards map[string]int
	// Steering are the descriptors of the steering programs' maps, by
	// address: the binds with two socket sets. Set by Write.
	Steering map[string]quiclb.SteeringFDs
	// Upgrade is set for the new process of a binary upgrade.
	Upgrade *Upgrade `json:",omitempty"`
	// Logs are the descriptors, in the next image, of the access-log
	// files opened while privileged, by path. Set by Write from LogFiles.
	Logs map[string]int `json:",omitempty"`
	// LogFiles are the access-log files to pass, by path (a privilege
	// drop opens them as root, so that a file in a directory only root
	// may write to stays writable). Not encoded: Write passes them.
	LogFiles map[string]*os.File `json:"-"`
}

// Socket is a listening socket in a handoff.
type Socket struct {
	// FD is the descriptor number in the next image.
	FD int
	// Name is the socket's name (listen.Socket.Name).
	Name string
	// Source says where the socket came from (listen.Source*): systemd,
	// this process before its privilege drop, or a previous process.
	Source string
}

// ReadFile serves the files the previous image read; any other name is
// an error.
func (h *Handoff) ReadFile(name string) ([]byte, error) {
	if b, ok := h.Files[name]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("open %s: not among the files the previous process read", name)
}

// Write passes every socket and steering map through p, stores h in an
// anonymous memory file and passes that too. It returns the environment
// entry to set (Env=FD) and the file, which the caller closes once the
// next image has it.
func (h *Handoff) Write(sockets []*listen.Socket, steer map[string]*quiclb.Steering, p Passer) (string, *os.File, error) {
	if err := h.passSteering(steer, p); err != nil {
		return "", nil, err
	}
	if err := h.passSockets(sockets, p); err != nil {
		return "", nil, err
	}
	h.Logs = nil
	for path, f := range h.LogFiles {
		fd, err := p.Pass(f)
		if err != nil {
			return "", nil, fmt.Errorf("access log %s: %w", path, err)
		}
		if h.Logs == nil {
			h.Logs = map[string]int{}
		}
		h.Logs[path] = fd
	}
	data, err := json.Marshal(h)
	if err != nil {
		return "", nil, fmt.Errorf("encode handoff: %w", err)
	}
	mfd, err := unix.MemfdCreate("portcullis-handoff", unix.MFD_CLOEXEC)
	if err != nil {
		return "", nil, fmt.Errorf("handoff: memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(mfd), "handoff")
	if _, err := f.Write(data); err != nil {
		f.Close()
		return "", nil, fmt.Errorf("write handoff: %w", err)
	}
	fd, err := p.Pass(f)
	if err != nil {
		f.Close()
		return "", nil, fmt.Errorf("pass handoff: %w", err)
	}
	return Env + "=" + strconv.Itoa(fd), f, nil
}

// passSteering passes the maps of every steering program and records
// their numbers in h.Steering.
func (h *Handoff) passSteering(steer map[string]*quiclb.Steering, p Passer) error {
	h.Steering = map[string]quiclb.SteeringFDs{}
	for addr, st := range steer {
		fds := st.FDs()
		var err error
		for _, fd := range []*int{&fds.Sockets, &fds.State, &fds.Counters} {
			if *fd, err = p.PassFD(*fd); err != nil {
				return fmt.Errorf("the steering maps of %s: %w", addr, err)
			}
		}
		h.Steering[addr] = fds
	}
	return nil
}

// passSockets passes every socket and records it in h.Sockets. A socket
// this process bound is, for the next image, "bound before drop" when h
// is a privilege drop, and "inherited" when it is a binary upgrade, as is
// every socket not from systemd.
func (h *Handoff) passSockets(sockets []*listen.Socket, p Passer) error {
	h.Sockets = nil
	for _, s := range sockets {
		fd, err := p.Pass(s.File)
		if err != nil {
			return fmt.Errorf("%s: %w", s.Spec, err)
		}
		source := s.Source
		switch {
		case source == listen.SourceSystemd:
		case h.Dropped && h.Upgrade == nil:
			source = listen.SourceBoundBeforeDrop
		default:
			source = listen.SourceInherited
		}
		h.Sockets = append(h.Sockets, Socket{FD: fd, Name: s.Name, Source: source})
	}
	return nil
}

// Take reads the handoff named by the environment, if any, and removes
// the variable. It returns nil, nil, nil for a process started afresh,
// and otherwise the handoff and its sockets, ready for listen.Acquire.
func Take() (*Handoff, []*listen.Passed, error) {
	v, ok := os.LookupEnv(Env)
	if !ok {
		return nil, nil, nil
	}
	os.Unsetenv(Env)
	fd, err := strconv.Atoi(v)
	if err != nil {
		return nil, nil, fmt.Errorf("%s=%q: not a file descriptor", Env, v)
	}
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "handoff")
	defer f.Close()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, nil, fmt.Errorf("read handoff: %w", err)
	}
	var h Handoff
	if err := json.NewDecoder(f).Decode(&h); err != nil {
		return nil, nil, fmt.Errorf("read handoff: %w", err)
	}
	if h.Upgrade != nil {
		h.Upgrade.closeOnExec()
	}
	for path, fd := range h.Logs {
		unix.CloseOnExec(fd)
		if h.LogFiles == nil {
			h.LogFiles = map[string]*os.File{}
		}
		h.LogFiles[path] = os.NewFile(uintptr(fd), path)
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
