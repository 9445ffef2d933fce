package integration

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"
)

// TestQuickstart runs `portcullis run` without -c, as the README says, and
// follows the instructions it prints: the curl commands work, round robin
// alternates the two demo upstreams, and each upstream reports the
// protocol the client used. HTTP/3 is checked with quic-go, pinned to the
// printed fingerprint.
func TestQuickstart(t *testing.T) {
	bin := defaultBinary(t)
	curlBin := needTool(t, "curl", "curl")
	p := start(t, []string{bin, "run"}, startOptions{})
	p.waitReady()
	// The instructions are printed before READY=1, but stdout is a pipe
	// copied by another goroutine: give it a moment to arrive.
	var out string
	var fp []string
	for deadline := time.Now().Add(scaled(5 * time.Second)); fp == nil || !strings.Contains(out, "Ctrl-C stops"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no SHA-256 fingerprint in the quickstart's output:\n%s", out)
		}
		out = p.stdout.String()
		fp = regexp.MustCompile(`SHA-256 fingerprint: ([0-9A-F:]{95})`).FindStringSubmatch(out)
	}
	var commands []string
	for _, line := range strings.Split(out, "\n") {
		if cmd, ok := strings.CutPrefix(strings.TrimSpace(line), "curl "); ok && !strings.Contains(cmd, "--http3") {
			commands = append(commands, cmd)
		}
	}
	if len(commands) < 4 {
		t.Fatalf("want at least 4 printed curl commands (HTTP/1.1 and h2c on 8080, HTTPS and HTTP/2 on 8443), got %q", commands)
	}
	seen := map[string]bool{}
	for _, c := range commands {
		for range 2 {
			args := append([]string{"-q", "-sS", "--noproxy", "*", "--max-time", "10"}, strings.Fields(c)...)
			body, err := exec.Command(curlBin, args...).Output()
			if err != nil {
				t.Fatalf("printed command curl %s: %v", c, err)
			}
			name, _, _ := strings.Cut(string(body), " ")
			seen[name] = true
			want := "client protocol: HTTP/1.1"
			if strings.Contains(c, "--http2") {
				want = "client protocol: HTTP/2"
			}
			if !strings.Contains(string(body), want) {
				t.Errorf("curl %s: body lacks %q:\n%s", c, want, body)
			}
		}
	}
	if !seen["demo-1"] || !seen["demo-2"] || len(seen) != 2 {
		t.Errorf("round robin: answers came from %v, want demo-1 and demo-2", seen)
	}

	// HTTP/3 on UDP 8443, trusting exactly the printed certificate.
	want := strings.ReplaceAll(fp[1], ":", "")
	tr := &http3.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, // the fingerprint check below replaces it
		VerifyConnection: func(cs tls.ConnectionState) error {
			got := fmt.Sprintf("%X", sha256.Sum256(cs.PeerCertificates[0].Raw))
			if got != want {
				return fmt.Errorf("certificate SHA-256 %s, printed %s", got, want)
			}
			return nil
		},
	}}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), scaled(10*time.Second))
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://127.0.0.1:8443/h3", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("HTTP/3 to the quickstart: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "client protocol: HTTP/3") || !strings.Contains(string(body), "answered GET /h3") {
		t.Errorf("HTTP/3 body:\n%s", body)
	}
	p.stop()
}

// TestCommandLine checks the exit status of each command: 0 for success,
// 2 for a usage or configuration error.
func TestCommandLine(t *testing.T) {
	bin := defaultBinary(t)
	dir := sharedDir(t)
	cases := []struct {
		args []string
		code int
		out  string // in stdout or stderr
	}{
		{[]string{"version"}, 0, "portcullis "},
		{[]string{"help"}, 0, "usage:"},
		{nil, 2, "usage:"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"validate"}, 2, "-c FILE"},
		{[]string{"run", "-x"}, 2, "flag provided but not defined"},
		{[]string{"run", "-c", dir + "/missing.yaml"}, 2, "missing.yaml: cannot read the configuration"},
		{[]string{"validate", "-c", dir + "/missing.yaml"}, 2, "no such file"},
	}
	for _, c := range cases {
		cmd := exec.Command(bin, c.args...)
		out, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != c.code || !strings.Contains(string(out), c.out) {
			t.Errorf("portcullis %q: exit %d, want %d, output lacks %q?\n%s", c.args, code, c.code, c.out, out)
		}
	}
}
