// Package testutil holds helpers shared by tests: the root check that turns
// a skip into a failure under CI, and private tmpfs mounts.
package testutil

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// RequireRoot skips t when not root, except under CI=true where a skip
// would hide a missing capability and so fails instead.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("test needs root, and CI=true turns the skip into a failure")
	}
	t.Skip("test needs root")
}

// TmpfsMount mounts a private tmpfs of the given size (e.g. "64m") on a new
// temporary directory and unmounts it when the test ends.
func TmpfsMount(t testing.TB, size string) string {
	t.Helper()
	RequireRoot(t)
	dir, err := os.MkdirTemp("", "fanaudit-mnt-")
	if err != nil {
		t.Fatal(err)
	}
	opts := "size=" + size + ",mode=0755"
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "fanaudit-test", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs on %s: %v: %s", dir, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
		os.Remove(dir)
	})
	return dir
}
