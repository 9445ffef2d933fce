// Command backend is the upstream server of the portcullis benchmarks
// (bench/run): plain HTTP/1.1 with keep-alive, answering from memory so
// that it costs as little CPU as possible.
//
// Usage:
//
//	backend -listen 127.0.0.1:0 [-tcp 127.0.0.1:0]
//
// Once listening it prints "ready ADDR" on stdout (after "tcp ADDR" with
// -tcp). Endpoints:
//
//	/bytes?n=N   200 with a body of exactly N bytes (0 <= N <= 64 MiB)
//	anything else  200 with the 3-byte body "ok\n"
//
// -tcp also serves the byte source of bench/tcpload (see serveTCP) on a
// second, plain TCP listener.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"strconv"
	"time"
)

const maxBytes = 64 << 20

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	tcpAddr := flag.String("tcp", "", "also serve bench/tcpload's byte source on this TCP address (\"\": no)")
	flag.Parse()
	log.SetPrefix("bench backend: ")
	log.SetFlags(0)

	// One shared block of filler; /bytes writes it as many times as needed.
	block := make([]byte, 64<<10)
	for i := range block {
		block[i] = 'a' + byte(i%26)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 0 || n > maxBytes {
			http.Error(w, "bytes wants n=0..67108864", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(n))
		for n > 0 {
			k := min(n, len(block))
			if _, err := w.Write(block[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	ok := []byte("ok\n")
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "3")
		w.Write(ok)
	})

	if *tcpAddr != "" {
		tln, err := net.Listen("tcp", *tcpAddr)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("tcp %s\n", tln.Addr())
		go serveTCP(tln)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("ready %s\n", ln.Addr())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute}
	log.Fatal(srv.Serve(ln))
}
