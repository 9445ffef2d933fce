package integration

// Helpers of the layer-4 tests (l4_*_test.go): portcullis started on a
// configuration written inline, self-signed certificates for TLS servers
// that portcullis passes through, raw TCP and UDP clients with a chosen
// source address, and Debian's haproxy as a PROXY protocol peer.

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// l4Global starts a configuration that portcullis, started as root,
// drops to nobody with.
const l4Global = `global:
  user: nobody
  group: nogroup
  grace: 2s
`

// startL4 writes config, and files (name to content, mode 0644) beside it,
// into a new directory and starts portcullis as root on it; it returns
// once portcullis is ready.
func startL4(t *testing.T, config string, files map[string]string) (string, *proc) {
	t.Helper()
	dir := sharedDir(t)
	for name, content := range files {
		writeFile(t, filepath.Join(dir, name), content, 0o644)
	}
	cfg := filepath.Join(dir, "portcullis.yaml")
	writeFile(t, cfg, config, 0o644)
	p := start(t, asRoot(defaultBinary(t), cfg), startOptions{})
	p.waitReady()
	return dir, p
}

// selfSigned is a self-signed certificate (its own CA) for names.
type selfSigned struct {
	certPEM, keyPEM string
	fingerprint     string // SHA-256 of the DER certificate, hex
}

func newSelfSigned(t *testing.T, names ...string) selfSigned {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0]},
		DNSNames:              names,
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return selfSigned{
		certPEM:     string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		keyPEM:      string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})),
		fingerprint: certFingerprint(der),
	}
}

// certFingerprint is the SHA-256 fingerprint of a DER certificate, in hex.
func certFingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// files returns the certificate and key as files NAME.pem and NAME.key,
// for startL4.
func (c selfSigned) files(name string, into map[string]string) {
	into[name+".pem"] = c.certPEM
	into[name+".key"] = c.keyPEM
}

// peerFingerprint connects to addr with openssl s_client, sending
// serverName as SNI, and returns the SHA-256 fingerprint of the
// certificate the server presented, or "" when it presented none.
func peerFingerprint(t *testing.T, addr, serverName string) string {
	t.Helper()
	bin := needTool(t, "openssl", "openssl")
	cmd := exec.Command(bin, "s_client", "-connect", addr, "-servername", serverName)
	cmd.Stdin = strings.NewReader("")
	out, err := runTimeout(cmd, scaled(10*time.Second))
	block, _ := pem.Decode(out)
	if block == nil {
		if err != nil {
			t.Logf("openssl s_client -servername %s: %v", serverName, err)
		}
		return ""
	}
	return certFingerprint(block.Bytes)
}

// runTimeout runs cmd and returns its stdout; it kills cmd after timeout.
func runTimeout(cmd *exec.Cmd, timeout time.Duration) ([]byte, error) {
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			err = fmt.Errorf("%v\n%s", err, stderr.String())
		}
		return []byte(stdout.String()), err
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		return []byte(stdout.String()), fmt.Errorf("%q killed after %v\n%s", cmd.Args, timeout, stderr.String())
	}
}

// dialFrom connects to addr from the source IP from (any port).
func dialFrom(from, addr string) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: scaled(5 * time.Second), LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// rawResponse is the answer to a request sent by rawGet.
type rawResponse struct {
	from   string // the client's address: source IP and port
	status int
	header http.Header
	body   string
}

// rawGet sends "GET path" with Host host over HTTP/1.1 on a new
// connection from the source IP from to addr, and reads the response.
func rawGet(from, addr, host, path string) (rawResponse, error) {
	c, err := dialFrom(from, addr)
	if err != nil {
		return rawResponse{}, err
	}
	defer c.Close()
	r := rawResponse{from: c.LocalAddr().String()}
	c.SetDeadline(time.Now().Add(scaled(10 * time.Second)))
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host)
	if _, err := io.WriteString(c, req); err != nil {
		return r, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	r.status, r.header, r.body = resp.StatusCode, resp.Header, string(b)
	return r, err
}

// proxyV1 is a PROXY protocol v1 header for a TCP over IPv4 connection
// from src to dst ("IP:PORT").
func proxyV1(t *testing.T, src, dst string) []byte {
	t.Helper()
	s, d := tcpAddr(t, src), tcpAddr(t, dst)
	return fmt.Appendf(nil, "PROXY TCP4 %s %s %d %d\r\n", s.IP, d.IP, s.Port, d.Port)
}

// proxyV2 is the binary PROXY protocol v2 header of proxyV1.
func proxyV2(t *testing.T, src, dst string) []byte {
	t.Helper()
	s, d := tcpAddr(t, src), tcpAddr(t, dst)
	h := []byte("\r\n\r\n\x00\r\nQUIT\n")
	h = append(h, 0x21, 0x11, 0, 12) // v2 PROXY, TCP over IPv4, 12 bytes
	h = append(h, s.IP.To4()...)
	h = append(h, d.IP.To4()...)
	return append(h, byte(s.Port>>8), byte(s.Port), byte(d.Port>>8), byte(d.Port))
}

func tcpAddr(t *testing.T, s string) *net.TCPAddr {
	t.Helper()
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// closedWithoutAnswer checks that the server closes c, having sent
// nothing, within the timeout.
func closedWithoutAnswer(c net.Conn, timeout time.Duration) error {
	c.SetReadDeadline(time.Now().Add(timeout))
	b, err := io.ReadAll(c)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("still open after %v (got %q)", timeout, b)
	case len(b) > 0:
		return fmt.Errorf("got %q before the close", b)
	}
	return nil // EOF or a reset
}

// freePorts returns n distinct TCP ports of 127.0.0.1 that nothing
// listens on now.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// haproxyBinary returns the path of Debian's haproxy, or fails (CI=true)
// or skips the test.
func haproxyBinary(t *testing.T) string {
	t.Helper()
	if path, err := exec.LookPath("haproxy"); err == nil {
		return path
	}
	if fi, err := os.Stat("/usr/sbin/haproxy"); err == nil && fi.Mode()&0o111 != 0 {
		return "/usr/sbin/haproxy"
	}
	need(t, "haproxy (Debian package haproxy)")
	return ""
}

// startHAProxy runs haproxy in the foreground on the configuration
// sections (frontends, backends, listen) after a defaults section, and
// waits until every address of addrs accepts connections. It is killed
// when the test ends; its output is logged if the test failed.
func startHAProxy(t *testing.T, sections string, addrs ...string) {
	t.Helper()
	bin := haproxyBinary(t)
	cfg := filepath.Join(sharedDir(t), "haproxy.cfg")
	writeFile(t, cfg, `global
  log stderr format short local0 info
defaults
  log global
  timeout connect 5s
  timeout client 30s
  timeout server 30s
`+sections, 0o644)
	cmd := exec.Command(bin, "-db", "-f", cfg)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("haproxy output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(scaled(10 * time.Second))
	for _, a := range addrs {
		for {
			c, err := net.DialTimeout("tcp", a, scaled(time.Second))
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-done:
				t.Fatalf("haproxy exited: %s", out.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("haproxy does not listen on %s: %v\n%s", a, err, out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
