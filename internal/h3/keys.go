package h3

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/quic-go/quic-go"
)

// keyLen is the size of both keys: 32 bytes of key material.
const keyLen = 32

// LoadKeys reads the Transport's stateless reset key and token key. One
// pair serves every shard of every bind: a client only accepts a stateless
// reset (RFC 9000, section 10.3) whose token was derived from the key of
// the process that issued the connection ID, and a packet of an old
// connection may reach any shard, of this process or of the next one.
// Likewise a Retry or NEW_TOKEN token (section 8.1) is only accepted where
// the key that sealed it is known.
//
// Each file holds exactly 32 bytes of key material, either raw or as 64
// hex digits (surrounding whitespace ignored). An empty file name means a
// random key for this process; one short note (to log at startup) says so
// and points to docs/quic.md, which says what that costs. readFile reads a
// file; nil means os.ReadFile. Keys are read at startup, while still
// privileged, like certificates. A file that cannot
// be read or holds no valid key gives a *KeyFileError.
func LoadKeys(statelessResetKeyFile, tokenKeyFile string, readFile func(string) ([]byte, error)) (*quic.StatelessResetKey, *quic.TokenGeneratorKey, []string, error) {
	if readFile == nil {
		readFile = os.ReadFile
	}
	var reset quic.StatelessResetKey
	var token quic.TokenGeneratorKey
	var unset []string
	for _, k := range []struct {
		setting, file string
		dst           []byte
	}{{"stateless_reset_key_file", statelessResetKeyFile, reset[:]}, {"token_key_file", tokenKeyFile, token[:]}} {
		if k.file == "" {
			unset = append(unset, k.setting)
			if err := randomKey(k.dst); err != nil {
				return nil, nil, nil, err
			}
		} else if err := readKey(k.setting, k.file, k.dst, readFile); err != nil {
			return nil, nil, nil, err
		}
	}
	var notes []string
	if len(unset) > 0 {
		notes = append(notes, randomKeysNote(unset))
	}
	if statelessResetKeyFile != "" && statelessResetKeyFile == tokenKeyFile {
		notes = append(notes, fmt.Sprintf("quic: stateless_reset_key_file and token_key_file are both %s: a separate key for each is better practice", tokenKeyFile))
	}
	return &reset, &token, notes, nil
}

// randomKeysNote is the note for the settings left unset: one line that
// says the keys are random and where to read what that means (connections
// and tokens do not outlive the process, nor move to another instance).
func randomKeysNote(unset []string) string {
	keys := "a random key"
	if len(unset) > 1 {
		keys = "random keys"
	}
	return fmt.Sprintf("quic: %s not set: %s for this process (see docs/quic.md, \"Key files\")", strings.Join(unset, " and "), keys)
}

func randomKey(dst []byte) error {
	if _, err := rand.Read(dst); err != nil {
		return fmt.Errorf("quic: random key: %w", err)
	}
	return nil
}

// KeyFileError is LoadKeys's error for a key file it cannot use.
type KeyFileError struct {
	// Setting is stateless_reset_key_file or token_key_file.
	Setting string
	// File is the key file's path.
	File string
	// Err is the error reading the file, or what is wrong with its
	// content.
	Err error
}

// Error says what is wrong with the file and how to make a good one.
func (e *KeyFileError) Error() string {
	howTo := fmt.Sprintf("want exactly %d bytes of key material, raw or as %d hex digits; make one with `head -c %d /dev/urandom > %s` or `openssl rand -hex %d > %s`, then `chmod 0600 %s`",
		keyLen, 2*keyLen, keyLen, e.File, keyLen, e.File, e.File)
	var read *readError
	if errors.As(e.Err, &read) {
		return fmt.Sprintf("quic %s: %v (it is read at startup, before privileges are dropped); %s", e.Setting, read.err, howTo)
	}
	return fmt.Sprintf("quic %s %s: %v; %s", e.Setting, e.File, e.Err, howTo)
}

// Unwrap returns Err.
func (e *KeyFileError) Unwrap() error { return e.Err }

// readError marks an error from readFile.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// readKey fills dst (keyLen bytes) from file, for the setting name.
func readKey(name, file string, dst []byte, readFile func(string) ([]byte, error)) error {
	fail := func(err error) error { return &KeyFileError{Setting: name, File: file, Err: err} }
	data, err := readFile(file)
	if err != nil {
		return fail(&readError{err})
	}
	if len(data) == keyLen {
		if isHex(data) {
			// 32 hex digits are 16 bytes of key, not 32.
			return fail(fmt.Errorf("holds %d hex digits, which is %d bytes", keyLen, keyLen/2))
		}
		copy(dst, data)
		return nil
	}
	text := bytes.TrimSpace(data)
	if len(text) == 2*keyLen && isHex(text) {
		_, err := hex.Decode(dst, text)
		return err // nil: isHex checked every digit
	}
	if len(text) > 0 && isHex(text) {
		return fail(fmt.Errorf("holds %d hex digits", len(text)))
	}
	return fail(fmt.Errorf("holds %d bytes", len(data)))
}

func isHex(b []byte) bool {
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}
