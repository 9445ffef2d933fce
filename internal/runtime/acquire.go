package runtime

import (
	"log/slog"

	"github.com/portcullis/portcullis/internal/compile"
	"github.com/portcullis/portcullis/internal/handoff"
	"github.com/portcullis/portcullis/internal/listen"
	"github.com/portcullis/portcullis/internal/quiclb"
)

// acquire gets every socket the graph needs while the process is still
// privileged: it loads the QUIC steering programs (which decides how many
// shards and socket sets each HTTP/3 bind gets), binds or takes passed
// sockets, attaches the programs and sizes the UDP buffers; none of that
// can be done after the drop. A re-executed process, or the new process
// of a binary upgrade, takes what the previous one handed off instead.
// It returns the steering programs by address.
func acquire(g *compile.Graph, h *handoff.Handoff, passed []*listen.Passed, log *slog.Logger) ([]*listen.Socket, map[string]*quiclb.Steering, error) {
	if h != nil {
		g.SetQUICSockets(h.Shards, h.Steering)
		sockets, err := listen.Acquire(g.Specs(), passed, false)
		if err != nil {
			return nil, nil, &StartupError{Err: err, Thread: self()}
		}
		steer, err := openSteering(g, h.Steering)
		return sockets, steer, err
	}
	passed, err := listen.Activated()
	if err != nil {
		return nil, nil, &StartupError{Err: err, Thread: self()}
	}
	steer, err := steering(g, passed, log)
	if err != nil {
		return nil, nil, &StartupError{Err: err, Thread: self()}
	}
	sockets, err := listen.Acquire(g.Specs(), passed, true)
	if err != nil {
		closeSteering(steer)
		return nil, nil, &StartupError{Err: err, Thread: self()}
	}
	if err := attachSteering(steer, sockets); err != nil {
		return nil, nil, err
	}
	sizeUDPBuffers(g, sockets, log)
	return sockets, steer, nil
}

// sizeUDPBuffers sets each QUIC socket's buffers to its bind's rcvbuf and
// sndbuf. One warning is enough: every socket meets the same limit.
func sizeUDPBuffers(g *compile.Graph, sockets []*listen.Socket, log *slog.Logger) {
	for _, s := range sockets {
		b := g.BindAt[s.Address]
		if s.Network != "udp" || b == nil || b.QUIC == nil {
			continue
		}
		if err := listen.SizeBuffers(s.File, b.QUIC.RcvBuf, b.QUIC.SndBuf); err != nil {
			log.Warn("QUIC socket buffers", "frontend", s.Frontend, "address", s.Address, "warning", err)
			return
		}
	}
}
