// Command upstream is a small HTTP server for portcullis's integration
// tests only: the tests build it, run it as a separate process behind
// portcullis, kill it, and restart it on the same port. It is not meant
// for any other use.
//
// Usage:
//
//	upstream -listen 127.0.0.1:0 -name a [-tls CERT,KEY] [-h2c] [-hang]
//	         [-delay 10ms] [-fail-file PATH]
//	upstream -listen 127.0.0.1:0 -name a -tcp-echo | -tcp-reverse | -udp-echo
//
// Once listening it prints "ready ADDR" on stdout. Endpoints:
//
//	/status/CODE        answer with status CODE
//	/slow?ms=N          sleep N milliseconds, then answer
//	/cut                200 with Content-Length 1000, but only 10 bytes
//	                    of body before the connection is dropped: a server
//	                    that dies in the middle of a response
//	/reset              200 without a length (chunked), 10 bytes of body,
//	                    then the connection is reset (TCP RST) 50ms
//	                    later: a server that crashes mid-response
//	/healthz            200, or 503 while the -fail-file exists
//	/concurrency        "peak=P current=C": the most requests seen at once
//	                    since start (or the last reset) and those now
//	/concurrency/reset  forget the peak
//	/ws                 a WebSocket echo (RFC 6455, over HTTP/1.1): each
//	                    message is answered with the text message
//	                    "NAME N MESSAGE", N numbering the upstream's
//	                    WebSocket connections from 1, so that a client
//	                    can tell that the same connection answered
//	anything else       "NAME METHOD PATH PROTO"
//
// /healthz, /concurrency and /ws do not count as requests for
// /concurrency.
// With -hang it accepts TCP connections and never answers on them.
//
// Layer-4 modes (for the tests of tcp and udp frontends) serve no HTTP:
//
//	-tcp-echo     on each TCP connection, write "NAME\n", then echo every
//	              byte back; at the client's end of stream, end the
//	              reply (half-close) and close
//	-tcp-reverse  read each TCP connection until the client's end of
//	              stream, then write everything it sent in reverse order
//	              and close: a server that answers only after EOF
//	-udp-echo     answer each UDP datagram with "NAME:" and its payload,
//	              to its sender
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	name := flag.String("name", "upstream", "name in every answer")
	tlsFiles := flag.String("tls", "", "CERT,KEY: serve TLS (ALPN h2 and http/1.1)")
	h2c := flag.Bool("h2c", false, "serve HTTP/1.1 and HTTP/2 without TLS (prior knowledge)")
	hang := flag.Bool("hang", false, "accept connections and never answer")
	delay := flag.Duration("delay", 0, "wait this long before every answer")
	failFile := flag.String("fail-file", "", "/healthz answers 503 while this file exists")
	tcpEcho := flag.Bool("tcp-echo", false, "TCP: greet with the name, then echo")
	tcpReverse := flag.Bool("tcp-reverse", false, "TCP: read until EOF, then answer the bytes reversed")
	udpEcho := flag.Bool("udp-echo", false, "UDP: answer each datagram with NAME:PAYLOAD")
	flag.Parse()
	log.SetPrefix("upstream " + *name + ": ")
	log.SetFlags(0)

	if *udpEcho {
		serveUDPEcho(*listen, *name)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	if *hang {
		fmt.Printf("ready %s\n", ln.Addr())
		hangForever(ln)
	}
	if *tcpEcho || *tcpReverse {
		fmt.Printf("ready %s\n", ln.Addr())
		serveTCP(ln, *name, *tcpReverse)
	}

	s := &server{name: *name, delay: *delay, failFile: *failFile}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	if *h2c {
		protocols.SetUnencryptedHTTP2(true)
	}
	if *tlsFiles != "" {
		certFile, keyFile, ok := strings.Cut(*tlsFiles, ",")
		if !ok {
			log.Fatal("-tls wants CERT,KEY")
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			log.Fatal(err)
		}
		protocols.SetHTTP2(true)
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	srv.Protocols = protocols
	fmt.Printf("ready %s\n", ln.Addr())
	log.Fatal(srv.Serve(ln))
}

// hangForever accepts connections, reads and discards what they send, and
// never writes a byte.
func hangForever(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go io.Copy(io.Discard, c)
	}
}

type server struct {
	name     string
	delay    time.Duration
	failFile string

	mu            sync.Mutex
	current, peak int
	wsConns       int // WebSocket connections accepted
}

func (s *server) enter() {
	s.mu.Lock()
	s.current++
	s.peak = max(s.peak, s.current)
	s.mu.Unlock()
}

func (s *server) leave() {
	s.mu.Lock()
	s.current--
	s.mu.Unlock()
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Upstream", s.name)
	switch r.URL.Path {
	case "/healthz":
		if _, err := os.Stat(s.failFile); s.failFile != "" && err == nil {
			http.Error(w, "failing", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
		return
	case "/concurrency":
		s.mu.Lock()
		fmt.Fprintf(w, "peak=%d current=%d\n", s.peak, s.current)
		s.mu.Unlock()
		return
	case "/concurrency/reset":
		s.mu.Lock()
		s.peak = s.current
		s.mu.Unlock()
		io.WriteString(w, "reset\n")
		return
	case "/ws":
		s.serveWebSocket(w, r)
		return
	}
	s.enter()
	defer s.leave()
	io.Copy(io.Discard, r.Body)
	if !sleep(r, s.delay) {
		return
	}
	status := http.StatusOK
	if code, ok := strings.CutPrefix(r.URL.Path, "/status/"); ok {
		n, err := strconv.Atoi(code)
		if err != nil || n < 200 || n > 599 {
			http.Error(w, "bad status", http.StatusBadRequest)
			return
		}
		status = n
	}
	if r.URL.Path == "/reset" {
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "0123456789")
		http.NewResponseController(w).Flush()
		time.Sleep(50 * time.Millisecond) // the bytes go out before the reset
		c, _, err := http.NewResponseController(w).Hijack()
		if err != nil { // HTTP/2: reset the stream instead
			panic(http.ErrAbortHandler)
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
		return
	}
	if r.URL.Path == "/cut" {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "0123456789")
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler) // drops the connection
	}
	if r.URL.Path == "/slow" {
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil || ms < 0 {
			http.Error(w, "slow wants ms=N", http.StatusBadRequest)
			return
		}
		if !sleep(r, time.Duration(ms)*time.Millisecond) {
			return
		}
	}
	body := fmt.Sprintf("%s %s %s %s\n", s.name, r.Method, r.URL.Path, r.Proto)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	io.WriteString(w, body)
}

// sleep waits d, or less when the client goes away; it reports whether the
// client is still there.
func sleep(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}
