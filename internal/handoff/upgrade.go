package handoff

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/portcullis/portcullis/internal/quiclb"
)

// Upgrade is what the process a binary upgrade replaces adds to the
// handoff (docs/operations.md, "Binary upgrade").
type Upgrade struct {
	// PID is the process being replaced.
	PID int
	// Generation is the QUIC generation the new process serves: the
	// other one than the old process's.
	Generation quiclb.Generation
	// Ready is the write end of the pipe on which the new process says
	// it serves (TellReady, ReadReady).
	Ready int
	// QUIC holds, for each HTTP/3 bind by address, what its transports
	// share with the old process's.
	QUIC map[string]QUICBind
	// TicketKeys are the TLS session ticket keys, newest first:
	// resumption works across the upgrade.
	TicketKeys [][32]byte
	// Process is the new process's generation: 1 for the first upgrade
	// of a chain, +1 for each next one.
	Process int
	// Overrides are the servers' admin overrides, which outlive the
	// upgrade.
	Overrides []Override `json:",omitempty"`
	// Metrics are the old process's counters (metrics.Metrics.Snapshot),
	// from which the new process's start.
	Metrics []byte `json:",omitempty"`
}

// Override is a server's admin override (upstream.Override) in a
// handoff.
type Override struct {
	Backend, Address string
	// State is "active", "drain" or "disabled"; "": not overridden.
	State string `json:",omitempty"`
	// Weight is above 0 when overridden.
	Weight int `json:",omitempty"`
}

// QUICBind is what an HTTP/3 bind's transports share across an upgrade.
type QUICBind struct {
	// ResetKey and TokenKey are the keys the running transports use,
	// random ones included: the new process answers the old process's
	// connections with stateless resets their clients recognize, and
	// accepts the tokens it issued.
	ResetKey, TokenKey [32]byte
	// Forward is the new process's end of the socket pair over which the
	// two processes forward each other's datagrams, for a bind with one
	// unsteered socket (h3.ForwardConn); -1 otherwise.
	Forward int
}

// closeOnExec keeps the descriptors handed off from later children.
func (u *Upgrade) closeOnExec() {
	unix.CloseOnExec(u.Ready)
	for _, q := range u.QUIC {
		if q.Forward >= 0 {
			unix.CloseOnExec(q.Forward)
		}
	}
}

// Peers returns the new process's ends of the forwarding socket pairs, by
// bind address (h3.PeerConn makes each a connection).
func (u *Upgrade) Peers() map[string]*os.File {
	out := map[string]*os.File{}
	for addr, q := range u.QUIC {
		if q.Forward >= 0 {
			out[addr] = os.NewFile(uintptr(q.Forward), "forward")
		}
	}
	return out
}

// TellReady tells the old process that this one serves, and closes the
// pipe.
func (u *Upgrade) TellReady() error {
	f := os.NewFile(uintptr(u.Ready), "ready")
	defer f.Close()
	_, err := fmt.Fprintf(f, "ready %d\n", os.Getpid())
	return err
}

// ReadReady reads what the new process says on the readiness pipe, whose
// read end is r: true once it serves (TellReady), false if it closed the
// pipe without a word (it is exiting). It blocks until one or the other.
func ReadReady(r io.Reader) bool {
	line, _ := bufio.NewReader(r).ReadString('\n')
	return strings.HasPrefix(line, "ready")
}
