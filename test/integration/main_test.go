package integration

import (
	"debug/buildinfo"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// inNetnsEnv marks the test binary re-executed inside its private network
// namespace; binDirEnv passes it the directory of the binaries built before.
const (
	inNetnsEnv = "PORTCULLIS_IN_NETNS"
	binDirEnv  = "PORTCULLIS_TEST_BIN_DIR"
)

// Build variants of the binary under test.
const (
	variantCgo    = "cgo"    // go build with cgo (the default where a C compiler exists)
	variantStatic = "static" // CGO_ENABLED=0
	// variantNext is the default build with another version, the "new
	// executable" of the binary upgrade tests.
	variantNext = "next"
)

// nextVersion is the version of the variantNext build.
const nextVersion = "upgrade-next"

// binaries maps a variant to the built binary; binaryErrs says why a
// variant is missing.
var (
	binaries   = map[string]string{}
	binaryErrs = map[string]string{}
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	if os.Getenv(inNetnsEnv) != "1" {
		// Outside the namespace (where the network is, should the build
		// need a module): build, then re-execute inside.
		if reason := cannotEnterNetns(); reason != "" {
			return skipAll(reason)
		}
		dir, err := buildBinaries()
		if err != nil {
			fmt.Fprintf(os.Stderr, "integration: %v\n", err)
			return 1
		}
		err = enterNetns(dir) // returns only on failure
		os.RemoveAll(dir)
		fmt.Fprintf(os.Stderr, "integration: %v\n", err)
		return 1
	}
	dir := os.Getenv(binDirEnv)
	defer os.RemoveAll(dir)
	for _, variant := range []string{variantCgo, variantStatic, variantNext} {
		bin := filepath.Join(dir, variant, "portcullis")
		if _, err := os.Stat(bin); err == nil {
			binaries[variant] = bin
		} else if binaryErrs[variant] = "not built"; variant == variantCgo {
			binaryErrs[variant] = "not built: the go command has cgo disabled (no C compiler?)"
		}
	}
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "integration: ip link set lo up: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// cannotEnterNetns says why the tests cannot run in a network namespace of
// their own, or "".
func cannotEnterNetns() string {
	if os.Geteuid() != 0 {
		return "not root: the tests create a network namespace, bind ports below 1024 and switch users"
	}
	for _, tool := range []struct{ name, pkg string }{{"unshare", "util-linux"}, {"ip", "iproute2"}} {
		if _, err := exec.LookPath(tool.name); err != nil {
			return fmt.Sprintf("%s (Debian package %s) is not installed", tool.name, tool.pkg)
		}
	}
	return ""
}

// enterNetns re-executes the test binary under "unshare -n" with the same
// arguments, telling it where the binaries are. It returns only on failure.
func enterNetns(binDir string) error {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cannot find the test binary: %v", err)
	}
	argv := append([]string{"unshare", "-n", "--", exe}, os.Args[1:]...)
	env := append(os.Environ(), inNetnsEnv+"=1", binDirEnv+"="+binDir)
	return fmt.Errorf("exec unshare -n: %v", syscall.Exec(unshare, argv, env))
}

// skipAll reports why no test runs: a failure under CI=true, else a skip.
func skipAll(reason string) int {
	if os.Getenv("CI") == "true" {
		fmt.Fprintf(os.Stderr, "integration: FAIL: %s (required with CI=true)\n", reason)
		return 1
	}
	fmt.Printf("integration: skipping every test: %s\n", reason)
	return 0
}

// buildBinaries builds cmd/portcullis once per variant, in parallel, into
// DIR/VARIANT/portcullis in a new directory that anybody may traverse. The
// cgo variant is built only where the go command has cgo enabled (a C
// compiler is installed).
func buildBinaries() (string, error) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go command is not on PATH: %v", err)
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(sharedTempBase(), "portcullis-bin-")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	want := map[string]string{variantStatic: "0", variantNext: "0"}
	if cgo, _ := exec.Command(goCmd, "env", "CGO_ENABLED").Output(); strings.TrimSpace(string(cgo)) == "1" {
		want[variantCgo], want[variantNext] = "1", "1"
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []string
	for variant, cgoEnabled := range want {
		wg.Go(func() {
			bin := filepath.Join(dir, variant, "portcullis")
			args := []string{"build", "-o", bin}
			if variant == variantNext {
				args = append(args, "-ldflags=-X main.version="+nextVersion)
			}
			cmd := exec.Command(goCmd, append(args, "./cmd/portcullis")...)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgoEnabled)
			out, err := cmd.CombinedOutput()
			if err == nil {
				err = checkCgoSetting(bin, cgoEnabled)
			}
			if err == nil {
				err = os.Chmod(filepath.Dir(bin), 0o755)
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Sprintf("build the %s variant: %v\n%s", variant, err, out))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		os.RemoveAll(dir)
		return "", fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return dir, nil
}

// checkCgoSetting checks that the binary was built with CGO_ENABLED=want.
func checkCgoSetting(bin, want string) error {
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		return err
	}
	for _, s := range info.Settings {
		if s.Key == "CGO_ENABLED" {
			if s.Value != want {
				return fmt.Errorf("%s was built with CGO_ENABLED=%s, want %s", bin, s.Value, want)
			}
			return nil
		}
	}
	return fmt.Errorf("%s: no CGO_ENABLED in its build information", bin)
}

// binary returns the binary of a build variant.
func binary(t *testing.T, variant string) string {
	t.Helper()
	if bin, ok := binaries[variant]; ok {
		return bin
	}
	need(t, fmt.Sprintf("the %s build of portcullis: %s", variant, binaryErrs[variant]))
	return ""
}

// defaultBinary is the binary most tests run: the cgo build, as a plain
// "go build" makes it, where cgo is available.
func defaultBinary(t *testing.T) string {
	t.Helper()
	if bin, ok := binaries[variantCgo]; ok {
		return bin
	}
	return binary(t, variantStatic)
}

// need fails the test under CI=true and skips it otherwise: something it
// requires is missing.
func need(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("missing %s (required with CI=true)", what)
	}
	t.Skipf("missing %s", what)
}

// needTool returns the path of an external command, or fails or skips the
// test (see need) when it is not installed.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		need(t, fmt.Sprintf("%s (Debian package %s)", name, pkg))
	}
	return path
}

// sharedTempBase is a directory for files the unprivileged portcullis must
// reach: os.TempDir() when every directory above it may be traversed by
// anybody, else /tmp.
func sharedTempBase() string {
	dir := os.TempDir()
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return "/tmp"
		}
		if d == filepath.Dir(d) {
			return dir
		}
	}
}
