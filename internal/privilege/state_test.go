package privilege

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeStatus writes a fake /proc/PID/task/TID/status and returns its path.
func writeStatus(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "status")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// rootStatus is /proc/self/status of a process started by root, trimmed.
const rootStatus = `Name:	portcullis
Umask:	0022
State:	S (sleeping)
Tgid:	4242
Pid:	4243
Uid:	0	0	0	0
Gid:	0	0	0	0
FDSize:	64
Groups:	0 
CapInh:	0000000000000000
CapPrm:	000001ffffffffff
CapEff:	000001ffffffffff
CapBnd:	000001ffffffffff
CapAmb:	0000000000000000
NoNewPrivs:	0
Seccomp:	0
`

// droppedStatus is the same process after dropping to nobody.
const droppedStatus = `Name:	portcullis
Uid:	65534	65534	65534	65534
Gid:	65534	65534	65534	65534
Groups:	65534 
CapInh:	0000000000000000
CapPrm:	0000000000000000
CapEff:	0000000000000000
CapBnd:	0000000000000000
CapAmb:	0000000000000000
NoNewPrivs:	1
Seccomp:	2
`

// ambientStatus is a systemd User= service with
// AmbientCapabilities=CAP_NET_BIND_SERVICE, before the drop.
const ambientStatus = `Uid:	998	998	998	998
Gid:	997	997	997	997
CapInh:	0000000000000400
CapPrm:	0000000000000400
CapEff:	0000000000000400
CapBnd:	000001ffffffffff
CapAmb:	0000000000000400
NoNewPrivs:	0
`

func TestReadStatus(t *testing.T) {
	tests := []struct {
		name, text string
		want       Thread
		root, caps bool
		lowPorts   bool
	}{
		{"root", rootStatus, Thread{TID: 7, UIDs: [4]int{0, 0, 0, 0}, GIDs: [4]int{0, 0, 0, 0},
			Prm: 0x1ffffffffff, Eff: 0x1ffffffffff, Bnd: 0x1ffffffffff}, true, true, true},
		{"dropped", droppedStatus, Thread{TID: 7, UIDs: [4]int{65534, 65534, 65534, 65534}, GIDs: [4]int{65534, 65534, 65534, 65534},
			NoNewPrivs: true}, false, false, false},
		{"ambient", ambientStatus, Thread{TID: 7, UIDs: [4]int{998, 998, 998, 998}, GIDs: [4]int{997, 997, 997, 997},
			Inh: 0x400, Prm: 0x400, Eff: 0x400, Bnd: 0x1ffffffffff, Amb: 0x400}, false, true, true},
		// A setuid-root leftover: only the saved set-user-ID is 0.
		{"saved uid 0", "Uid:\t1000\t1000\t0\t1000\nGid:\t1000\t1000\t1000\t1000\n",
			Thread{TID: 7, UIDs: [4]int{1000, 1000, 0, 1000}, GIDs: [4]int{1000, 1000, 1000, 1000}}, true, false, false},
		// Only the bounding set: it limits, it grants nothing.
		{"bounding only", "Uid:\t1\t1\t1\t1\nCapBnd:\t000001ffffffffff\n",
			Thread{TID: 7, UIDs: [4]int{1, 1, 1, 1}, Bnd: 0x1ffffffffff}, false, false, false},
		// Only an inheritable capability still counts as held.
		{"inheritable only", "Uid:\t1\t1\t1\t1\nCapInh:\t0000000000000001\n",
			Thread{TID: 7, UIDs: [4]int{1, 1, 1, 1}, Inh: 1}, false, true, false},
		// Lines without a colon, unknown keys and odd spacing are ignored.
		{"noise", "garbage\nSigQ:\t0/63\nUid:  5 6 7 8  \nNoNewPrivs:\t1\n",
			Thread{TID: 7, UIDs: [4]int{5, 6, 7, 8}, NoNewPrivs: true}, false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readStatus(writeStatus(t, tt.text), 7)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("readStatus =\n %+v\nwant\n %+v", got, tt.want)
			}
			if got.IsRoot() != tt.root {
				t.Errorf("IsRoot = %v, want %v", got.IsRoot(), tt.root)
			}
			if got.HasCaps() != tt.caps {
				t.Errorf("HasCaps = %v, want %v", got.HasCaps(), tt.caps)
			}
			if got.CanBindLowPorts() != tt.lowPorts {
				t.Errorf("CanBindLowPorts = %v, want %v", got.CanBindLowPorts(), tt.lowPorts)
			}
		})
	}
}

