package main

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// wsGUID is the key suffix of the handshake (RFC 6455, section 1.3).
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// WebSocket opcodes (RFC 6455, section 5.2).
const (
	wsText  = 0x1
	wsBin   = 0x2
	wsClose = 0x8
	wsPing  = 0x9
	wsPong  = 0xa
)

// serveWebSocket answers the WebSocket handshake on /ws, then answers each
// text or binary message with the text message "NAME N MESSAGE", N being
// the number of the connection (the first WebSocket connection the
// upstream accepted is 1), a ping with a pong and a close with a close.
// Fragmented messages are not supported: the connection is closed with
// status 1003.
func (s *server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	if key == "" || !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || !hasToken(r.Header.Values("Connection"), "upgrade") {
		http.Error(w, "a WebSocket handshake was expected", http.StatusBadRequest)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "cannot take over the connection", http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	s.mu.Lock()
	s.wsConns++
	n := s.wsConns
	s.mu.Unlock()
	sum := sha1.Sum([]byte(key + wsGUID))
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		base64.StdEncoding.EncodeToString(sum[:]))
	if brw.Flush() != nil {
		return
	}
	for {
		fin, op, payload, err := readWSFrame(brw.Reader)
		if err != nil {
			return
		}
		switch {
		case !fin || op == 0:
			writeWSFrame(brw.Writer, wsClose, []byte{0x03, 0xeb}) // 1003
			return
		case op == wsText || op == wsBin:
			err = writeWSFrame(brw.Writer, wsText, fmt.Appendf(nil, "%s %d %s", s.name, n, payload))
		case op == wsPing:
			err = writeWSFrame(brw.Writer, wsPong, payload)
		case op == wsClose:
			writeWSFrame(brw.Writer, wsClose, payload)
			return
		}
		if err != nil {
			return
		}
	}
}

// hasToken reports whether one of the comma-separated header values is
// token (case-insensitive).
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// readWSFrame reads one frame from a client (masked), of at most 1 MiB.
func readWSFrame(r *bufio.Reader) (fin bool, op byte, payload []byte, err error) {
	var h [2]byte
	if _, err = io.ReadFull(r, h[:]); err != nil {
		return
	}
	fin, op = h[0]&0x80 != 0, h[0]&0x0f
	size := uint64(h[1] & 0x7f)
	switch size {
	case 126:
		var b [2]byte
		if _, err = io.ReadFull(r, b[:]); err != nil {
			return
		}
		size = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err = io.ReadFull(r, b[:]); err != nil {
			return
		}
		size = binary.BigEndian.Uint64(b[:])
	}
	if size > 1<<20 {
		return fin, op, nil, fmt.Errorf("a frame of %d bytes", size)
	}
	var mask [4]byte
	masked := h[1]&0x80 != 0
	if masked {
		if _, err = io.ReadFull(r, mask[:]); err != nil {
			return
		}
	}
	payload = make([]byte, size)
	if _, err = io.ReadFull(r, payload); err != nil {
		return
	}
	if masked {
		for i := range payload {
			payload[i] ^= mask[i%4]
		}
	}
	return fin, op, payload, nil
}

// writeWSFrame writes one unmasked, final frame (a server's) and flushes.
func writeWSFrame(w *bufio.Writer, op byte, payload []byte) error {
	w.WriteByte(0x80 | op)
	switch n := len(payload); {
	case n < 126:
		w.WriteByte(byte(n))
	case n <= 0xffff:
		w.WriteByte(126)
		w.Write(binary.BigEndian.AppendUint16(nil, uint16(n)))
	default:
		w.WriteByte(127)
		w.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
	}
	w.Write(payload)
	return w.Flush()
}
