package accesslog

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"
)

// DefaultBufferBytes is how many bytes of lines a Writer holds in memory
// while its destination is slower than the requests.
const DefaultBufferBytes = 4 << 20

// Writer owns one destination of access logs: stdout, stderr or a file
// (opened for appending, mode 0640). Lines are appended to a bounded
// buffer in memory and written by one goroutine, so a request never
// waits on the disk; when the buffer is full, lines are dropped and
// counted, and the count is logged once a second. The zero value is not
// usable: see NewWriter.
type Writer struct {
	// To is the destination: "stdout", "stderr" or a file's path.
	To  string
	max int
	log *slog.Logger

	mu      sync.Mutex
	buf     []byte // lines not yet written, at most max bytes
	dropped int64  // lines dropped since the last report
	opened  bool
	closed  bool

	wake   chan struct{} // the buffer has lines
	reopen chan chan error
	quit   chan struct{}
	done   chan struct{}
	out    io.Writer
	file   *os.File // nil for stdout and stderr
}

// NewWriter returns the (not yet opened) writer of destination to:
// "stdout", "stderr" or a file's path. log receives the reports of
// dropped lines and failed writes; bufferBytes bounds the memory it
// holds (0: DefaultBufferBytes).
func NewWriter(to string, bufferBytes int, log *slog.Logger) *Writer {
	if bufferBytes <= 0 {
		bufferBytes = DefaultBufferBytes
	}
	return &Writer{To: to, max: bufferBytes, log: log, wake: make(chan struct{}, 1),
		reopen: make(chan chan error), quit: make(chan struct{}), done: make(chan struct{})}
}

// Open opens the destination (a file is created if needed) and starts
// writing. Opening an open Writer does nothing.
func (w *Writer) Open() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.opened {
		return nil
	}
	if err := w.openDest(); err != nil {
		return err
	}
	w.opened = true
	go w.run()
	return nil
}

// OpenWith is Open with f, the destination file already opened (by
// OpenFile, before a privilege drop): the Writer owns it from then on.
func (w *Writer) OpenWith(f *os.File) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.opened {
		f.Close()
		return nil
	}
	w.file, w.out = f, f
	w.opened = true
	go w.run()
	return nil
}

// IsFile reports whether destination to is a file (not stdout or
// stderr).
func IsFile(to string) bool { return to != "stdout" && to != "stderr" }

// OpenFile opens the access-log file at path for appending, creating it
// with mode 0640 if needed. A file it creates is given to uid and gid
// (≥ 0; -1 leaves it): the user a privileged process drops to, who will
// reopen it.
func OpenFile(path string, uid, gid int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o640)
	if err == nil {
		if uid >= 0 || gid >= 0 {
			if err := f.Chown(uid, gid); err != nil {
				f.Close()
				return nil, fmt.Errorf("access log: %w", err)
			}
		}
		return f, nil
	}
	if errors.Is(err, fs.ErrExist) {
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("access log: %w (the directory must exist, and the file, or the directory for a new file, be writable by the user portcullis runs as; docs/logging.md)", err)
	}
	return f, nil
}

// openDest sets w.out (and w.file for a file).
func (w *Writer) openDest() error {
	switch w.To {
	case "stdout":
		w.out = os.Stdout
		return nil
	case "stderr":
		w.out = os.Stderr
		return nil
	}
	f, err := OpenFile(w.To, -1, -1)
	if err != nil {
		return err
	}
	w.file, w.out = f, f
	return nil
}

// Write appends line, which must end with a newline, to the buffer, or
// counts it as dropped when the buffer is full. It never blocks on the
// destination.
func (w *Writer) Write(line []byte) {
	w.mu.Lock()
	if w.closed || len(w.buf)+len(line) > w.max {
		w.dropped++
		w.mu.Unlock()
		return
	}
	w.buf = append(w.buf, line...)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run writes the buffer whenever it has lines, reopens the file when
// asked, and reports dropped lines once a second.
func (w *Writer) run() {
	defer close(w.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var spare []byte
	for {
		select {
		case <-w.wake:
			spare = w.flush(spare)
		case reply := <-w.reopen:
			spare = w.flush(spare)
			reply <- w.reopenFile()
		case <-tick.C:
			w.report()
		case <-w.quit:
			w.flush(spare)
			w.report()
			if w.file != nil {
				w.file.Close()
			}
			return
		}
	}
}

// flush writes what the buffer holds, swapping it with spare (so that
// requests append to one buffer while the other is written), and
// returns the buffer to reuse.
func (w *Writer) flush(spare []byte) []byte {
	w.mu.Lock()
	b := w.buf
	w.buf = spare[:0]
	w.mu.Unlock()
	if len(b) == 0 {
		return b
	}
	if _, err := w.out.Write(b); err != nil {
		w.log.Warn("access log: write failed; lines lost", "to", w.To, "error", err)
	}
	return b
}

// report logs the lines dropped since the last report, if any.
func (w *Writer) report() {
	w.mu.Lock()
	n := w.dropped
	w.dropped = 0
	w.mu.Unlock()
	if n > 0 {
		w.log.Warn("access log: buffer full, lines dropped (the destination is slower than the requests)", "to", w.To, "dropped", n)
	}
}

// reopenFile opens the path again and closes the old file.
func (w *Writer) reopenFile() error {
	if w.file == nil {
		return nil
	}
	f, err := OpenFile(w.To, -1, -1)
	if err != nil {
		return err
	}
	w.mu.Lock()
	old := w.file
	w.file, w.out = f, f
	w.mu.Unlock()
	old.Close()
	return nil
}

// File returns the open file of a file destination (to hand it to the
// new process of a binary upgrade), nil for stdout, stderr or a Writer
// not open. It stays valid until the next Reopen or Close.
func (w *Writer) File() *os.File {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.opened || w.closed {
		return nil
	}
	return w.file
}

// Reopen makes a file destination write to a new file at its path (after
// logrotate moved the old one away): the lines buffered so far go to the
// old file, every later one to the new. It does nothing for stdout and
// stderr, nor for a Writer that is not open.
func (w *Writer) Reopen() error {
	w.mu.Lock()
	running := w.opened && !w.closed
	w.mu.Unlock()
	if !running {
		return nil
	}
	reply := make(chan error, 1)
	select {
	case w.reopen <- reply:
		return <-reply
	case <-w.done:
		return nil
	}
}

// Close writes the buffered lines, closes a file and stops the Writer;
// later lines are dropped. It is idempotent.
func (w *Writer) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	opened := w.opened
	w.mu.Unlock()
	if opened {
		close(w.quit)
		<-w.done
	}
	return nil
}

// Dropped returns how many lines were dropped and not yet reported.
func (w *Writer) Dropped() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dropped
}

// Logger writes the entries of one frontend to a Writer in a Format.
// A nil *Logger logs nothing.
type Logger struct {
	W      *Writer
	Format Format
}

// bufs are the buffers lines are formatted into.
var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Log formats e and hands the line to the Writer. It does not keep e.
func (l *Logger) Log(e *Entry) {
	bp := bufs.Get().(*[]byte)
	b := l.Format.Append((*bp)[:0], e)
	l.W.Write(b)
	*bp = b
	bufs.Put(bp)
}
