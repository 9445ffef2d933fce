package integration

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
)

// scaled multiplies d by PORTCULLIS_TEST_TIMEOUT_SCALE (default 1).
var scaled = testutil.Scaled

// sharedDir makes a directory that the unprivileged portcullis can
// traverse (mode 0755) and removes it when the test ends.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp(sharedTempBase(), "portcullis-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// writeFile writes a file with mode perm (not subject to the umask).
func writeFile(t *testing.T, path, content string, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer = testutil.Buffer

// notifySocket is a stand-in for systemd's $NOTIFY_SOCKET: a unixgram
// socket that anybody may send to.
type notifySocket struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(sharedDir(t), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := os.Chmod(path, 0o777); err != nil {
		t.Fatal(err)
	}
	return &notifySocket{path: path, conn: conn}
}

// receive reads the datagrams that arrive before deadline and records
// them. It returns the first one (of all received so far, from index from
// on) that contains want, or "".
func (n *notifySocket) receive(deadline time.Time, want string, from int) (string, int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	buf := make([]byte, 4096)
	for {
		for i := from; i < len(n.msgs); i++ {
			if want != "" && strings.Contains(n.msgs[i], want) {
				return n.msgs[i], i + 1
			}
		}
		from = len(n.msgs)
		n.conn.SetReadDeadline(deadline)
		k, _, err := n.conn.ReadFrom(buf)
		if err != nil {
			return "", from
		}
		n.msgs = append(n.msgs, string(buf[:k]))
	}
}

// all returns every datagram received so far, after reading those queued.
func (n *notifySocket) all() []string {
	n.receive(time.Now().Add(20*time.Millisecond), "", 0)
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

// proc is a running portcullis (or a wrapper that execs it in place, so
// that Pid is portcullis's).
type proc struct {
	t       *testing.T
	cmd     *exec.Cmd
	stdout  syncBuffer
	stderr  syncBuffer
	notify  *notifySocket
	started time.Time

	done     chan struct{} // closed when the process has exited
	exitCode int
	exitedAt time.Time
	seen     int // notify messages already matched by waitNotify
}

// startOptions say how to start a process.
type startOptions struct {
	// Env is added to a minimal environment (PATH and NOTIFY_SOCKET).
	Env []string
	// ExtraFiles become fds 3, 4, ... of the process.
	ExtraFiles []*os.File
	// Outlived says that processes the process starts go on writing to
	// its standard output and error after it exits (a binary upgrade's
	// new process): its output then goes through pipes of the test's
	// own, so that waiting for its exit does not wait for theirs.
	Outlived bool
}

// start runs argv with a fresh notify socket. The process is killed when
// the test ends, and its output is logged if the test failed.
func start(t *testing.T, argv []string, opt startOptions) *proc {
	t.Helper()
	p := &proc{t: t, notify: newNotifySocket(t), done: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append([]string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"NOTIFY_SOCKET=" + p.notify.path,
	}, opt.Env...)
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = &p.stderr
	var childEnds []*os.File
	if opt.Outlived {
		for _, buf := range []*syncBuffer{&p.stdout, &p.stderr} {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				io.Copy(buf, r)
				r.Close()
			}()
			childEnds = append(childEnds, w)
		}
		p.cmd.Stdout, p.cmd.Stderr = childEnds[0], childEnds[1]
	}
	p.cmd.ExtraFiles = opt.ExtraFiles
	p.started = time.Now()
	err := p.cmd.Start()
	for _, w := range childEnds {
		w.Close()
	}
	if err != nil {
		t.Fatalf("start %q: %v", argv, err)
	}
	go func() {
		err := p.cmd.Wait()
		p.exitedAt = time.Now()
		p.exitCode = 0
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			p.exitCode = ee.ExitCode()
		case err != nil:
			p.exitCode = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			select {
			case <-p.done:
			case <-time.After(scaled(5 * time.Second)):
				t.Errorf("pid %d did not exit after SIGKILL", p.cmd.Process.Pid)
			}
		}
		if t.Failed() {
			t.Logf("%s\nstderr:\n%s\nstdout:\n%s\nnotifications: %q", p.describe(), p.stderr.String(), p.stdout.String(), p.notify.all())
		}
	})
	return p
}

// pid is the process ID of portcullis.
func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) describe() string {
	select {
	case <-p.done:
		return fmt.Sprintf("%q exited with status %d after %v", p.cmd.Args, p.exitCode, p.exitedAt.Sub(p.started).Round(time.Millisecond))
	default:
		return fmt.Sprintf("%q still running (pid %d)", p.cmd.Args, p.pid())
	}
}

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitNotify waits up to timeout for a notification containing want
// (after those matched before) and returns it; it fails the test if none
// arrives or the process exits first.
func (p *proc) waitNotify(want string, timeout time.Duration) string {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		step := time.Now().Add(50 * time.Millisecond)
		if step.After(deadline) {
			step = deadline
		}
		msg, next := p.notify.receive(step, want, p.seen)
		if msg != "" {
			p.seen = next
			return msg
		}
		if p.exited() {
			// It may have sent the message just before exiting.
			if msg, next := p.notify.receive(time.Now().Add(20*time.Millisecond), want, p.seen); msg != "" {
				p.seen = next
				return msg
			}
			p.t.Fatalf("no %q notification: %s\nstderr:\n%s", want, p.describe(), p.stderr.String())
		}
		if !time.Now().Before(deadline) {
			p.t.Fatalf("no %q notification within %v: %s\nstderr:\n%s", want, timeout, p.describe(), p.stderr.String())
		}
	}
}

