// Package privilege reads, drops and verifies the process's privileges:
// user and group IDs, capability sets and no_new_privs, on every thread.
package privilege

import (
	"bufio"
	"fmt"
	"math/bits"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// Thread is the privilege state of one thread, from /proc/PID/task/TID/status.
type Thread struct {
	TID int
	// UIDs and GIDs are real, effective, saved and filesystem IDs.
	UIDs, GIDs [4]int
	// Capability sets as bit masks (bit n is capability n).
	Inh, Prm, Eff, Bnd, Amb uint64
	NoNewPrivs              bool
}

// Self reads the state of the calling thread group's leader.
func Self() (Thread, error) { return readStatus("/proc/self/status", os.Getpid()) }

// Threads reads the state of every thread of the process.
func Threads() ([]Thread, error) {
	dirs, err := filepath.Glob("/proc/self/task/*")
	if err != nil {
		return nil, err
	}
	out := make([]Thread, 0, len(dirs))
	for _, d := range dirs {
		tid, _ := strconv.Atoi(filepath.Base(d))
		t, err := readStatus(filepath.Join(d, "status"), tid)
		if os.IsNotExist(err) {
			continue // the thread exited
		}
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

func readStatus(path string, tid int) (Thread, error) {
	t := Thread{TID: tid}
	f, err := os.Open(path)
	if err != nil {
		return t, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "Uid", "Gid":
			ids := &t.UIDs
			if key == "Gid" {
				ids = &t.GIDs
			}
			for i, field := range strings.Fields(val) {
				if i < 4 {
					ids[i], _ = strconv.Atoi(field)
				}
			}
		case "CapInh":
			t.Inh, _ = strconv.ParseUint(val, 16, 64)
		case "CapPrm":
			t.Prm, _ = strconv.ParseUint(val, 16, 64)
		case "CapEff":
			t.Eff, _ = strconv.ParseUint(val, 16, 64)
		case "CapBnd":
			t.Bnd, _ = strconv.ParseUint(val, 16, 64)
		case "CapAmb":
			t.Amb, _ = strconv.ParseUint(val, 16, 64)
		case "NoNewPrivs":
			t.NoNewPrivs = val == "1"
		}
	}
	return t, sc.Err()
}

// IsRoot reports whether any of the thread's user IDs is 0.
func (t Thread) IsRoot() bool {
	for _, id := range t.UIDs {
		if id == 0 {
			return true
		}
	}
	return false
}

// HasCaps reports whether the thread holds any capability in its
// inheritable, permitted, effective or ambient set.
func (t Thread) HasCaps() bool { return t.Inh|t.Prm|t.Eff|t.Amb != 0 }

// CanBindLowPorts reports whether the thread may bind ports below
// net.ipv4.ip_unprivileged_port_start.
func (t Thread) CanBindLowPorts() bool { return t.Eff&(1<<capNetBindService) != 0 }

// String describes the thread for error messages:
// "uid=65534(nobody) gid=65534(nogroup) with capabilities: none".
func (t Thread) String() string {
	return fmt.Sprintf("uid=%d(%s) gid=%d(%s) with capabilities: %s",
		t.UIDs[1], userName(t.UIDs[1]), t.GIDs[1], groupName(t.GIDs[1]), CapNames(t.Eff))
}

// GroupName is the name of the thread's effective group, or its number
// when it has none: what chgrp takes to let the thread read a file.
func (t Thread) GroupName() string {
	if name := groupName(t.GIDs[1]); name != "?" {
		return name
	}
	return strconv.Itoa(t.GIDs[1])
}

func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return "?"
}

func groupName(gid int) string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return g.Name
	}
	return "?"
}

const (
	capNetBindService = 10
	lastCap           = 40 // CAP_CHECKPOINT_RESTORE, the last in Linux 6.x
)

var capNames = map[int]string{
	0: "cap_chown", 1: "cap_dac_override", 2: "cap_dac_read_search", 3: "cap_fowner",
	4: "cap_fsetid", 5: "cap_kill", 6: "cap_setgid", 7: "cap_setuid", 8: "cap_setpcap",
	9: "cap_linux_immutable", 10: "cap_net_bind_service", 11: "cap_net_broadcast",
	12: "cap_net_admin", 13: "cap_net_raw", 14: "cap_ipc_lock", 15: "cap_ipc_owner",
	16: "cap_sys_module", 17: "cap_sys_rawio", 18: "cap_sys_chroot", 19: "cap_sys_ptrace",
	20: "cap_sys_pacct", 21: "cap_sys_admin", 22: "cap_sys_boot", 23: "cap_sys_nice",
	24: "cap_sys_resource", 25: "cap_sys_time", 26: "cap_sys_tty_config", 27: "cap_mknod",
	28: "cap_lease", 29: "cap_audit_write", 30: "cap_audit_control", 31: "cap_setfcap",
	32: "cap_mac_override", 33: "cap_mac_admin", 34: "cap_syslog", 35: "cap_wake_alarm",
	36: "cap_block_suspend", 37: "cap_audit_read", 38: "cap_perfmon", 39: "cap_bpf",
	40: "cap_checkpoint_restore",
}

// CapNames lists the capabilities in mask: "none", "all (41)" or names
// joined by commas.
func CapNames(mask uint64) string {
	switch {
	case mask == 0:
		return "none"
	case bits.OnesCount64(mask) > lastCap:
		return fmt.Sprintf("all (%d)", bits.OnesCount64(mask))
	}
	var names []string
	for i := 0; i < 64; i++ {
		if mask&(1<<i) != 0 {
			n, ok := capNames[i]
			if !ok {
				n = fmt.Sprintf("cap_%d", i)
			}
			names = append(names, n)
		}
	}
	return strings.Join(names, ",")
}
