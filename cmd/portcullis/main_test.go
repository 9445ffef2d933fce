package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/portcullis/portcullis/internal/testutil"
)

// oneOfEach is a valid configuration with one frontend, one backend and
// one socket.
const oneOfEach = `frontends:
  web:
    bind:
      - address: 127.0.0.1:8080
    routes:
      - backend: app
backends:
  app:
    servers:
      - address: 127.0.0.1:9001
`

// runCLI runs the command line args and returns its output and status.
func runCLI(args ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	code = run(append([]string{"portcullis"}, args...), &out, &errb)
	return out.String(), errb.String(), code
}

func TestValidateExtraArgument(t *testing.T) {
	path := testutil.WriteConfig(t, t.TempDir(), oneOfEach)
	stdout, stderr, code := runCLI("validate", "-c", path, "extra")
	if code != exitUsage || stdout != "" {
		t.Errorf("exit status %d, stdout %q; want %d and nothing", code, stdout, exitUsage)
	}
	if first, _, _ := strings.Cut(stderr, "\n"); first != `portcullis validate: unexpected argument "extra"` {
		t.Errorf("stderr starts %q, want it to name the unexpected argument", first)
	}
}

func TestValidateWithoutFile(t *testing.T) {
	_, stderr, code := runCLI("validate")
	if first, _, _ := strings.Cut(stderr, "\n"); code != exitUsage || first != "portcullis validate: give the file with -c FILE" {
		t.Errorf("exit status %d, stderr %q; want %d and the -c FILE hint", code, stderr, exitUsage)
	}
}

func TestValidateCountsInWords(t *testing.T) {
	path := testutil.WriteConfig(t, t.TempDir(), oneOfEach)
	stdout, stderr, code := runCLI("validate", "-c", path)
	if want := path + ": valid (1 frontend, 1 backend, 1 socket)\n"; code != exitOK || stdout != want {
		t.Errorf("exit status %d, stdout %q, stderr %q; want %d and %q", code, stdout, stderr, exitOK, want)
	}
}

func TestValidateUnknownUser(t *testing.T) {
	path := testutil.WriteConfig(t, t.TempDir(), "global:\n  user: no-such-user-here\n"+oneOfEach)
	_, stderr, code := runCLI("validate", "-c", path)
	want := path + `:2:9: global user "no-such-user-here": no such user (create it, e.g. useradd --system --no-create-home no-such-user-here)` + "\n"
	want += "portcullis: 1 problem in the configuration\n"
	if code != exitUsage || stderr != want {
		t.Errorf("exit status %d, stderr:\n%s\nwant %d and:\n%s", code, stderr, exitUsage, want)
	}
	if strings.Count(stderr, "user:") > 0 {
		t.Errorf("the message says \"user:\" (os/user's prefix):\n%s", stderr)
	}
}
