package integration

// Helpers of the binary upgrade tests (upgrade_test.go): the chain of
// processes a service goes through, one per upgrade, and the executable
// they are started from. The traffic they serve meanwhile is in
// upgrade_load_test.go.

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// installBinary puts a copy of src at dst the way a package manager
// replaces an executable: a new file renamed over the old one, which
// running processes keep using.
func installBinary(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := dst + ".new"
	writeFile(t, tmp, string(b), 0o755)
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// executableDir makes a directory for the executable the service runs,
// readable by nobody, with src installed as NAME/portcullis.
func executableDir(t *testing.T, src string) string {
	t.Helper()
	exe := filepath.Join(sharedDir(t), "portcullis")
	installBinary(t, src, exe)
	return exe
}

var subreaperOnce sync.Once

// becomeSubreaper makes the test process the parent of processes whose
// parent exits (PR_SET_CHILD_SUBREAPER), as systemd is for a service: the
// new process of an upgrade outlives the old one, which started it, and
// the test waits for it and reads its exit status.
func becomeSubreaper(t *testing.T) {
	t.Helper()
	var err error
	subreaperOnce.Do(func() { err = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })
	if err != nil {
		t.Fatalf("prctl(PR_SET_CHILD_SUBREAPER): %v", err)
	}
}

// member is one process of a chain.
type member struct {
	pid      int
	done     chan struct{} // closed once it has exited
	status   int           // exit status, once done
	exitedAt time.Time
	signaled time.Time // when upgrade sent it SIGUSR2
}

// chain follows a service through binary upgrades: the process the test
// started, then each new process. They share the first one's output and
// notify socket.
type chain struct {
	t       *testing.T
	p       *proc
	exe     string
	members []*member
}

// newChain follows p, started from exe.
func newChain(t *testing.T, p *proc, exe string) *chain {
	t.Helper()
	becomeSubreaper(t)
	first := &member{pid: p.pid(), done: make(chan struct{})}
	go func() {
		<-p.done
		first.status, first.exitedAt = p.exitCode, p.exitedAt
		close(first.done)
	}()
	c := &chain{t: t, p: p, exe: exe, members: []*member{first}}
	t.Cleanup(func() {
		for _, m := range c.members[1:] {
			if !m.exited() {
				unix.Kill(m.pid, syscall.SIGKILL)
			}
		}
		// A new process the test never learned of (it failed first).
		for _, pid := range startedFrom(exe) {
			unix.Kill(pid, syscall.SIGKILL)
		}
		for _, m := range c.members[1:] {
			select {
			case <-m.done:
			case <-time.After(scaled(5 * time.Second)):
				t.Errorf("pid %d did not exit after SIGKILL", m.pid)
			}
		}
		if t.Failed() {
			t.Logf("notifications: %q", p.notify.all())
		}
	})
	return c
}

// startedFrom returns the processes whose command line starts with exe,
// the path only the chain's processes are started from.
func startedFrom(exe string) []int {
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var out []int
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		argv0, _, _ := strings.Cut(string(b), "\x00")
		if argv0 == exe {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
			out = append(out, pid)
		}
	}
	return out
}

func (m *member) exited() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// current is the newest process.
func (c *chain) current() *member { return c.members[len(c.members)-1] }

// follow adds the process pid, started by the current one: once that
// exits, pid is the test's child (becomeSubreaper) and is waited for.
func (c *chain) follow(pid int) *member {
	m := &member{pid: pid, done: make(chan struct{})}
	parent := c.current()
	go func() {
		<-parent.done
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(pid, &ws, 0, nil)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				m.status = -1
				for unix.Kill(pid, 0) == nil {
					time.Sleep(10 * time.Millisecond)
				}
			} else {
				m.status = ws.ExitStatus()
			}
			break
		}
		m.exitedAt = time.Now()
		close(m.done)
	}()
	c.members = append(c.members, m)
	return m
}

// notification waits up to timeout for a notification containing want
// (after those matched before) and returns it, or "".
func (c *chain) notification(want string, timeout time.Duration) string {
	msg, next := c.p.notify.receive(time.Now().Add(timeout), want, c.p.seen)
	if msg != "" {
		c.p.seen = next
	}
	return msg
}

// signalUpgrade sends SIGUSR2 to the current process and waits until the
// new one says it is the main process (MAINPID=) and is ready; it follows
// the new one from then on.
func (c *chain) signalUpgrade() (old, new *member) {
	c.t.Helper()
	old = c.current()
	old.signaled = time.Now()
	if err := unix.Kill(old.pid, syscall.SIGUSR2); err != nil {
		c.t.Fatalf("SIGUSR2 to %d: %v", old.pid, err)
	}
	msg := c.notification("MAINPID=", scaled(15*time.Second))
	if msg == "" {
		c.t.Fatalf("no MAINPID= notification after SIGUSR2 to %d; log:\n%s", old.pid, c.p.stderr.String())
	}
	if !strings.Contains(msg, "READY=1") {
		c.t.Errorf("MAINPID= without READY=1: %q", msg)
	}
	v, _, _ := strings.Cut(strings.TrimPrefix(msg[strings.Index(msg, "MAINPID="):], "MAINPID="), "\n")
	pid, err := strconv.Atoi(v)
	if err != nil || pid == old.pid || pid <= 0 {
		c.t.Fatalf("MAINPID=%q after an upgrade of %d: want the new process's PID", v, old.pid)
	}
	return old, c.follow(pid)
}

// upgrade is signalUpgrade, then it waits until the old process has
// exited, within grace. It checks that the old one exited with status 0,
// and that the new one holds no privilege.
func (c *chain) upgrade(grace time.Duration, wantNNP bool) (old, new *member) {
	c.t.Helper()
	old, new = c.signalUpgrade()
	pid := new.pid
	ready := time.Now()
	select {
	case <-old.done:
	case <-time.After(grace + scaled(2*time.Second)):
		c.t.Fatalf("the old process %d still runs %v after the new one %d was ready (grace %v)", old.pid, time.Since(ready), pid, grace)
	}
	if took := old.exitedAt.Sub(ready); took > grace+scaled(500*time.Millisecond) {
		c.t.Errorf("the old process %d exited %v after the new one was ready, want within grace (%v)", old.pid, took, grace)
	}
	if old.status != 0 {
		c.t.Errorf("the old process %d exited with status %d, want 0", old.pid, old.status)
	}
	checkUnprivileged(c.t, pid, wantNNP)
	return old, new
}

// waitOutput waits for a line of the chain's output from mark on with
// every part, whichever process wrote it.
func (c *chain) waitOutput(mark int, timeout time.Duration, parts ...string) string {
	c.t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		if lines := logsWith(c.p, mark, parts...); len(lines) > 0 {
			return lines[0]
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no log line with %q within %v; log:\n%s", parts, timeout, c.p.stderr.String())
		}
	}
}

// stop stops the current process with SIGTERM.
func (c *chain) stop() {
	c.t.Helper()
	m := c.current()
	if m.exited() {
		c.t.Errorf("pid %d, the newest process, has exited already (status %d)", m.pid, m.status)
		return
	}
	unix.Kill(m.pid, syscall.SIGTERM)
	select {
	case <-m.done:
		if m.status != 0 {
			c.t.Errorf("pid %d: exit status %d after SIGTERM, want 0", m.pid, m.status)
		}
	case <-time.After(scaled(10 * time.Second)):
		c.t.Errorf("pid %d still runs 10s after SIGTERM", m.pid)
	}
}
