package privilege

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

const dropEnv = "PORTCULLIS_TEST_EXEC_DROPPED"

// TestExecDropped drops privileges and re-executes in a child process (it
// replaces the process image, so it cannot run in this one), without a user
// switch, which needs root. The re-executed child reports every thread's
// state: no capability in any set that grants one, no_new_privs set, and
// the user and group IDs it started with.
func TestExecDropped(t *testing.T) {
	switch os.Getenv(dropEnv) {
	case "drop":
		var env []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, dropEnv+"=") {
				env = append(env, kv)
			}
		}
		env = append(env, dropEnv+"=report") // exec does not dedupe: the first wins
		err := ExecDropped(Target{}, []string{os.Args[0], "-test.run=^TestExecDropped$", "-test.count=1"}, env)
		fmt.Println("ExecDropped returned:", err)
		os.Exit(1)
	case "report":
		threads, err := Threads()
		if err != nil {
			fmt.Println("Threads:", err)
			os.Exit(1)
		}
		fmt.Print("BEGIN\n")
		for _, th := range threads {
			fmt.Printf("uid=%d,%d,%d,%d gid=%d,%d,%d,%d caps=%s/%s/%s/%s nnp=%v\n",
				th.UIDs[0], th.UIDs[1], th.UIDs[2], th.UIDs[3], th.GIDs[0], th.GIDs[1], th.GIDs[2], th.GIDs[3],
				CapNames(th.Inh), CapNames(th.Prm), CapNames(th.Eff), CapNames(th.Amb), th.NoNewPrivs)
		}
		fmt.Print("END\n")
		os.Exit(0)
	}

	self, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestExecDropped$", "-test.count=1")
	cmd.Env = append(os.Environ(), dropEnv+"=drop")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	_, report, ok := strings.Cut(string(out), "BEGIN\n")
	report, _, ok2 := strings.Cut(report, "END\n")
	if !ok || !ok2 {
		t.Fatalf("child output:\n%s", out)
	}
	lines := strings.Split(strings.TrimSpace(report), "\n")
	if len(lines) < 1 || lines[0] == "" {
		t.Fatalf("the re-executed child reported no threads:\n%s", out)
	}
	ids := func(a [4]int) string {
		s := make([]string, 4)
		for i, v := range a {
			s[i] = strconv.Itoa(v)
		}
		return strings.Join(s, ",")
	}
	want := fmt.Sprintf("uid=%s gid=%s caps=none/none/none/none nnp=true", ids(self.UIDs), ids(self.GIDs))
	for _, l := range lines {
		if l != want {
			t.Errorf("a thread of the re-executed process has\n  %s\nwant\n  %s", l, want)
		}
	}
}

func TestVerifyNoNewPrivs(t *testing.T) {
	self, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	// allowRoot: the test may run as root; Verify must not try setuid(0).
	if err := Verify(true, false); err != nil {
		t.Errorf("Verify(allowRoot, no no_new_privs wanted) = %v", err)
	}
	err = Verify(true, true)
	if self.NoNewPrivs {
		if err != nil {
			t.Errorf("Verify with no_new_privs set = %v", err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), "no_new_privs unset") {
		t.Errorf("Verify wanting no_new_privs in a process without it = %v, want an error naming no_new_privs", err)
	}
}

func TestVerifyUnprivileged(t *testing.T) {
	self, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	if self.IsRoot() || self.HasCaps() {
		// setuid(0) would succeed, and Verify exits the process then.
		t.Skipf("runs only without root and capabilities; this process has uid %d", self.UIDs[1])
	}
	if err := Verify(false, false); err != nil {
		t.Errorf("Verify in an unprivileged process = %v", err)
	}
}
