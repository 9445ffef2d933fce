package integration

import (
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// curlName fetches https://NAME:PORT/ with curl, resolving name to
// 127.0.0.1 and trusting only the certificate in the file ca.
func curlName(t *testing.T, ca, name string, port int) (response, error) {
	t.Helper()
	bin := needTool(t, "curl", "curl")
	cmd := exec.Command(bin, "-q", "-sS", "--noproxy", "*", "-i",
		"--max-time", strconv.Itoa(int(scaled(10*time.Second).Seconds())),
		"--cacert", ca, "--resolve", fmt.Sprintf("%s:%d:127.0.0.1", name, port),
		fmt.Sprintf("https://%s:%d/", name, port))
	out, err := runTimeout(cmd, scaled(15*time.Second))
	if err != nil {
		return response{}, fmt.Errorf("curl https://%s:%d/: %v", name, port, err)
	}
	return parseCurl(string(out))
}

// malformedHello is a TLS record header for a 200-byte handshake record,
// a ClientHello header of the right length, and pseudo-random bytes in
// place of the ClientHello's body.
func malformedHello() []byte {
	b := []byte{0x16, 0x03, 0x01, 0x00, 200, 0x01, 0x00, 0x00, 196}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 196 {
		b = append(b, byte(rng.UintN(256)))
	}
	return b
}

// TestL4SNIPassthrough runs two TLS servers, each with its own
// self-signed certificate, behind an http frontend whose TLS bind passes
// one.pass.example.test to the first and the rest of *.pass.example.test
// to the second, and terminates term.example.test itself with its own
// certificate; and behind the tcp frontend "edge" with the same sni
// routes. curl and openssl s_client must see each server's own
// certificate for its names (passed through untouched), and portcullis's
// certificate and its HTTP backend's answer for term.example.test, on
// the same port. A name no route of edge matches, and a ClientHello that
// is not one, get the connection closed and a log line.
func TestL4SNIPassthrough(t *testing.T) {
	one := newSelfSigned(t, "one.pass.example.test")
	two := newSelfSigned(t, "*.pass.example.test", "*.b.pass.example.test")
	term := newSelfSigned(t, "term.example.test")
	files := map[string]string{}
	one.files("one", files)
	two.files("two", files)
	term.files("term", files)

	// The TLS servers read their certificates from a directory of their
	// own, written before they start.
	certDir := sharedDir(t)
	for name, content := range files {
		writeFile(t, filepath.Join(certDir, name), content, 0o644)
	}
	tlsOne := startUp(t, "tls-one", "127.0.0.1:0", "-tls", filepath.Join(certDir, "one.pem")+","+filepath.Join(certDir, "one.key"))
	tlsTwo := startUp(t, "tls-two", "127.0.0.1:0", "-tls", filepath.Join(certDir, "two.pem")+","+filepath.Join(certDir, "two.key"))
	app := startUpstream(t, "app", nil)

	const webPort, edgePort = 443, 8443
	dir, p := startL4(t, l4Global+fmt.Sprintf(`frontends:
  web:
    bind:
      - address: 127.0.0.1:%d
        tls:
          certificates:
            - cert: term.pem
              key: term.key
    routes:
      - host: term.example.test
        backend: app
      - sni: one.pass.example.test
        backend: tls-one
      - sni: "*.pass.example.test"
        backend: tls-two
  edge:
    mode: tcp
    bind:
      - address: 127.0.0.1:%d
    routes:
      - sni: one.pass.example.test
        backend: tls-one
      - sni: imap.pass.example.test
        alpn: [imap]
        backend: tls-one
      - sni: "*.pass.example.test"
        backend: tls-two
backends:
  tls-one:
    servers:
      - address: %s
  tls-two:
    servers:
      - address: %s
  app:
    servers:
      - address: %s
`, webPort, edgePort, tlsOne.addr, tlsTwo.addr, app.addr), files)
	ca := func(name string) string { return filepath.Join(dir, name+".pem") }

	for _, fe := range []struct {
		name string
		port int
	}{{"web", webPort}, {"edge", edgePort}} {
		addr := fmt.Sprintf("127.0.0.1:%d", fe.port)
		for _, c := range []struct {
			sni, ca, fingerprint, body string
		}{
			{"one.pass.example.test", ca("one"), one.fingerprint, "tls-one GET / HTTP/2.0\n"},
			{"x.pass.example.test", ca("two"), two.fingerprint, "tls-two GET / HTTP/2.0\n"},
			{"a.b.pass.example.test", ca("two"), two.fingerprint, "tls-two GET / HTTP/2.0\n"},
		} {
			if got := peerFingerprint(t, addr, c.sni); got != c.fingerprint {
				t.Errorf("%s: openssl s_client -servername %s got the certificate %q, want %s", fe.name, c.sni, got, c.fingerprint)
			}
			r, err := curlName(t, c.ca, c.sni, fe.port)
			if err != nil || r.status != 200 || r.body != c.body {
				t.Errorf("%s: curl https://%s:%d/ trusting only its server's certificate: want 200 %q, got %v %v", fe.name, c.sni, fe.port, c.body, r, err)
			}
		}
	}

	// The name portcullis terminates, on the same port.
	if got := peerFingerprint(t, "127.0.0.1:443", "term.example.test"); got != term.fingerprint {
		t.Errorf("web: openssl s_client -servername term.example.test got the certificate %q, want portcullis's own %s", got, term.fingerprint)
	}
	r, err := curlName(t, ca("term"), "term.example.test", webPort)
	if err != nil || r.status != 200 || !strings.HasPrefix(r.body, "upstream: app\n") || !strings.Contains(r.body, "\nheader X-Forwarded-Proto: https\n") {
		t.Errorf("web: curl https://term.example.test/: want 200 from the app backend over HTTPS, got %v %v", r, err)
	}

	// ALPN: imap.pass.example.test goes to tls-one only when the client
	// offers imap; curl offers h2 and http/1.1, so it gets tls-two. (The
	// servers speak no imap: the client offers h2 too, and they pick it.)
	edge := fmt.Sprintf("127.0.0.1:%d", edgePort)
	if r, err := curlName(t, ca("two"), "imap.pass.example.test", edgePort); err != nil || r.status != 200 || r.body != "tls-two GET / HTTP/2.0\n" {
		t.Errorf("edge: imap.pass.example.test without ALPN imap: want tls-two's answer, got %v %v", r, err)
	}
	imapConn, err := tls.DialWithDialer(&net.Dialer{Timeout: scaled(5 * time.Second)}, "tcp", edge,
		&tls.Config{ServerName: "imap.pass.example.test", NextProtos: []string{"imap", "h2"}, InsecureSkipVerify: true})
	if err != nil {
		t.Errorf("edge: TLS with ALPN imap: %v", err)
	} else {
		if got := fingerprintOf(imapConn); got != one.fingerprint {
			t.Errorf("edge: imap.pass.example.test with ALPN imap got the certificate %s, want tls-one's %s", got, one.fingerprint)
		}
		imapConn.Close()
	}

	// A name no route of edge matches: closed, and the log says so.
	mark := len(p.stderr.String())
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: scaled(5 * time.Second)}, "tcp", edge,
		&tls.Config{ServerName: "other.example.test", InsecureSkipVerify: true})
	if err == nil {
		c.Close()
		t.Errorf("edge: a TLS handshake for other.example.test, which no route names, succeeded with the certificate %s", fingerprintOf(c))
	}
	waitLogWith(t, p, mark, scaled(5*time.Second), "level=WARN", `msg="closing connection: no route matches"`, "frontend=edge", "sni=other.example.test")

	// Not a ClientHello after a valid record header: closed, and logged,
	// on both frontends.
	for _, fe := range []struct {
		name string
		port int
	}{{"web", webPort}, {"edge", edgePort}} {
		mark := len(p.stderr.String())
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", fe.port), scaled(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(malformedHello()); err != nil {
			t.Fatal(err)
		}
		if err := closedWithoutAnswer(c, scaled(3*time.Second)); err != nil {
			t.Errorf("%s: a malformed ClientHello: %v, want the connection closed", fe.name, err)
		}
		c.Close()
		waitLogWith(t, p, mark, scaled(5*time.Second), "level=WARN", `msg="closing connection: malformed TLS ClientHello"`, "frontend="+fe.name)
	}
}

// fingerprintOf is the SHA-256 fingerprint of the certificate the server
// of c presented.
func fingerprintOf(c *tls.Conn) string {
	certs := c.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return ""
	}
	return certFingerprint(certs[0].Raw)
}
