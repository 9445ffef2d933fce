package admin

import "net/http"

// statsPage serves the stats page.
func statsPage() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte("<!doctype html><title>portcullis</title><p>The stats page reads <a href=\"/api/backends\">/api/backends</a>.</p>\n"))
	})
}
