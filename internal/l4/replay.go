package l4

import "net"

// replayConn is an accepted connection some of whose bytes were already
// read: Read returns them first, then reads the socket. Its addresses are
// the client's (from the PROXY header when there was one).
type replayConn struct {
	net.Conn      // the socket
	prefix        []byte
	remote, local net.Addr
}

func (c *replayConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

func (c *replayConn) RemoteAddr() net.Addr { return c.remote }
func (c *replayConn) LocalAddr() net.Addr  { return c.local }
