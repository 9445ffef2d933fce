package compile

import (
	"net/http"

	"github.com/portcullis/portcullis/internal/compress"
	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/proxy"
)

// routeHandler returns what serves route r whose backend is b: b wrapped
// in compression when r has compress, else nil (the router then calls b
// itself, at no extra cost).
func routeHandler(cfg *config.Config, fe *config.Frontend, r *config.Route, b *proxy.Backend) (http.Handler, *config.Error) {
	if len(r.Compress) == 0 || b == nil {
		return nil, nil
	}
	algos := make([]compress.Algorithm, 0, len(r.Compress))
	for _, name := range r.Compress {
		a, err := compress.Parse(name)
		if err != nil {
			return nil, cfg.Errorf(r.At.Value("compress"), "frontend %q: %v", fe.Name, err)
		}
		algos = append(algos, a)
	}
	return compress.Handler(b, algos), nil
}
