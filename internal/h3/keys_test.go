package h3

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeKey(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadKeysRawAndHex(t *testing.T) {
	raw := bytes.Repeat([]byte{0x20, 0x0a, 0xff, 0x01}, 8) // starts and ends with whitespace bytes
	hexKey := bytes.Repeat([]byte{0xab, 0xcd}, 16)
	resetFile := writeKey(t, raw)
	tokenFile := writeKey(t, []byte("  "+strings.ToUpper(hex.EncodeToString(hexKey))+"\n"))
	reset, token, notes, err := LoadKeys(resetFile, tokenFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(reset[:], raw) {
		t.Errorf("raw key: got %x, want %x", reset[:], raw)
	}
	if !bytes.Equal(token[:], hexKey) {
		t.Errorf("hex key: got %x, want %x", token[:], hexKey)
	}
	if len(notes) != 0 {
		t.Errorf("notes: %q", notes)
	}
}

func TestLoadKeysRandomWithNotes(t *testing.T) {
	r1, t1, notes, err := LoadKeys("", "", func(string) ([]byte, error) {
		t.Fatal("read a file for an empty name")
		return nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	r2, t2, _, err := LoadKeys("", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *r1 == *r2 || *t1 == *t2 || *r1 == [32]byte{} || *t1 == [32]byte{} {
		t.Error("random keys repeat or are zero")
	}
	// One short line that says the keys are random, names the settings
	// that would fix them, and where to read more.
	if len(notes) != 1 || len(notes[0]) > 160 {
		t.Fatalf("want one short note, got %q", notes)
	}
	for _, want := range []string{"random keys", "stateless_reset_key_file", "token_key_file", `docs/quic.md, "Key files"`} {
		if !strings.Contains(notes[0], want) {
			t.Errorf("note %q does not say %q", notes[0], want)
		}
	}
	_, _, notes, err = LoadKeys("", "reset.key", func(string) ([]byte, error) { return make([]byte, 32), nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "stateless_reset_key_file not set: a random key") || strings.Contains(notes[0], "token_key_file") {
		t.Errorf("notes with a token key file: %q", notes)
	}
}

func TestLoadKeysErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"short raw", make([]byte, 31), "holds 31 bytes"},
		{"long raw", make([]byte, 33), "holds 33 bytes"},
		{"empty", nil, "holds 0 bytes"},
		{"hex too short", []byte(strings.Repeat("ab", 31) + "\n"), "holds 62 hex digits"},
		{"hex too long", []byte(strings.Repeat("ab", 33)), "holds 66 hex digits"},
		{"16 bytes as hex", []byte(strings.Repeat("ab", 16)), "32 hex digits, which is 16 bytes"},
		{"not hex", []byte(strings.Repeat("zz", 32)), "holds 64 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeKey(t, tc.data)
			_, _, _, err := LoadKeys("", p, nil)
			var kerr *KeyFileError
			if !errors.As(err, &kerr) || kerr.Setting != "token_key_file" || kerr.File != p {
				t.Fatalf("err = %#v, want a *KeyFileError for token_key_file", err)
			}
			for _, want := range []string{"token_key_file", p, tc.want, "head -c 32 /dev/urandom > " + p, "openssl rand -hex 32 > " + p, "chmod 0600"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}

func TestLoadKeysUnreadable(t *testing.T) {
	_, _, _, err := LoadKeys("/etc/portcullis/reset.key", "", func(name string) ([]byte, error) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrPermission}
	})
	var kerr *KeyFileError
	if !errors.Is(err, fs.ErrPermission) || !errors.As(err, &kerr) || kerr.Setting != "stateless_reset_key_file" {
		t.Fatalf("err = %v, want a permission error for stateless_reset_key_file", err)
	}
	for _, want := range []string{"stateless_reset_key_file", "/etc/portcullis/reset.key", "before privileges are dropped", "head -c 32"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	_, _, _, err = LoadKeys(filepath.Join(t.TempDir(), "missing"), "", nil)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: err = %v", err)
	}
}

func TestLoadKeysSameFile(t *testing.T) {
	p := writeKey(t, make([]byte, 32))
	_, _, notes, err := LoadKeys(p, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "separate key") {
		t.Errorf("notes: %q", notes)
	}
}
