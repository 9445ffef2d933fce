package compress

import "strings"

// compressible reports whether a Content-Type names a body that
// compresses: text/*, JSON, JavaScript, XML and their +json / +xml
// kinds (SVG, Atom, RSS, XHTML), WebAssembly, and fonts and icons not
// already compressed. A missing type is not compressible.
func compressible(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	if strings.HasPrefix(mt, "text/") {
		return true
	}
	if strings.HasSuffix(mt, "+json") || strings.HasSuffix(mt, "+xml") {
		return true
	}
	switch mt {
	case "application/json", "application/javascript", "application/x-javascript",
		"application/ecmascript", "application/xml", "application/wasm",
		"application/x-ndjson", "application/yaml", "application/toml",
		"application/graphql", "application/x-www-form-urlencoded",
		"font/ttf", "font/otf", "application/vnd.ms-fontobject",
		"image/x-icon", "image/vnd.microsoft.icon", "image/bmp":
		return true
	}
	return false
}
