package proxy

import "sync"

// copyBufferSize is the size of the buffers that copy response bodies,
// the size httputil.ReverseProxy allocates per request without a pool.
const copyBufferSize = 32 << 10

// bufferPool is the httputil.BufferPool of every backend: without it,
// ReverseProxy allocates a 32 KiB buffer for each response it copies
// (measured in BENCHMARKS.md, "Hot paths and the first optimization
// pass"). It pools array pointers, so that neither Get nor Put allocates.
type bufferPool struct{ pool sync.Pool }

var copyBuffers = &bufferPool{pool: sync.Pool{New: func() any { return new([copyBufferSize]byte) }}}

func (p *bufferPool) Get() []byte { return p.pool.Get().(*[copyBufferSize]byte)[:] }

func (p *bufferPool) Put(b []byte) {
	if cap(b) != copyBufferSize {
		return // not one of ours
	}
	p.pool.Put((*[copyBufferSize]byte)(b[:copyBufferSize]))
}