func TestReadStatusMissing(t *testing.T) {
	// A thread that exited between listing and reading: Threads skips it.
	_, err := readStatus(filepath.Join(t.TempDir(), "gone", "status"), 1)
	if !os.IsNotExist(err) {
		t.Errorf("err = %v, want not-exist", err)
	}
}

func TestCapNames(t *testing.T) {
	tests := []struct {
		mask uint64
		want string
	}{
		{0, "none"},
		{1 << 10, "cap_net_bind_service"},
		{1<<10 | 1<<12, "cap_net_bind_service,cap_net_admin"},
		{1<<0 | 1<<21 | 1<<40, "cap_chown,cap_sys_admin,cap_checkpoint_restore"},
		{1 << 63, "cap_63"}, // a capability newer than this list
		{1<<41 - 1, "all (41)"},
		{1<<44 - 1, "all (44)"},
		{0x1fffeffffff &^ (1 << 21), strings.Join(namesExcept(24, 21), ",")}, // root in a container, minus some
	}
	for _, tt := range tests {
		if got := CapNames(tt.mask); got != tt.want {
			t.Errorf("CapNames(%#x) = %q, want %q", tt.mask, got, tt.want)
		}
	}
}

// namesExcept lists capabilities 0..40 but the given ones, in order.
func namesExcept(skip ...int) []string {
	var out []string
next:
	for i := 0; i <= lastCap; i++ {
		for _, s := range skip {
			if i == s {
				continue next
			}
		}
		out = append(out, capNames[i])
	}
	return out
}

func TestCapNamesAreComplete(t *testing.T) {
	for i := 0; i <= lastCap; i++ {
		if !strings.HasPrefix(capNames[i], "cap_") {
			t.Errorf("capability %d has no name", i)
		}
	}
	if capNames[capNetBindService] != "cap_net_bind_service" {
		t.Errorf("capNetBindService is %q", capNames[capNetBindService])
	}
}

func TestThreadString(t *testing.T) {
	th := Thread{UIDs: [4]int{0, 0, 0, 0}, GIDs: [4]int{0, 0, 0, 0}, Eff: 1 << 10}
	if got, want := th.String(), "uid=0(root) gid=0(root) with capabilities: cap_net_bind_service"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	// An ID the user database does not know is still shown, by number.
	th = Thread{UIDs: [4]int{1, 987654, 1, 1}, GIDs: [4]int{1, 987653, 1, 1}}
	if got, want := th.String(), "uid=987654(?) gid=987653(?) with capabilities: none"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestSelfAndThreads(t *testing.T) {
	self, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	if self.TID != os.Getpid() {
		t.Errorf("Self().TID = %d, want the PID %d", self.TID, os.Getpid())
	}
	if self.UIDs[0] != os.Getuid() || self.UIDs[1] != os.Geteuid() || self.GIDs[0] != os.Getgid() || self.GIDs[1] != os.Getegid() {
		t.Errorf("Self() ids = %v %v, want uid %d euid %d gid %d egid %d",
			self.UIDs, self.GIDs, os.Getuid(), os.Geteuid(), os.Getgid(), os.Getegid())
	}

	threads, err := Threads()
	if err != nil {
		t.Fatal(err)
	}
	if len(threads) < 1 {
		t.Fatal("Threads() found no thread")
	}
	leader := false
	for _, th := range threads {
		if th.TID <= 0 {
			t.Errorf("thread with TID %d", th.TID)
		}
		if th.TID == os.Getpid() {
			leader = true
		}
		// Nothing in this test changes privileges, and the Go runtime
		// starts every thread with the process's credentials.
		if th.UIDs != self.UIDs || th.GIDs != self.GIDs || th.Prm != self.Prm || th.NoNewPrivs != self.NoNewPrivs {
			t.Errorf("thread %d differs from the process: %+v vs %+v", th.TID, th, self)
		}
	}
	if !leader {
		t.Errorf("Threads() did not include the main thread %d", os.Getpid())
	}
}
