// Command idle opens many keep-alive connections to a proxy and holds them
// idle, for the memory-per-connection measurement of bench/run compare.
//
// Usage:
//
//	idle -url https://127.0.0.1:8443/ -n 10000 [-p 64] [-h3] [-timeout 10s]
//
// It opens -n connections, -p at a time, each with one GET of -url whose
// response it reads completely (HTTP/1.1 over TLS, or with -h3 HTTP/3 over
// QUIC, each connection from its own UDP socket), so that the proxy holds
// a connection that has served a request and waits for the next one. Then
// it prints "open N" on stdout and holds every connection, sending nothing
// (HTTP/3: QUIC keep-alive PINGs every 10 s, so that the proxy's idle
// timeout does not close them), until its standard input closes or it gets
// SIGINT or SIGTERM; then it closes them and exits. A connection that fails
// is an error: the first one is printed on stderr and the exit status is 1.
// It does not verify the certificate.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

func main() {
	rawURL := flag.String("url", "", "https URL to GET once on each connection (required)")
	n := flag.Int("n", 10000, "connections to open")
	par := flag.Int("p", 64, "connections being opened at once")
	h3 := flag.Bool("h3", false, "HTTP/3 instead of HTTP/1.1 over TLS")
	timeout := flag.Duration("timeout", 10*time.Second, "limit to open one connection and read its response")
	flag.Parse()
	u, err := url.Parse(*rawURL)
	if err != nil || u.Scheme != "https" || *n < 1 || *par < 1 {
		fmt.Fprintln(os.Stderr, "idle: -url https://HOST:PORT/PATH, -n >= 1, -p >= 1")
		os.Exit(2)
	}
	var (
		mu      sync.Mutex
		closers []func()
		first   error
	)
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	for range *par {
		wg.Go(func() {
			for range jobs {
				var c func()
				var err error
				if *h3 {
					c, err = openH3(u, *timeout)
				} else {
					c, err = openH1(u, *timeout)
				}
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				if c != nil {
					closers = append(closers, c)
				}
				mu.Unlock()
			}
		})
	}
	for range *n {
		jobs <- struct{}{}
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
	}
	close(jobs)
	wg.Wait()
	code := 0
	if first != nil {
		fmt.Fprintf(os.Stderr, "idle: %d connections open, then: %v\n", len(closers), first)
		code = 1
	} else {
		fmt.Printf("open %d\n", len(closers))
		// Hold until stdin closes or a signal arrives.
		done := make(chan struct{}, 2)
		go func() { io.Copy(io.Discard, os.Stdin); done <- struct{}{} }()
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
		go func() { <-sigs; done <- struct{}{} }()
		<-done
	}
	for _, c := range closers {
		c()
	}
	os.Exit(code)
}

// openH1 opens one TLS connection, sends one HTTP/1.1 GET and reads the
// response; it returns the connection's closer.
func openH1(u *url.URL, timeout time.Duration) (func(), error) {
	d := &net.Dialer{Timeout: timeout}
	conn, err := tls.DialWithDialer(d, "tcp", u.Host, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", u.RequestURI(), u.Host); err != nil {
		conn.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && (resp.StatusCode != http.StatusOK || resp.Close) {
		err = fmt.Errorf("status %d, close %v", resp.StatusCode, resp.Close)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return func() { conn.Close() }, nil
}

// openH3 opens one QUIC connection from its own UDP socket, sends one
// HTTP/3 GET and reads the response; it returns the connection's closer.
func openH3(u *url.URL, timeout time.Duration) (func(), error) {
	addr, err := net.ResolveUDPAddr("udp", u.Host)
	if err != nil {
		return nil, err
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4zero})
	if err != nil {
		return nil, err
	}
	tr := &quic.Transport{Conn: udp}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	qc, err := tr.Dial(ctx, addr, &tls.Config{InsecureSkipVerify: true, ServerName: u.Hostname(), NextProtos: []string{http3.NextProtoH3}},
		&quic.Config{HandshakeIdleTimeout: timeout, MaxIdleTimeout: 5 * time.Minute, KeepAlivePeriod: 10 * time.Second})
	if err != nil {
		tr.Close()
		return nil, err
	}
	closer := func() { qc.CloseWithError(0, ""); tr.Close() }
	cc := (&http3.Transport{}).NewClientConn(qc)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		closer()
		return nil, err
	}
	resp, err := cc.RoundTrip(req)
	if err != nil {
		closer()
		return nil, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != http.StatusOK {
		err = errors.New("status " + resp.Status)
	}
	if err != nil {
		closer()
		return nil, err
	}
	return closer, nil
}
