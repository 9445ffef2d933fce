package attack

import (
	"os"
	"runtime"
	"testing"
)

func TestSampleProc(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	s, err := SampleProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS < 1<<20 || s.FDs < 3 {
		t.Fatalf("implausible sample: %v", s)
	}
}
