package systemd

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/portcullis/portcullis/internal/testutil"
	"golang.org/x/sys/unix"
)

// scaled multiplies d by PORTCULLIS_TEST_TIMEOUT_SCALE (default 1), for
// slow machines. Deadlines only turn a hang into a failure.
var scaled = testutil.Scaled

// listen opens the service manager's end: a unixgram socket at name
// ("/path", or "@name" for the abstract namespace).
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// receive reads one notification; the deadline only turns a hang into a
// failure.
func receive(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(scaled(10 * time.Second)))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no notification arrived: %v", err)
	}
	return string(buf[:n])
}

func checkMessages(t *testing.T, c *net.UnixConn, n *Notifier) {
	t.Helper()
	if !n.Enabled() {
		t.Fatal("a notifier for $NOTIFY_SOCKET is not enabled")
	}
	steps := []struct {
		send func() error
		want string
	}{
		{func() error { return n.Ready("serving 2 frontends") }, "READY=1\nSTATUS=serving 2 frontends"},
		{func() error { return n.Status("reloading configuration") }, "STATUS=reloading configuration"},
		{func() error { return n.Notify("RELOADING=1\nMONOTONIC_USEC=1") }, "RELOADING=1\nMONOTONIC_USEC=1"},
		{func() error { return n.Stopping("finishing 3 requests") }, "STOPPING=1\nSTATUS=finishing 3 requests"},
		{func() error { return n.ReadyMain(4321, "upgraded") }, "MAINPID=4321\nREADY=1\nSTATUS=upgraded"},
	}
	for _, s := range steps {
		if err := s.send(); err != nil {
			t.Fatalf("sending %q: %v", s.want, err)
		}
		if got := receive(t, c); got != s.want {
			t.Errorf("the service manager received %q, want %q", got, s.want)
		}
	}
}

func TestNotifierPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c := listen(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	n := NewNotifier()
	checkMessages(t, c, n)
	// The variable stays: a re-executed portcullis is the same service
	// process and notifies too.
	if os.Getenv("NOTIFY_SOCKET") != path {
		t.Errorf("NOTIFY_SOCKET was changed to %q", os.Getenv("NOTIFY_SOCKET"))
	}
}

func TestNotifierAbstract(t *testing.T) {
	name := fmt.Sprintf("@portcullis-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	c := listen(t, name)
	t.Setenv("NOTIFY_SOCKET", name)
	checkMessages(t, c, NewNotifier())
}

func TestNotifierWithoutServiceManager(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c := listen(t, path)

	t.Setenv("NOTIFY_SOCKET", "")
	for name, n := range map[string]*Notifier{"unset": NewNotifier(), "zero": {}, "nil": nil} {
		if n.Enabled() {
			t.Errorf("%s notifier is enabled", name)
		}
		for _, err := range []error{n.Ready("up"), n.Status("x"), n.Stopping("down"), n.Notify("WATCHDOG=1")} {
			if err != nil {
				t.Errorf("%s notifier: %v, want nothing sent and no error", name, err)
			}
		}
	}

	// Nothing reached the socket: the first datagram it holds is the one
	// sent now.
	t.Setenv("NOTIFY_SOCKET", path)
	if err := NewNotifier().Status("first"); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, c); got != "STATUS=first" {
		t.Errorf("the socket received %q first, want STATUS=first", got)
	}
}

func TestNotifierSocketGone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gone")
	t.Setenv("NOTIFY_SOCKET", path)
	err := NewNotifier().Ready("up")
	if err == nil {
		t.Fatal("notifying a socket that does not exist succeeded")
	}
	if !strings.Contains(err.Error(), "sd_notify") || !strings.Contains(err.Error(), path) {
		t.Errorf("err = %v, want it to say sd_notify and the socket %s", err, path)
	}
}

// TestReloading checks the message Type=notify-reload needs: RELOADING=1
// and the CLOCK_MONOTONIC time in microseconds, which systemd compares with
// its own clock.
func TestReloading(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	c := listen(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	var before unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &before)
	if err := NewNotifier().Reloading(); err != nil {
		t.Fatal(err)
	}
	var after unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &after)
	got := receive(t, c)
	usec, ok := strings.CutPrefix(got, "RELOADING=1\nMONOTONIC_USEC=")
	n, err := strconv.ParseInt(usec, 10, 64)
	if !ok || err != nil || n < before.Nano()/1000 || n > after.Nano()/1000 {
		t.Errorf("got %q, want RELOADING=1 and MONOTONIC_USEC between %d and %d", got, before.Nano()/1000, after.Nano()/1000)
	}
}
