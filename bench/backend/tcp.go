package main

import (
	"encoding/binary"
	"errors"
	"io"
	"log"
	"net"
	"syscall"
	"time"
)

// maxTCPBytes bounds one request of the byte source (1 TiB): a larger
// length is a broken client, and its connection is closed.
const maxTCPBytes = 1 << 40

// tcpBlock is the filler every answer of the byte source is written from:
// allocated once, written as many times as needed, never copied in user
// space.
var tcpBlock = func() []byte {
	b := make([]byte, 256<<10)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}()

// serveTCP is the byte source of bench/tcpload. On each connection the
// client sends a request, an 8-byte big-endian length N, and the server
// answers with exactly N bytes; then it reads the next request. At EOF
// (the client closed) it closes the connection. A request must come
// within five minutes of the previous answer.
func serveTCP(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Out of descriptors or a similar passing shortage: wait a
			// little rather than spin or stop serving.
			log.Printf("tcp accept: %v", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go serveTCPConn(c)
	}
}

func serveTCPConn(c net.Conn) {
	defer c.Close()
	var req [8]byte
	for {
		c.SetReadDeadline(time.Now().Add(5 * time.Minute))
		if _, err := io.ReadFull(c, req[:]); err != nil {
			if err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
				log.Printf("tcp %s: reading a request: %v", c.RemoteAddr(), err)
			}
			return
		}
		n := binary.BigEndian.Uint64(req[:])
		if n > maxTCPBytes {
			log.Printf("tcp %s: request for %d bytes: more than %d", c.RemoteAddr(), n, uint64(maxTCPBytes))
			return
		}
		for n > 0 {
			k := min(n, uint64(len(tcpBlock)))
			if _, err := c.Write(tcpBlock[:k]); err != nil {
				return
			}
			n -= k
		}
	}
}
