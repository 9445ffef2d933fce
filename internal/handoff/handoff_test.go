package handoff

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/portcullis/portcullis/internal/listen"
)

// dupPasser passes duplicates under their own numbers, as if this process
// were the next image. Take closes the handoff's; the test leaves the
// others open.
type dupPasser struct{}

func (p dupPasser) Pass(f *os.File) (int, error) { return p.PassFD(int(f.Fd())) }

func (dupPasser) PassFD(fd int) (int, error) { return unix.Dup(fd) }

// TestWriteTake: what Write stores, Take reads back from the descriptor
// the environment names, and removes the variable; the files handed off
// are served by name and no others.
func TestWriteTake(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	want := &Handoff{
		Dropped:    true,
		Executable: "/usr/bin/portcullis",
		Files:      map[string][]byte{"/etc/portcullis.yaml": []byte("global: {}\n")},
		Shards:     map[string]int{"127.0.0.1:8443": 2},
		Upgrade: &Upgrade{
			PID: 42, Generation: 1, Ready: int(w.Fd()),
			QUIC:       map[string]QUICBind{"127.0.0.1:8443": {ResetKey: [32]byte{1}, TokenKey: [32]byte{2}, Forward: -1}},
			TicketKeys: [][32]byte{{3}, {4}},
		},
	}
	env, mem, err := want.Write(nil, nil, dupPasser{})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	name, fd, ok := strings.Cut(env, "=")
	if !ok || name != Env {
		t.Fatalf("Write returned %q, want %s=FD", env, Env)
	}
	t.Setenv(Env, fd)
	got, passed, err := Take()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := os.LookupEnv(Env); ok {
		t.Errorf("Take left %s in the environment", Env)
	}
	if len(passed) != 0 {
		t.Errorf("Take returned %d sockets, want none", len(passed))
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Take returned %+v, want %+v", got, want)
	}
	if b, err := got.ReadFile("/etc/portcullis.yaml"); err != nil || string(b) != "global: {}\n" {
		t.Errorf("ReadFile of a file handed off: %q, %v", b, err)
	}
	if _, err := got.ReadFile("/etc/shadow"); err == nil {
		t.Error("ReadFile served a file that was not handed off")
	}
}

// TestWriteSources: the next image learns where each socket came from:
// after a privilege drop, the sockets this process bound were "bound
// before drop"; after an upgrade, every socket not from systemd is
// "inherited"; systemd's stay systemd's.
func TestWriteSources(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sockets := func(sources ...string) []*listen.Socket {
		var out []*listen.Socket
		for _, src := range sources {
			out = append(out, &listen.Socket{File: f, Source: src})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		h    *Handoff
		in   []*listen.Socket
		want []string
	}{
		{"drop", &Handoff{Dropped: true}, sockets(listen.SourceBound, listen.SourceSystemd),
			[]string{listen.SourceBoundBeforeDrop, listen.SourceSystemd}},
		{"upgrade", &Handoff{Upgrade: &Upgrade{}}, sockets(listen.SourceBound, listen.SourceSystemd, listen.SourceInherited),
			[]string{listen.SourceInherited, listen.SourceSystemd, listen.SourceInherited}},
		{"upgrade after a drop", &Handoff{Dropped: true, Upgrade: &Upgrade{}}, sockets(listen.SourceBoundBeforeDrop, listen.SourceBound),
			[]string{listen.SourceInherited, listen.SourceInherited}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, mem, err := tc.h.Write(tc.in, nil, dupPasser{})
			if err != nil {
				t.Fatal(err)
			}
			mem.Close()
			var got []string
			for _, s := range tc.h.Sockets {
				unix.Close(s.FD)
				got = append(got, s.Source)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("sources %q, want %q", got, tc.want)
			}
		})
	}
}

// TestTakeWithoutHandoff: a process started afresh has no handoff.
func TestTakeWithoutHandoff(t *testing.T) {
	t.Setenv(Env, "")
	os.Unsetenv(Env)
	h, passed, err := Take()
	if h != nil || passed != nil || err != nil {
		t.Errorf("Take() = %v, %v, %v; want nil, nil, nil", h, passed, err)
	}
}

// TestReadReady: the old process hears "ready" from TellReady, and
// nothing from a pipe closed without a word.
func TestReadReady(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fd, err := unix.Dup(int(w.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := (&Upgrade{Ready: fd}).TellReady(); err != nil {
		t.Fatal(err)
	}
	if !ReadReady(r) {
		t.Error("ReadReady did not hear TellReady")
	}
	r2, w2, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	w2.Close()
	if ReadReady(r2) {
		t.Error("ReadReady heard ready on a pipe closed without a word")
	}
}
