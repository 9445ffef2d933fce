package compile

import (
	"github.com/portcullis/portcullis/internal/config"
	"github.com/portcullis/portcullis/internal/proxy"
)

// MaxErrorPageBytes bounds one error page file: 1 MiB. A page is held in
// memory and sent whole.
const MaxErrorPageBytes = 1 << 20

// errorPages reads the page files of fe (nil when it has none) with
// readFile: at startup before privileges are dropped, again on each
// reload, and from the files handed over on an upgrade.
func errorPages(cfg *config.Config, fe *config.Frontend, readFile config.ReadFileFunc) (proxy.ErrorPages, config.ErrorList) {
	if len(fe.Errors) == 0 {
		return nil, nil
	}
	var errs config.ErrorList
	pages := make(proxy.ErrorPages, len(fe.Errors))
	for _, e := range fe.Errors {
		if e.File == "" {
			continue // validation reported it
		}
		at := e.At.Value("file")
		b, err := readFile(cfg.Path(e.File))
		if err != nil {
			errs = append(errs, cfg.Errorf(at, "frontend %q: errors %d: cannot read the page: %v", fe.Name, e.Status, err))
			continue
		}
		if len(b) > MaxErrorPageBytes {
			errs = append(errs, cfg.Errorf(at, "frontend %q: errors %d: the page %s has %d bytes; keep it within %d (1 MiB): link to images and styles instead of inlining them", fe.Name, e.Status, e.File, len(b), MaxErrorPageBytes))
			continue
		}
		pages[e.Status] = b
	}
	return pages, errs
}