// waitReady waits for READY=1.
func (p *proc) waitReady() {
	p.t.Helper()
	p.waitNotify("READY=1", scaled(15*time.Second))
	// portcullis logs "ready" before it sends READY=1, but its stderr
	// reaches the test through a pipe and a goroutine: wait for the line,
	// so that every startup log line can be read from here on.
	for deadline := time.Now().Add(scaled(5 * time.Second)); !strings.Contains(p.stderr.String(), "msg=ready"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			p.t.Fatalf("READY=1 arrived but the \"ready\" log line did not:\n%s", p.stderr.String())
		}
	}
}

// wait waits up to timeout for the process to exit and returns its exit
// status; it fails the test on timeout.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.exitCode
	case <-time.After(timeout):
		p.t.Fatalf("still running after %v: %s\nstderr:\n%s", timeout, p.describe(), p.stderr.String())
		return -1
	}
}

// signal sends sig to the process.
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// stop sends SIGTERM and expects a clean exit.
func (p *proc) stop() {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	if code := p.wait(scaled(10 * time.Second)); code != 0 {
		p.t.Errorf("exit status %d after SIGTERM, want 0\nstderr:\n%s", code, p.stderr.String())
	}
}

// The three ways to start portcullis. Each execs portcullis in place, so
// that the process started is portcullis itself.

// asRoot runs the binary as the test's own user, root.
func asRoot(bin, cfg string) []string {
	return []string{bin, "run", "-c", cfg}
}

// asAmbient runs the binary as nobody with only CAP_NET_BIND_SERVICE, in
// the ambient set (as systemd's AmbientCapabilities= does).
func asAmbient(t *testing.T, bin, cfg string) []string {
	setpriv := needTool(t, "setpriv", "util-linux")
	return []string{setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups",
		"--inh-caps=-all,+net_bind_service", "--ambient-caps=+net_bind_service",
		"--bounding-set=-all,+net_bind_service", bin, "run", "-c", cfg}
}

// asNobody runs the binary as nobody with no capability at all, with
// LISTEN_PID set to its PID (for socket activation).
func asNobody(t *testing.T, bin, cfg string) []string {
	setpriv := needTool(t, "setpriv", "util-linux")
	return []string{setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups",
		"--inh-caps=-all", "--bounding-set=-all", "--",
		"/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, bin, "run", "-c", cfg}
}

// Unprivileged identity portcullis ends up with.
const (
	nobodyUID  = "65534"
	nogroupGID = "65534"
)

// threadState is the privilege state of one thread of a process, from
// /proc/PID/task/TID/status.
type threadState struct {
	TID                            string
	Uid, Gid                       []string
	CapInh, CapPrm, CapEff, CapAmb string
	NoNewPrivs                     string
}

func (s threadState) String() string {
	return fmt.Sprintf("tid %s: Uid %v Gid %v CapInh %s CapPrm %s CapEff %s CapAmb %s NoNewPrivs %s",
		s.TID, s.Uid, s.Gid, s.CapInh, s.CapPrm, s.CapEff, s.CapAmb, s.NoNewPrivs)
}

// threads reads the state of every thread of pid.
func threads(t *testing.T, pid int) []threadState {
	t.Helper()
	dirs, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no threads for pid %d: %v", pid, err)
	}
	var out []threadState
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "status"))
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread exited
		}
		if err != nil {
			t.Fatal(err)
		}
		s := threadState{TID: filepath.Base(d)}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimSpace(v)
			switch k {
			case "Uid":
				s.Uid = strings.Fields(v)
			case "Gid":
				s.Gid = strings.Fields(v)
			case "CapInh":
				s.CapInh = v
			case "CapPrm":
				s.CapPrm = v
			case "CapEff":
				s.CapEff = v
			case "CapAmb":
				s.CapAmb = v
			case "NoNewPrivs":
				s.NoNewPrivs = v
			}
		}
		out = append(out, s)
	}
	return out
}

const noCaps = "0000000000000000"

// checkUnprivileged checks that every thread of pid runs as nobody (all
// four user IDs) with no capability in any set, and, when wantNNP, with
// no_new_privs set. It returns the number of threads.
func checkUnprivileged(t *testing.T, pid int, wantNNP bool) int {
	t.Helper()
	ts := threads(t, pid)
	for _, s := range ts {
		ok := len(s.Uid) == 4 && len(s.Gid) == 4
		for i := 0; ok && i < 4; i++ {
			ok = s.Uid[i] == nobodyUID && s.Gid[i] == nogroupGID
		}
		ok = ok && s.CapInh == noCaps && s.CapPrm == noCaps && s.CapEff == noCaps && s.CapAmb == noCaps
		if wantNNP {
			ok = ok && s.NoNewPrivs == "1"
		}
		if !ok {
			t.Errorf("thread not fully unprivileged (want uid/gid %s/%s everywhere, no capabilities, NoNewPrivs 1: %v): %v",
				nobodyUID, nogroupGID, wantNNP, s)
		}
	}
	return len(ts)
}
