package attack

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ProcSample is what a process holds at one moment, read from /proc
// (Linux only).
type ProcSample struct {
	// RSS is the resident set size in bytes (VmRSS).
	RSS int64
	// FDs is the number of open file descriptors.
	FDs int
}

func (s ProcSample) String() string {
	return fmt.Sprintf("VmRSS %.1f MiB, %d fds", float64(s.RSS)/(1<<20), s.FDs)
}

// SampleProc reads process pid's VmRSS from /proc/PID/status and counts
// /proc/PID/fd. Counting another user's descriptors needs root.
func SampleProc(pid int) (ProcSample, error) {
	var s ProcSample
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return s, fmt.Errorf("attack: /proc/%d/status: VmRSS %q", pid, v)
			}
			s.RSS = kib << 10
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.FDs = len(fds)
	return s, nil
}
