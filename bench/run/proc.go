package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// command makes a command pinned to cpu when pinning.
func (r *runner) command(cpu int, name string, args ...string) *exec.Cmd {
	if r.pin {
		args = append([]string{"-c", strconv.Itoa(cpu), name}, args...)
		name = "taskset"
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = r.dir
	// A child whose runner dies is killed (until it changes its
	// credentials: portcullis's drop clears this, cleanup covers it).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

func (r *runner) start(cmd *exec.Cmd) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	r.procs = append(r.procs, cmd)
	return nil
}

func (r *runner) forget(cmd *exec.Cmd) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, c := range r.procs {
		if c == cmd {
			r.procs = append(r.procs[:i], r.procs[i+1:]...)
			return
		}
	}
}

// stop ends a process gracefully (SIGTERM), or kills it after 10s.
func (r *runner) stop(cmd *exec.Cmd) {
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
	r.forget(cmd)
}

// cleanup stops every process still running and removes the work
// directory.
func (r *runner) cleanup() {
	r.mu.Lock()
	procs := append([]*exec.Cmd(nil), r.procs...)
	r.mu.Unlock()
	for _, c := range procs {
		r.stop(c)
	}
	if r.dir == "" {
		return
	}
	if r.keep {
		fmt.Fprintf(os.Stderr, "bench/run: kept %s\n", r.dir)
		return
	}
	os.RemoveAll(r.dir)
}

// waitReady waits for portcullis's "ready" log line.
func waitReady(cmd *exec.Cmd, logPath string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		log, _ := os.ReadFile(logPath)
		if bytes.Contains(log, []byte("msg=ready")) {
			return nil
		}
		if zombie(cmd.Process.Pid) {
			return fmt.Errorf("portcullis exited at startup; its log:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(logPath)
	return fmt.Errorf("portcullis not ready within %v; its log:\n%s", limit, log)
}

// zombie reports whether pid has exited (and awaits reaping).
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z'
}

// cpuSeconds is the user plus system CPU time of every thread of pid.
func cpuSeconds(pid int, tck float64) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: fields start after the last ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	// After the name: state is field 3, utime 14 and stime 15 (proc(5)).
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	return float64(ut+st) / tck, nil
}

// ticks is one CPU's line of /proc/stat, summed.
type ticks struct{ busy, all uint64 }

// cpuTicks reads CPU 0 and CPU 1 from /proc/stat: busy is every state but
// idle and iowait (user, nice, system, irq, softirq, steal), all of them
// together. A CPU that is not there reads as zero.
func cpuTicks() ([2]ticks, error) {
	var out [2]ticks
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return out, err
	}
	for l := range strings.Lines(string(b)) {
		f := strings.Fields(l)
		if len(f) < 9 || (f[0] != "cpu0" && f[0] != "cpu1") {
			continue
		}
		var t ticks
		for i, v := range f[1:9] { // user nice system idle iowait irq softirq steal
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return out, fmt.Errorf("/proc/stat: %q", l)
			}
			t.all += n
			if i != 3 && i != 4 {
				t.busy += n
			}
		}
		out[f[0][3]-'0'] = t
	}
	return out, nil
}

// clockTicks is the unit of /proc/PID/stat times (USER_HZ).
func clockTicks() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && n > 0 {
			return float64(n)
		}
	}
	return 100
}

// freePort finds a port free for both TCP and UDP on 127.0.0.1.
func freePort() (int, error) {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		ln.Close()
		if err == nil {
			pc.Close()
			return port, nil
		}
	}
	return 0, errors.New("no free port on 127.0.0.1 for both TCP and UDP")
}

// trapSignals stops everything on SIGINT, SIGTERM or SIGHUP, as a shell's
// trap would.
func (r *runner) trapSignals() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		r.stopping.Store(true)
		fmt.Fprintf(os.Stderr, "bench/run: %v: stopping\n", s)
		r.cleanup()
		os.Exit(130)
	}()
}

// workDir makes the temporary directory everything is built and written
// in. portcullis re-executes itself after dropping to nobody: its binary
// must be reachable by nobody.
func (r *runner) workDir(prefix string, keep bool) error {
	r.keep = keep
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return err
	}
	r.dir = dir
	r.tck = clockTicks()
	return os.Chmod(dir, 0o755)
}
