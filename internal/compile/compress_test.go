package compile

import (
	"slices"
	"testing"

	"github.com/portcullis/portcullis/internal/compress"
	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/proxy"
)

// What validate accepts is what compress knows.
func TestCompressNames(t *testing.T) {
	if !slices.Equal(config.CompressAlgorithms, compress.Names) {
		t.Fatalf("config.CompressAlgorithms %q differ from compress.Names %q", config.CompressAlgorithms, compress.Names)
	}
}

// Only a route with compress gets a handler of its own.
func TestRouteHandler(t *testing.T) {
	cfg := &config.Config{File: "portcullis.yaml"}
	fe := &config.Frontend{Name: "web"}
	b := &proxy.Backend{}
	if h, err := routeHandler(cfg, fe, &config.Route{Backend: "app"}, b); h != nil || err != nil {
		t.Errorf("route without compress: handler %v, error %v; want neither", h, err)
	}
	if h, err := routeHandler(cfg, fe, &config.Route{Backend: "app", Compress: []string{"br", "gzip"}}, b); h == nil || err != nil {
		t.Errorf("route with compress: handler %v, error %v; want a handler", h, err)
	}
	if _, err := routeHandler(cfg, fe, &config.Route{Backend: "app", Compress: []string{"lzma"}}, b); err == nil {
		t.Errorf("compress [lzma]: no error")
	}
}
