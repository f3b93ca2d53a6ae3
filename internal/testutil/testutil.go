// Package testutil holds helpers shared by tests: the root check that turns
// a skip into a failure under CI, the test broker's address, private
// tmpfs mounts and filesystem images to loop-mount.
package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
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

// KafkaBrokers returns the broker scripts/test.sh started
// (FANAUDIT_KAFKA_BROKERS), skipping without one unless CI=true.
func KafkaBrokers(t testing.TB) string {
	t.Helper()
	b := os.Getenv("FANAUDIT_KAFKA_BROKERS")
	if b == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("FANAUDIT_KAFKA_BROKERS is unset and CI=true: run via scripts/test.sh")
		}
		t.Skip("FANAUDIT_KAFKA_BROKERS unset; run scripts/test.sh or eval \"$(bash scripts/kafka.sh start)\"")
	}
	return b
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

// LoopImage makes a filesystem image of the given type ("ext4", "xfs",
// "btrfs") and size under the test's temp dir, for mount -o loop. A
// missing mkfs skips, except under CI=true (.ci/run installs them).
func LoopImage(t testing.TB, fstype string, size int64) string {
	t.Helper()
	RequireRoot(t)
	mkfs := "mkfs." + fstype
	if _, err := exec.LookPath(mkfs); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no %s (.ci/run installs it)", mkfs)
		}
		t.Skipf("no %s", mkfs)
	}
	img := filepath.Join(t.TempDir(), fstype+".img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	args := map[string][]string{"ext4": {"-q", "-F"}, "xfs": {"-q", "-f"}, "btrfs": {"-q", "-f"}}[fstype]
	if out, err := exec.Command(mkfs, append(args, img)...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", mkfs, err, out)
	}
	return img
}
