package config

import (
	"slices"
	"strings"
)

// CompressAlgorithms are the codings a route's compress may list
// (compress.Names, which the compile step checks them against).
var CompressAlgorithms = []string{"zstd", "br", "gzip"}

// validateCompress checks the compress list of a route of a frontend
// whose mode is mode.
func (r *Route) validateCompress(mode, where string, add func(Pos, string, ...any)) {
	if !r.At.Has("compress") {
		return
	}
	if mode == ModeTCP || mode == ModeUDP {
		add(r.At.Key("compress"), "%s: compress is refused: a %s frontend relays bytes, not HTTP responses; compress on a route of an http frontend", where, mode)
		return
	}
	if r.SNI != "" {
		add(r.At.Key("compress"), "%s: compress is refused on an sni route: it passes TLS through; put compress on a route matching host or path_prefix", where)
		return
	}
	known := strings.Join(CompressAlgorithms, ", ")
	if len(r.Compress) == 0 {
		add(r.At.Value("compress"), "%s: compress is empty: list the codings in order of preference, e.g. compress: [%s], or remove it", where, known)
		return
	}
	for i, a := range r.Compress {
		switch {
		case !slices.Contains(CompressAlgorithms, a):
			add(r.At.Value("compress"), "%s: compress: unknown algorithm %q: want %s", where, a, known)
		case slices.Contains(r.Compress[:i], a):
			add(r.At.Value("compress"), "%s: compress: %s is listed twice: list each algorithm once, in order of preference", where, a)
		}
	}
}
