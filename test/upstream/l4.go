package main

import (
	"fmt"
	"io"
	"log"
	"net"
	"slices"
)

// serveTCP serves the layer-4 TCP modes on ln: -tcp-echo, or -tcp-reverse
// when reverse is set. It never returns.
func serveTCP(ln net.Listener, name string, reverse bool) {
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		if reverse {
			go reverseOnEOF(c.(*net.TCPConn))
		} else {
			go echo(c.(*net.TCPConn), name)
		}
	}
}

// echo greets with "NAME\n", echoes everything, and half-closes at the
// client's end of stream.
func echo(c *net.TCPConn, name string) {
	defer c.Close()
	if _, err := io.WriteString(c, name+"\n"); err != nil {
		return
	}
	if _, err := io.Copy(c, c); err != nil {
		return
	}
	c.CloseWrite()
}

// reverseOnEOF reads until the client's end of stream, then answers with
// the bytes reversed.
func reverseOnEOF(c *net.TCPConn) {
	defer c.Close()
	b, err := io.ReadAll(c)
	if err != nil {
		return
	}
	slices.Reverse(b)
	if _, err := c.Write(b); err != nil {
		return
	}
	c.CloseWrite()
}

// serveUDPEcho answers every datagram on addr with "NAME:" and its
// payload. It never returns.
func serveUDPEcho(addr, name string) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("ready %s\n", pc.LocalAddr())
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			log.Fatal(err)
		}
		reply := append([]byte(name+":"), buf[:n]...)
		if _, err := pc.WriteTo(reply, from); err != nil {
			log.Printf("reply to %s: %v", from, err)
		}
	}
}
