package compile

import (
	"strings"
	"testing"
)

// The key's grammar is ratelimit's, reported at the key's place.
func TestCompileRateLimitKey(t *testing.T) {
	for key, want := range map[string]string{
		"uri":        `portcullis.yaml:7:14: frontend "web": rate_limits per_client key "uri": want source or header:NAME`,
		"header:a b": `portcullis.yaml:7:14: frontend "web": rate_limits per_client key "header:a b": header:NAME needs a valid header name, e.g. header:X-Client`,
	} {
		yaml := "frontends:\n  web:\n    bind:\n      - address: 127.0.0.1:8080\n    rate_limits:\n      per_client:\n        key: " + key +
			"\n        requests: 5\n    routes:\n      - backend: app\nbackends:\n  app:\n    servers:\n      - address: 127.0.0.1:9001\n"
		_, err := compileFile(t, t.TempDir(), yaml)
		if err == nil || !strings.HasSuffix(err.Error(), "/"+want) {
			t.Errorf("key %q: error %v, want .../%s", key, err, want)
		}
	}
	yaml := "frontends:\n  web:\n    bind:\n      - address: 127.0.0.1:8080\n    rate_limits:\n      per_client:\n        key: header:X-Client\n        requests: 5\n    routes:\n      - backend: app\nbackends:\n  app:\n    servers:\n      - address: 127.0.0.1:9001\n"
	if _, err := compileFile(t, t.TempDir(), yaml); err != nil {
		t.Errorf("header:X-Client: %v", err)
	}
}
