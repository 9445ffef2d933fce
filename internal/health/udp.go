package health

import (
	"context"
	"errors"
	"net"
	"time"
)

// maxReply is how much of a UDP check's reply is read; the rest of a longer
// datagram is discarded. Any reply passes, whatever it holds.
const maxReply = 512

// udp sends Send as one datagram from a connected socket and waits for any
// datagram back until the check's deadline.
//
// A connected socket receives only the server's datagrams, and Linux
// reports an ICMP port unreachable sent back for it as ECONNREFUSED on the
// next read: a closed port fails the check at once instead of at the
// timeout. Each check dials its own socket and closes it before returning,
// so a late reply to an earlier check cannot pass a later one, an earlier
// check's pending ICMP error cannot fail it, and nothing outlives a check.
func (p *prober) udp(ctx context.Context) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", p.addr)
	if err != nil {
		return errors.New("udp: " + describe(err, p.cfg.Timeout))
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	// Stop cancels ctx: end the wait for the reply at once. If this runs
	// after c.Close, SetDeadline only returns an error.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if _, err := c.Write([]byte(p.cfg.Send)); err != nil {
		return errors.New("udp: send: " + describe(err, p.cfg.Timeout))
	}
	var buf [maxReply]byte
	if _, err := c.Read(buf[:]); err != nil {
		return errors.New("udp: " + describe(err, p.cfg.Timeout))
	}
	return nil
}
