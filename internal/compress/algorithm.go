// Package compress compresses HTTP responses on the fly (gzip, brotli,
// zstd) for the routes that ask for it (docs/configuration.md,
// "compress"). It decides per response, streams, and pools its encoders.
package compress

import (
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Algorithm is a content coding of RFC 9110 §8.4.1. The zero value is
// no coding.
type Algorithm uint8

// The algorithms, by their Content-Encoding tokens.
const (
	None   Algorithm = iota
	Gzip             // "gzip", level GzipLevel
	Brotli           // "br", level BrotliLevel
	Zstd             // "zstd", ZstdLevel with a ZstdWindow window
)

// Levels of the encoders. Fixed: a proxy compresses on the fly, for every
// response of a route, so the levels favour CPU over the last percent of
// size.
const (
	// GzipLevel is 5 of 1 (fastest) to 9 (smallest): past the middle of
	// the range each level costs noticeably more CPU for a few percent
	// of size.
	GzipLevel = 5
	// BrotliLevel is 4 of 0 to 11: the usual on-the-fly level; 5 and
	// above build larger match tables at several times the CPU.
	BrotliLevel = 4
	// ZstdLevel is zstd's default speed (about its level 3).
	ZstdLevel = zstd.SpeedDefault
	// ZstdWindow is the window of zstd in bytes (1 MiB), within the
	// 8 MiB that RFC 9659 §3 lets a client refuse beyond, and what each
	// pooled encoder's memory grows with.
	ZstdWindow = 1 << 20
	// MinSize is the smallest body compressed, in bytes (1 KiB): below it
	// the coding's header and the CPU outweigh the bytes saved.
	MinSize = 1024
)

// Names are the tokens Parse accepts, in the order of preference of
// most servers: zstd, br, gzip.
var Names = []string{"zstd", "br", "gzip"}

// String returns the algorithm's Content-Encoding token.
func (a Algorithm) String() string {
	switch a {
	case Gzip:
		return "gzip"
	case Brotli:
		return "br"
	case Zstd:
		return "zstd"
	}
	return "identity"
}

// Parse returns the algorithm named by a Content-Encoding token (one of
// Names, case-insensitive).
func Parse(name string) (Algorithm, error) {
	switch strings.ToLower(name) {
	case "gzip":
		return Gzip, nil
	case "br":
		return Brotli, nil
	case "zstd":
		return Zstd, nil
	}
	return None, fmt.Errorf("unknown compression algorithm %q: want one of %s", name, strings.Join(Names, ", "))
}

// encoder is what the three libraries' writers have in common.
type encoder interface {
	io.Writer
	Flush() error
	Close() error
	Reset(io.Writer)
}

// pools hold idle encoders by algorithm, so that a response reuses one
// instead of allocating its tables.
var pools = [...]sync.Pool{
	Gzip: {New: func() any {
		w, _ := gzip.NewWriterLevel(io.Discard, GzipLevel) // the level is valid
		return w
	}},
	Brotli: {New: func() any { return brotli.NewWriterLevel(io.Discard, BrotliLevel) }},
	Zstd: {New: func() any {
		w, _ := zstd.NewWriter(io.Discard, zstd.WithEncoderLevel(ZstdLevel), zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(ZstdWindow), zstd.WithLowerEncoderMem(true)) // the options are valid
		return w
	}},
}

// getEncoder returns an encoder of a writing to dst.
func getEncoder(a Algorithm, dst io.Writer) encoder {
	e := pools[a].Get().(encoder)
	e.Reset(dst)
	return e
}

// putEncoder returns a closed encoder of a to its pool.
func putEncoder(a Algorithm, e encoder) {
	e.Reset(io.Discard)
	pools[a].Put(e)
}
