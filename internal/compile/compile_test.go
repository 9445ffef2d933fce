package compile

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/testutil"
)

// compileFile loads and compiles yaml, written to dir as portcullis.yaml,
// reporting the problems of both steps at once (as portcullis validate
// does).
func compileFile(t *testing.T, dir, yaml string) (*Graph, error) {
	t.Helper()
	path := testutil.WriteConfig(t, dir, yaml)
	cfg, err := config.Load(path, nil)
	if cfg == nil {
		return nil, err
	}
	g, cerr := Compile(cfg, os.ReadFile, slog.New(slog.DiscardHandler), nil)
	if err := config.Join(err, cerr); err != nil {
		return nil, err
	}
	return g, nil
}

// handshake completes a TLS handshake against conf with the given SNI and
// returns the server certificate's first name and the negotiated protocol.
func handshake(t *testing.T, conf *tls.Config, sni string, alpn ...string) (string, string) {
	t.Helper()
	c, s := net.Pipe()
	defer c.Close()
	defer s.Close()
	go tls.Server(s, conf).Handshake()
	client := tls.Client(c, &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: alpn})
	if err := client.Handshake(); err != nil {
		t.Fatalf("handshake with SNI %q: %v", sni, err)
	}
	st := client.ConnectionState()
	return st.PeerCertificates[0].DNSNames[0], st.NegotiatedProtocol
}

func TestCertificateChosenBySNI(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteCert(t, dir, "default.test")
	testutil.WriteCert(t, dir, "other.test", "*.other.test")
	g, err := compileFile(t, dir, testutil.TwoCerts)
	if err != nil {
		t.Fatal(err)
	}
	b := g.Frontends[0].Binds[0]
	for sni, want := range map[string]string{
		"default.test":   "default.test",
		"other.test":     "other.test",
		"www.other.test": "other.test",
		"unknown.test":   "default.test", // the first certificate is the default
		"":               "default.test",
	} {
		if got, _ := handshake(t, b.TLS, sni); got != want {
			t.Errorf("SNI %q got the certificate of %q, want %q", sni, got, want)
		}
	}
	if _, proto := handshake(t, b.TLS, "other.test", "h2", "http/1.1"); proto != "h2" {
		t.Errorf("ALPN h2 offered first: negotiated %q", proto)
	}
	if _, proto := handshake(t, b.TLS, "other.test", "http/1.1"); proto != "http/1.1" {
		t.Errorf("ALPN http/1.1: negotiated %q", proto)
	}
	if b.UDP == nil || b.UDP.Network != "udp" || b.UDP.Address != "127.0.0.1:8443" {
		t.Errorf("http3 bind: UDP spec %+v, want udp 127.0.0.1:8443", b.UDP)
	}
	if specs, shards := g.Specs(), b.QUIC.Shards; len(specs) != 1+shards || shards < 1 {
		t.Errorf("specs = %v, want tcp and %d udp shards", specs, shards)
	}
}

func TestCompileReportsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	testutil.WriteCert(t, dir, "default.test")
	yaml := strings.Replace(testutil.TwoCerts, "backend: app", "backend: nosuch", 1)
	yaml = "global:\n  user: no-such-user-here\n" + yaml
	_, err := compileFile(t, dir, yaml)
	var list config.ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("want a config.ErrorList, got %v", err)
	}
	want := []string{
		"portcullis.yaml:2:9: global user \"no-such-user-here\": no such user (create it", // lookup, at compile time
		"portcullis.yaml:12:21: frontend \"web\": cannot read certificate",                // other.test.pem is missing
		"portcullis.yaml:13:20: frontend \"web\": cannot read key",                        // and so is its key: both are named
		"portcullis.yaml:15:18: frontend \"web\": route refers to unknown backend \"nosuch\"",
	}
	got := err.Error()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("errors lack %q:\n%s", w, got)
		}
	}
	if len(list) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(list), len(want), got)
	}
}

// A global.group that does not exist is named once, with how to create
// it (os/user's own error would say "group: " a second time).
func TestCompileUnknownGroup(t *testing.T) {
	yaml := "global:\n  user: nobody\n  group: no-such-group-here\n" +
		"frontends:\n  web:\n    bind:\n      - address: 127.0.0.1:8080\n    routes:\n      - backend: app\nbackends:\n  app:\n    servers:\n      - address: 127.0.0.1:9001\n"
	_, err := compileFile(t, t.TempDir(), yaml)
	want := `portcullis.yaml:3:10: global group "no-such-group-here": no such group (create it, e.g. groupadd --system no-such-group-here)`
	if err == nil || !strings.HasSuffix(err.Error(), "/"+want) {
		t.Errorf("error %v, want .../%s", err, want)
	}
}

// The balance algorithm, the hash key and the servers' states are parsed
// by the packages that own them (balance, upstream), at compile time, and
// reported at their place in the file.
func TestCompileBalanceVocabulary(t *testing.T) {
	for _, c := range []struct{ backend, server, want string }{
		{backend: "    balance: roundrobin\n", want: `portcullis.yaml:9:14: backend "app": balance "roundrobin": want one of round_robin, least_conn, random, hash`},
		{backend: "    balance: hash\n    hash_key: client\n", want: `portcullis.yaml:10:15: backend "app": hash_key "client": want source, uri, header:NAME or cookie:NAME`},
		{backend: "    balance: hash\n    hash_key: \"header:X User\"\n", want: `portcullis.yaml:10:15: backend "app": hash_key "header:X User": header:NAME needs a valid header name`},
		{backend: "    balance: hash\n    hash_key: \"cookie:\"\n", want: `portcullis.yaml:10:15: backend "app": hash_key "cookie:": cookie:NAME needs a valid cookie name`},
		{server: "        state: paused\n", want: `portcullis.yaml:11:16: backend "app": state "paused": want one of active, drain, disabled`},
	} {
		yaml := "frontends:\n  web:\n    bind:\n      - address: 127.0.0.1:8080\n    routes:\n      - backend: app\nbackends:\n  app:\n" +
			c.backend + "    servers:\n      - address: 127.0.0.1:9001\n" + c.server
		_, err := compileFile(t, t.TempDir(), yaml)
		var list config.ErrorList
		if !errors.As(err, &list) || len(list) != 1 || !strings.HasSuffix(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one: %s", c.backend+c.server, err, c.want)
		}
	}
}
