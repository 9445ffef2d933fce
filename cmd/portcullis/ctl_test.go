package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCtlCommandLine: flags that do not go together and unknown commands
// are usage errors (exit 2, nothing sent); a socket that is not there is
// a failure (exit 1) that names it.
func TestCtlCommandLine(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	none := filepath.Join(dir, "none.sock")
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"ctl"}, exitUsage, "give a command\nusage: portcullis ctl"},
		{[]string{"ctl", "-s", none, "frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"ctl", "-nope", "servers"}, exitUsage, "flag provided but not defined: -nope"},
		{[]string{"ctl", "-s", none, "-url", "http://127.0.0.1:9100", "servers"}, exitUsage, "give -s SOCKET or -url URL, not both"},
		{[]string{"ctl", "-s", none, "-token-file", empty, "servers"}, exitUsage, "-token-file is for -url"},
		{[]string{"ctl", "-url", "127.0.0.1:9100", "servers"}, exitUsage, `-url "127.0.0.1:9100": want http://HOST:PORT`},
		{[]string{"ctl", "-url", "http://127.0.0.1:9100", "-token-file", empty, "servers"}, exitFailure, "is empty"},
		{[]string{"ctl", "-s", none, "weight", "app/127.0.0.1:9001", "x"}, exitUsage, `weight "x": want an integer from 1 to 1000`},
		{[]string{"ctl", "-s", none, "servers"}, exitFailure, "portcullis ctl servers: cannot connect to the admin socket " + none},
	} {
		stdout, stderr, code := runCLI(tc.args...)
		if code != tc.code || stdout != "" || !strings.Contains(stderr, tc.says) {
			t.Errorf("%q: exit status %d, stdout %q, stderr %q; want %d and %q", tc.args, code, stdout, stderr, tc.code, tc.says)
		}
	}
	if stdout, _, code := runCLI("ctl", "-h"); code != exitOK || !strings.Contains(stdout, "weight B/S N") {
		t.Errorf("ctl -h: exit status %d, %q", code, stdout)
	}
}
