package l4

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Splicing a relayed TCP stream.
//
// The kernel moves the bytes from one socket to the other through a pipe
// (splice(2)), so that they never enter user space. A direction holds a
// pipe only while bytes are queued: it waits for its source to become
// readable without one, asks the kernel how many bytes the source holds
// (SIOCINQ), and moves exactly those through a pipe taken from
// splicePipes and given back at once. An idle relayed connection thus
// holds its two sockets and no other descriptor. (io.Copy between the two
// *net.TCPConn splices too, but keeps its pipe until the end of the
// stream: two descriptors per direction while it waits, six per idle
// connection in all.)
//
// Pipes given back are kept for the next transfers and closed once unused
// for pipeIdle to 2 × pipeIdle: a busy proxy does not make a pipe per
// transfer, and an idle one holds none. When no pipe can be made (out of
// descriptors), the bytes are copied through user space instead.

const (
	// maxSplice is the most one splice call moves, and the size asked
	// for the pipes (F_SETPIPE_SZ; 1 MiB is Linux's default
	// pipe-max-size), as the standard library does. A smaller pipe works,
	// with more calls.
	maxSplice = 1 << 20
	// pipeIdle is how long an unused pipe is kept at least.
	pipeIdle = time.Second
)

// copyStream copies src to dst, adding to moved what it moves, until
// src's end of stream (nil) or an
// error: with splice between two TCP sockets (see above), else with
// io.Copy.
func copyStream(dst, src net.Conn, moved *atomic.Int64) error {
	d, ok := dst.(*net.TCPConn)
	s, ok2 := src.(*net.TCPConn)
	if !ok || !ok2 {
		n, err := io.Copy(dst, src)
		moved.Add(n)
		return err
	}
	drc, err := d.SyscallConn()
	if err != nil {
		return err
	}
	srcRC, err := s.SyscallConn()
	if err != nil {
		return err
	}
	st := &stream{dst: d, src: s, drc: drc, srcRC: srcRC}
	st.queuedFn, st.fillFn, st.drainFn = st.queued, st.fill, st.drain
	for {
		n, err := st.wait()
		if err != nil || n == 0 {
			return err
		}
		if err := st.move(n); err != nil {
			return err
		}
		moved.Add(int64(n)) // queued bytes do not vanish: all of them moved
	}
}

// stream is one direction of a relayed connection.
type stream struct {
	dst, src   *net.TCPConn
	drc, srcRC syscall.RawConn
	pipe       *splicePipe // during a transfer only
	max        int         // what fill may move
	n          int         // the result of the last callback
	err        error       // its error
	peek       [1]byte
	queuedFn   func(fd uintptr) bool // queued, fill and drain, bound once
	fillFn     func(fd uintptr) bool
	drainFn    func(fd uintptr) bool
}

// wait waits until src has bytes to read, or has ended, and returns how
// many bytes its receive queue holds: 0 at the end of the stream. It
// waits in the runtime's poller, as a read does.
func (s *stream) wait() (int, error) {
	s.n, s.err = 0, nil
	if err := s.srcRC.Read(s.queuedFn); err != nil {
		return 0, err
	}
	return s.n, s.err
}

// queued sets s.n to the bytes queued on fd and reports true, or reports
// false when there is nothing to read yet.
func (s *stream) queued(fd uintptr) bool {
	for {
		n, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		if err != nil {
			s.err = os.NewSyscallError("ioctl", err)
			return true
		}
		if n > 0 {
			s.n = n
			return true
		}
		// Nothing queued: the end of the stream, an error (a reset), or
		// no byte yet, which a peek tells apart.
		m, _, err := unix.Recvfrom(int(fd), s.peek[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return false // wait until readable
		case err != nil:
			s.err = os.NewSyscallError("recvfrom", err)
			return true
		case m == 0:
			return true // the end of the stream
		}
		// A byte arrived between the two calls: count again.
	}
}

// move moves n bytes, which src holds, to dst.
func (s *stream) move(n int) error {
	p := splicePipes.get()
	if p == nil {
		return s.copyN(n)
	}
	s.pipe = p
	defer func() {
		s.pipe = nil
		splicePipes.put(p)
	}()
	for n > 0 {
		s.max, s.n, s.err = min(n, maxSplice), 0, nil
		if err := s.srcRC.Read(s.fillFn); err != nil {
			return err
		}
		if s.err == unix.EINVAL && p.data == 0 {
			return s.copyN(n) // no splice from this socket
		}
		if s.err != nil {
			return os.NewSyscallError("splice", s.err)
		}
		if s.n == 0 {
			return nil // the stream ended early: the next wait sees it
		}
		p.data += s.n
		n -= s.n
		for p.data > 0 {
			s.n, s.err = 0, nil
			if err := s.drc.Write(s.drainFn); err != nil {
				return err
			}
			if s.err != nil {
				return os.NewSyscallError("splice", s.err)
			}
			p.data -= s.n
		}
	}
	return nil
}

// fill moves up to s.max bytes from the socket fd into the pipe.
func (s *stream) fill(fd uintptr) bool {
	for {
		n, err := unix.Splice(int(fd), nil, s.pipe.w, nil, s.max, unix.SPLICE_F_NONBLOCK)
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait until readable
		}
		s.n, s.err = int(n), err
		return true
	}
}

