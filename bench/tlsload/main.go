// Command tlsload measures new TLS connections per second for the
// portcullis benchmarks (bench/run compare): each of -c clients loops over
// dial, a full TLS 1.3 handshake (no session resumption: no session cache;
// X25519 only, the key exchange of the OpenSSL-based peers), one HTTP/1.1
// GET with "Connection: close", reading the whole response, and closing.
//
// Usage:
//
//	tlsload -url https://127.0.0.1:8443/ [-c 16] [-d 10s] [-insecure]
//	        [-body-size -1] [-timeout 10s] [-latency-file PATH]
//
// It prints one line in bench/h3load's format:
//
//	requests=N failures=F elapsed_s=S req_per_s=R p50_ms=A p99_ms=B
//
// and exits 1 if any request failed (the first error goes to stderr).
// -latency-file writes every successful request's latency (dial to the
// last byte), in nanoseconds, one a line.
package main

import (
	"bufio"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/portcullis/portcullis/bench/internal/loadstat"
)

func main() {
	rawURL := flag.String("url", "", "https URL to GET (required)")
	clients := flag.Int("c", 16, "concurrent clients")
	dur := flag.Duration("d", 10*time.Second, "stop starting connections after this long")
	insecure := flag.Bool("insecure", false, "do not verify the server's certificate")
	bodySize := flag.Int64("body-size", -1, "expected body size; -1: any")
	timeout := flag.Duration("timeout", 10*time.Second, "limit for one connection and its request")
	latFile := flag.String("latency-file", "", "write every successful request's latency (ns) here")
	flag.Parse()
	u, err := url.Parse(*rawURL)
	if err != nil || u.Scheme != "https" || *clients < 1 {
		fmt.Fprintln(os.Stderr, "tlsload: -url https://HOST:PORT/PATH and -c >= 1")
		os.Exit(2)
	}
	conf := &tls.Config{
		InsecureSkipVerify: *insecure,
		ServerName:         u.Hostname(),
		NextProtos:         []string{"http/1.1"},
		MinVersion:         tls.VersionTLS13,
		CurvePreferences:   []tls.CurveID{tls.X25519},
	}
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", u.RequestURI(), u.Host)
	one := func() error {
		d := &net.Dialer{Timeout: *timeout}
		c, err := tls.DialWithDialer(d, "tcp", u.Host, conf)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(*timeout))
		if c.ConnectionState().DidResume {
			return fmt.Errorf("session resumed")
		}
		if _, err := io.WriteString(c, req); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || (*bodySize >= 0 && n != *bodySize) {
			return fmt.Errorf("status %d, %d bytes", resp.StatusCode, n)
		}
		return nil
	}
	var (
		mu       sync.Mutex
		lat      []time.Duration
		failures int
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(*dur)
	for range *clients {
		wg.Go(func() {
			var mine []time.Duration
			fails := 0
			var ferr error
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if err := one(); err != nil {
					fails++
					if ferr == nil {
						ferr = err
					}
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			failures += fails
			if firstErr == nil {
				firstErr = ferr
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if *latFile != "" {
		if err := loadstat.WriteLatencies(*latFile, lat); err != nil {
			fmt.Fprintln(os.Stderr, "tlsload:", err)
			os.Exit(1)
		}
	}
	fmt.Println(loadstat.Line(lat, int64(failures), elapsed))
	if firstErr != nil || len(lat) == 0 {
		fmt.Fprintf(os.Stderr, "tlsload: %d failed: %v\n", failures, firstErr)
		os.Exit(1)
	}
}
