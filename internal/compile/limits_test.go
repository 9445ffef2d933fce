package compile

import (
	"strings"
	"syscall"
	"testing"

	"github.com/portcullis/portcullis/internal/config"
)

// global.max_conns 0 is derived from the open-files limit so that a
// client connection and its server connection always have a descriptor
// each; a value above that is kept, with a warning naming the remedy.
func TestMaxConnsFor(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	derived := (int(rl.Cur) - descriptorReserve) / 2
	n, warning := maxConnsFor(&config.Config{})
	if n != derived || warning != "" {
		t.Errorf("derived: %d %q, want %d (open-files limit %d) and no warning", n, warning, derived, rl.Cur)
	}
	n, warning = maxConnsFor(&config.Config{Global: config.Global{MaxConns: 100}})
	if n != 100 || warning != "" {
		t.Errorf("100: %d %q", n, warning)
	}
	n, warning = maxConnsFor(&config.Config{Global: config.Global{MaxConns: derived + 1}})
	if n != derived+1 || !strings.Contains(warning, "LimitNOFILE") {
		t.Errorf("over the derived value: %d %q, want it kept with a warning naming LimitNOFILE", n, warning)
	}
}
