package h3

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"github.com/quic-go/quic-go"

	"github.com/portcullis/portcullis/internal/quiclb"
)

// serveShard starts the transport of shard i on sh and serves HTTP/3 on
// it.
func (s *Server) serveShard(i int, sh Shard, tlsConf *tls.Config, metrics *Metrics) error {
	conn, err := s.packetConn(sh, metrics.shard(i))
	if err != nil {
		return err
	}
	tr := &quic.Transport{
		Conn:                  conn,
		ConnectionIDGenerator: quiclb.NewGenCIDGenerator(s.Format, s.Generation, i),
		StatelessResetKey:     s.ResetKey,
		TokenGeneratorKey:     s.TokenKey,
		VerifySourceAddress:   s.hs.VerifySourceAddress,
		ConnContext:           s.connContext,
		Tracer:                metrics.TransportTracer(i, nil),
	}
	s.trs = append(s.trs, tr)
	ln, err := tr.Listen(tlsConf, &quic.Config{
		HandshakeIdleTimeout: s.HandshakeTimeout,
		MaxIdleTimeout:       s.IdleTimeout,
		MaxIncomingStreams:   s.MaxStreams,
		Allow0RTT:            false,
		Tracer:               metrics.ConnTracer(i, nil),
	})
	if err != nil {
		return fmt.Errorf("%s: %w", sh.Name, err)
	}
	s.lns = append(s.lns, ln)
	go func() {
		if err := s.srv.ServeListener(ln); s.errServing(err) && s.OnError != nil {
			s.OnError(fmt.Errorf("%s: %w", sh.Name, err))
		}
		ln.Close()
	}()
	return nil
}

// packetConn is what shard sh's transport reads: a duplicate of its
// socket, or, for the one socket of a server without steering, a
// ForwardConn on it (with Await, the new process of an upgrade waits for
// its predecessor).
//
// Its reads and writes are counted into c (nil: not counted).
func (s *Server) packetConn(sh Shard, c *shardCounters) (net.PacketConn, error) {
	pc, err := net.FilePacketConn(sh.File)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", sh.Name, err)
	}
	udp, ok := pc.(*net.UDPConn)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("%s: not a UDP socket", sh.Name)
	}
	if s.Steering != nil || len(s.Shards) > 1 {
		s.pcs = append(s.pcs, udp)
		return newCountedConn(udp, c), nil
	}
	s.forward = NewForwardConn(udp, s.Format, s.Generation)
	s.forward.counters = c
	if s.Await != nil {
		s.forward.Await(s.Await)
	}
	s.pcs = append(s.pcs, s.forward)
	return s.forward, nil
}

// errConnLimit refuses a QUIC connection that Server.Admit refused.
var errConnLimit = errors.New("connection limit reached")

// connContext is the transports' ConnContext: a new connection is
// counted as a handshake in progress (refused at max_handshakes), then
// admitted (Server.Admit). Both refuse before quic-go allocates the
// connection. The address is the Initial packet's, unverified unless the
// client came back with a Retry token: a spoofed one costs its owner a
// place only for as long as a handshake can take.
func (s *Server) connContext(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	ctx, err := s.hs.ConnContext(ctx, info)
	if err != nil || s.Admit == nil {
		return ctx, err
	}
	// If Admit refuses, quic-go cancels ctx, which ends the handshake's
	// count.
	release, ok := s.Admit(info.RemoteAddr)
	if !ok {
		return ctx, errConnLimit
	}
	if release != nil {
		context.AfterFunc(ctx, release)
	}
	return ctx, nil
}

// excessiveLoad is HTTP/3's H3_EXCESSIVE_LOAD (RFC 9114 §8.1).
const excessiveLoad quic.ApplicationErrorCode = 0x107

// CloseExcessiveLoad closes c at once with H3_EXCESSIVE_LOAD (RFC 9114
// §8.1) and reason: its client costs more than it is allowed.
func CloseExcessiveLoad(c *quic.Conn, reason string) {
	c.CloseWithError(excessiveLoad, reason)
}
