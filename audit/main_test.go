package audit

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// TestMain doubles as the helper process tests use to cause file activity
// from a pid other than the agent's own.
func TestMain(m *testing.M) {
	if op := os.Getenv("FANAUDIT_HELPER"); op != "" {
		if err := helperOp(op, os.Args[len(os.Args)-2:]); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runHelper runs one file operation in a child process.
func runHelper(t testing.TB, op string, args ...string) {
	t.Helper()
	a := append([]string{"-test.run=^$", "--"}, args...)
	for len(a) < 4 {
		a = append(a, "")
	}
	cmd := exec.Command(os.Args[0], a...)
	// The race runtime sleeps a second at exit unless told not to.
	cmd.Env = append(os.Environ(), "FANAUDIT_HELPER="+op, "GORACE=atexit_sleep_ms=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper %s %v: %v: %s", op, args, err, out)
	}
}
