package testutil

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// ValidateOCSF validates OCSF records, one JSON object per line, against
// the OCSF 1.8.0 File System Activity JSON Schema (host and container
// profiles) with scripts/ocsf-validate.sh, which installs its Python
// packages from the registry into a cached venv. Without python3 (or its
// venv module) t is skipped, except under CI=true where that fails.
func ValidateOCSF(t testing.TB, lines []byte) {
	t.Helper()
	script := filepath.Join(repoRoot(t), "scripts", "ocsf-validate.sh")
	f := filepath.Join(t.TempDir(), "ocsf.jsonl")
	if err := os.WriteFile(f, lines, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("bash", script, f).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 3 {
		if os.Getenv("CI") == "true" {
			t.Fatalf("OCSF validation needs python3 with venv, and CI=true turns the skip into a failure: %s", out)
		}
		t.Skipf("OCSF validation needs python3 with venv: %s", out)
	}
	if err != nil {
		t.Fatalf("OCSF schema validation failed: %v\n%s", err, out)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))
}

// repoRoot finds the module root (the directory with go.mod) above the
// test's working directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}