// drain moves what the pipe holds to the socket fd, as much as it takes.
func (s *stream) drain(fd uintptr) bool {
	for {
		n, err := unix.Splice(s.pipe.r, nil, int(fd), nil, s.pipe.data, unix.SPLICE_F_NONBLOCK)
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait until writable
		}
		s.n, s.err = int(n), err
		if n == 0 && err == nil {
			s.err = io.ErrNoProgress
		}
		return true
	}
}

// copyBufferSize is the buffer of a copy through user space.
const copyBufferSize = 64 << 10

var copyBuffers = sync.Pool{New: func() any { return new([copyBufferSize]byte) }}

// copyN copies n bytes (or up to the end of the stream) through user
// space, for want of a pipe. The wrappers hide ReadFrom and WriteTo, which
// would splice.
func (s *stream) copyN(n int) error {
	buf := copyBuffers.Get().(*[copyBufferSize]byte)
	defer copyBuffers.Put(buf)
	_, err := io.CopyBuffer(struct{ io.Writer }{s.dst}, io.LimitReader(struct{ io.Reader }{s.src}, int64(n)), buf[:])
	return err
}

// splicePipe is a pipe that carries bytes between two sockets.
type splicePipe struct {
	r, w int       // its ends
	data int       // bytes in it
	idle time.Time // since when no transfer uses it
}

func newSplicePipe() *splicePipe {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil
	}
	unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, maxSplice)
	return &splicePipe{r: fds[0], w: fds[1]}
}

func (p *splicePipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

// pipePool keeps the pipes no transfer uses, the most recently used last,
// and closes those unused for pipeIdle: it checks every pipeIdle while it
// holds any.
type pipePool struct {
	mu    sync.Mutex
	free  []*splicePipe
	timer *time.Timer
	armed bool
}

// splicePipes are the pipes of the process's relayed connections.
var splicePipes pipePool

// get returns an unused pipe, or a new one; nil when none can be made.
func (pp *pipePool) get() *splicePipe {
	pp.mu.Lock()
	if n := len(pp.free); n > 0 {
		p := pp.free[n-1]
		pp.free[n-1] = nil
		pp.free = pp.free[:n-1]
		pp.mu.Unlock()
		return p
	}
	pp.mu.Unlock()
	return newSplicePipe()
}

// put gives p back. A pipe with bytes left in it (a write failed) is
// closed.
func (pp *pipePool) put(p *splicePipe) {
	if p.data != 0 {
		p.close()
		return
	}
	p.idle = time.Now()
	pp.mu.Lock()
	defer pp.mu.Unlock()
	pp.free = append(pp.free, p)
	if !pp.armed {
		pp.armed = true
		if pp.timer == nil {
			pp.timer = time.AfterFunc(pipeIdle, pp.reap)
		} else {
			pp.timer.Reset(pipeIdle)
		}
	}
}

// reap closes the pipes unused for pipeIdle.
func (pp *pipePool) reap() {
	now := time.Now()
	pp.mu.Lock()
	i := 0
	for i < len(pp.free) && now.Sub(pp.free[i].idle) >= pipeIdle {
		i++
	}
	old := make([]*splicePipe, i)
	copy(old, pp.free[:i])
	k := copy(pp.free, pp.free[i:])
	clear(pp.free[k:])
	pp.free = pp.free[:k]
	if len(pp.free) > 0 {
		pp.timer.Reset(pipeIdle)
	} else {
		pp.armed = false
	}
	pp.mu.Unlock()
	for _, p := range old {
		p.close()
	}
}
