// Package systemd speaks the sd_notify(3) protocol: READY=1, RELOADING=1,
// STOPPING=1, MAINPID=, STATUS=... to the socket named by $NOTIFY_SOCKET.
package systemd

import (
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Notifier sends state changes to the service manager. The zero value (no
// socket) sends nothing.
type Notifier struct {
	addr *net.UnixAddr
}

// NewNotifier returns a notifier for $NOTIFY_SOCKET ("/path" or "@abstract"),
// or one that sends nothing when the variable is unset. The variable is
// kept: a re-executed portcullis is the same service process.
func NewNotifier() *Notifier {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return &Notifier{}
	}
	if strings.HasPrefix(path, "@") {
		path = "\x00" + path[1:]
	}
	return &Notifier{addr: &net.UnixAddr{Name: path, Net: "unixgram"}}
}

// Enabled reports whether a service manager listens.
func (n *Notifier) Enabled() bool { return n != nil && n.addr != nil }

// Notify sends newline-separated assignments such as "READY=1\nSTATUS=serving".
func (n *Notifier) Notify(state string) error {
	if !n.Enabled() {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify %s: %w", os.Getenv("NOTIFY_SOCKET"), err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %s: %w", os.Getenv("NOTIFY_SOCKET"), err)
	}
	return nil
}

// Ready says startup is complete.
func (n *Notifier) Ready(status string) error {
	return n.Notify("READY=1\nSTATUS=" + status)
}

// ReadyMain says that process pid, a new process started by the main one
// (a binary upgrade), is now the service's main process and is ready.
// The service manager accepts it only from a process other than the main
// one with NotifyAccess=all.
func (n *Notifier) ReadyMain(pid int, status string) error {
	return n.Notify(fmt.Sprintf("MAINPID=%d\nREADY=1\nSTATUS=%s", pid, status))
}

// Reloading says a configuration reload has begun (Type=notify-reload
// needs MONOTONIC_USEC, the CLOCK_MONOTONIC time in microseconds).
func (n *Notifier) Reloading() error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return err
	}
	return n.Notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Nano()/1000))
}

// Stopping says a graceful stop has begun.
func (n *Notifier) Stopping(status string) error {
	return n.Notify("STOPPING=1\nSTATUS=" + status)
}

// Status updates the one-line status shown by systemctl status.
func (n *Notifier) Status(status string) error { return n.Notify("STATUS=" + status) }
