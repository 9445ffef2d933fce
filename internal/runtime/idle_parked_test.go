package runtime

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// BenchmarkIdleTLSConnParked measures, the same way as
// BenchmarkIdleTLSConn, a prototype of what portcullis does not do: park
// an idle HTTP/1.1 connection with neither a goroutine nor buffers. A
// goroutine serves a connection (TLS handshake, then requests through the
// bind's handler, with bufio buffers from pools) as long as input is
// buffered; then it returns the buffers, registers the socket in an epoll
// set of its own (EPOLLONESHOT) and ends. One goroutine waits on that set
// and starts a goroutine for each connection that becomes readable. What
// an idle connection then holds is its *tls.Conn and its socket.
//
// It is a measurement, not a server: responses are buffered whole
// (httptest.ResponseRecorder), there is no idle timeout, and a TLS record
// that crypto/tls has read but not yet decrypted would go unnoticed while
// parked (crypto/tls does not say whether it holds input).
func BenchmarkIdleTLSConnParked(b *testing.B) {
	n := idleCount(b)
	client := startIdleClient(b, n)
	addr := freeIdleAddr(b)
	bind := compileIdle(b, addr, client.backend).BindAt[addr]
	p := serveParked(b, addr, bind.TLS, bind.Handler)
	measureIdle(b, n, client, "https://"+addr+"/", func(before, open *idleSnap) {
		if got := p.count(); got < n {
			b.Errorf("%d connections parked, want %d", got, n)
		}
	})
	p.close()
}

// parkedServer is the prototype of BenchmarkIdleTLSConnParked.
type parkedServer struct {
	ln      net.Listener
	conf    *tls.Config
	handler http.Handler
	epfd    int
	mu      sync.Mutex
	parked  map[int32]*tls.Conn // by file descriptor
	stop    atomic.Bool
	wg      sync.WaitGroup
}

var (
	parkedReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	parkedWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)

func serveParked(b *testing.B, addr string, conf *tls.Config, h http.Handler) *parkedServer {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		b.Fatal(err)
	}
	p := &parkedServer{ln: ln, conf: conf, handler: h, epfd: epfd, parked: map[int32]*tls.Conn{}}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(tls.Server(c, conf))
		}
	})
	p.wg.Go(p.poll)
	b.Cleanup(p.close)
	return p
}

// serve serves requests on c while it has buffered input, then parks it.
func (p *parkedServer) serve(c *tls.Conn) {
	if err := c.Handshake(); err != nil {
		c.Close()
		return
	}
	br := parkedReaders.Get().(*bufio.Reader)
	bw := parkedWriters.Get().(*bufio.Writer)
	br.Reset(c)
	bw.Reset(c)
	defer func() {
		br.Reset(nil)
		bw.Reset(nil)
		parkedReaders.Put(br)
		parkedWriters.Put(bw)
	}()
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			c.Close()
			return
		}
		req.RemoteAddr = c.RemoteAddr().String()
		st := c.ConnectionState()
		req.TLS = &st
		rec := httptest.NewRecorder()
		p.handler.ServeHTTP(rec, req)
		io.Copy(io.Discard, req.Body)
		resp := rec.Result()
		resp.ContentLength = int64(rec.Body.Len())
		resp.TransferEncoding = nil
		if err := errors.Join(resp.Write(bw), bw.Flush()); err != nil || req.Close {
			c.Close()
			return
		}
		if br.Buffered() == 0 {
			break
		}
	}
	if err := p.park(c); err != nil {
		c.Close()
	}
}

// park hands c to the poll goroutine until it is readable.
func (p *parkedServer) park(c *tls.Conn) error {
	raw, err := c.NetConn().(syscall.Conn).SyscallConn()
	if err != nil {
		return err
	}
	var fd int32
	if err := raw.Control(func(f uintptr) { fd = int32(f) }); err != nil {
		return err
	}
	p.mu.Lock()
	p.parked[fd] = c
	p.mu.Unlock()
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: fd}
	err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, int(fd), &ev)
	if errors.Is(err, syscall.ENOENT) {
		err = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	}
	if err != nil {
		p.mu.Lock()
		delete(p.parked, fd)
		p.mu.Unlock()
	}
	return err
}

// poll starts a goroutine to serve each parked connection that becomes
// readable.
func (p *parkedServer) poll() {
	events := make([]syscall.EpollEvent, 128)
	for !p.stop.Load() {
		k, err := syscall.EpollWait(p.epfd, events, 100)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:k] {
			p.mu.Lock()
			c := p.parked[ev.Fd]
			delete(p.parked, ev.Fd)
			p.mu.Unlock()
			if c != nil {
				go p.serve(c)
			}
		}
	}
}

func (p *parkedServer) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}

func (p *parkedServer) close() {
	if p.stop.Swap(true) {
		return
	}
	p.ln.Close()
	p.wg.Wait()
	p.mu.Lock()
	for fd, c := range p.parked {
		c.Close()
		delete(p.parked, fd)
	}
	p.mu.Unlock()
	syscall.Close(p.epfd)
}
