// Command fasthttp-proxy is a minimal HTTP/1.1 reverse proxy built on
// github.com/valyala/fasthttp (its Server in front, a HostClient toward
// the backend). It is not part of portcullis: bench/run compare runs it
// beside portcullis to measure what an HTTP/1.1 path without net/http
// would cost per request (bench/README.md).
//
// Usage:
//
//	fasthttp-proxy -backend HOST:PORT [-listen ADDR]
//	               [-tls-listen ADDR -cert FILE -key FILE]
//	               [-stream=false] [-write-buffer BYTES]
//
// Each request is forwarded as portcullis forwards it: method, URI,
// headers less the hop-by-hop ones, the proxy's X-Forwarded-For,
// X-Forwarded-Proto, X-Forwarded-Host, Forwarded and Via, and the body;
// the response comes back less its hop-by-hop headers and with Via. Where
// it differs from portcullis is in bench/README.md. There is no access
// log; failures go to stderr.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

func main() {
	listen := flag.String("listen", "", "plain HTTP/1.1 address (\"\": none)")
	tlsListen := flag.String("tls-listen", "", "HTTP/1.1 over TLS address (\"\": none); needs -cert and -key")
	certFile := flag.String("cert", "", "TLS certificate chain (PEM)")
	keyFile := flag.String("key", "", "TLS private key (PEM)")
	backend := flag.String("backend", "", "backend address, HOST:PORT (plain HTTP/1.1)")
	stream := flag.Bool("stream", true, "relay response bodies as they arrive (false: read each whole first, fasthttp's default)")
	writeBuf := flag.Int("write-buffer", 16<<10, "bytes of each client connection's write buffer (fasthttp's default: 4096)")
	flag.Parse()
	logger := log.New(os.Stderr, "fasthttp-proxy: ", log.LstdFlags)
	if err := run(*listen, *tlsListen, *certFile, *keyFile, *backend, *stream, *writeBuf, logger); err != nil {
		logger.Fatal(err)
	}
}

func run(listen, tlsListen, certFile, keyFile, backend string, stream bool, writeBuf int, logger *log.Logger) error {
	if backend == "" {
		return fmt.Errorf("-backend is required")
	}
	if listen == "" && tlsListen == "" {
		return fmt.Errorf("give -listen, -tls-listen or both")
	}
	var lns []net.Listener
	if listen != "" {
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return err
		}
		lns = append(lns, ln)
	}
	if tlsListen != "" {
		if certFile == "" || keyFile == "" {
			return fmt.Errorf("-tls-listen needs -cert and -key")
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", tlsListen)
		if err != nil {
			return err
		}
		// HTTP/1.1 only: fasthttp has no HTTP/2, so a client offering h2
		// falls back to http/1.1 by ALPN.
		lns = append(lns, tls.NewListener(ln, &tls.Config{
			Certificates: []tls.Certificate{cert},
			NextProtos:   []string{"http/1.1"},
			MinVersion:   tls.VersionTLS12,
		}))
	}

	p := newProxy(backend, stream, logger)
	srv := newServer(p, logger)
	// A streamed body goes out in pieces of this size: with fasthttp's
	// 4 KiB, a 1 MiB response over TLS took twice the CPU of 16 KiB (256
	// TLS records and writes instead of 64). It stays allocated to each
	// keep-alive connection, idle or not.
	srv.WriteBufferSize = writeBuf
	errs := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { errs <- srv.Serve(ln) }()
		logger.Printf("listening on %s", ln.Addr())
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	select {
	case err := <-errs:
		return err
	case <-sigs:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.ShutdownWithContext(ctx); err != nil && err != context.DeadlineExceeded {
		return err
	}
	return nil
}

// newServer is the client-facing server with portcullis's HTTP/1.1
// settings where fasthttp has them.
func newServer(p *proxy, logger *log.Logger) *fasthttp.Server {
	return &fasthttp.Server{
		Handler: p.serve,
		Logger:  logger,
		// portcullis bounds the request headers with 10s
		// (ReadHeaderTimeout); fasthttp's ReadTimeout runs from a
		// request's first byte and stays armed while its body streams.
		ReadTimeout: 10 * time.Second,
		IdleTimeout: 120 * time.Second,
		// Request bodies reach the handler as a stream (its first 8 KiB
		// read ahead) and go to the backend as they arrive; without it,
		// fasthttp reads each whole first and refuses those above
		// MaxRequestBodySize (4 MiB).
		StreamRequestBody: true,
		// Send the backend's Server and Content-Type, or none, rather than
		// fasthttp's defaults.
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		// Multipart bodies are the backend's business.
		DisablePreParseMultipartForm: true,
	}
}
