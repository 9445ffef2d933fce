// Package testutil holds what the tests of several packages share: time
// bounds that scale on slow machines, a log buffer safe for concurrent
// writers, and a request body that stalls. Production code never imports
// it.
package testutil

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Scaled multiplies d by $PORTCULLIS_TEST_TIMEOUT_SCALE (a positive float,
// default 1). Bounds in tests only turn a hang into a failure; no test waits
// for one to pass.
func Scaled(d time.Duration) time.Duration {
	if s, err := strconv.ParseFloat(os.Getenv("PORTCULLIS_TEST_TIMEOUT_SCALE"), 64); err == nil && s > 0 {
		return time.Duration(float64(d) * s)
	}
	return d
}

// Buffer is a bytes.Buffer safe for concurrent writers (a slog handler, a
// process's stderr) and readers.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines returns the lines written so far that contain substr.
func (b *Buffer) Lines(substr string) []string {
	var out []string
	for _, l := range strings.SplitAfter(b.String(), "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

// StalledBody returns a request body that sends first at once, then
// nothing until it is closed (as a client transport closes a request body
// once the response came), or fails after Scaled(5s): a proxy without a
// body timeout would wait for ever.
func StalledBody(first string) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte(first))
		time.Sleep(Scaled(5 * time.Second))
		pw.CloseWithError(errors.New("the test gave up on the request"))
	}()
	return pr
}
