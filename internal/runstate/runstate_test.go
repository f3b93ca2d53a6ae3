package runstate

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

func TestMarker(t *testing.T) {
	testutil.RequireRoot(t) // safefile's ownership rules assume the agent's user is root
	dir := filepath.Join(t.TempDir(), "state")
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

	m, prev, err := Begin(dir, "state_dir", "run-1", now)
	if err != nil {
		t.Fatal(err)
	}
	if prev != nil {
		t.Fatalf("first run found a previous one: %+v", prev)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state dir %v %v, want mode 0700", fi, err)
	}
	if _, _, err := Begin(dir, "state_dir", "run-x", now); !errors.Is(err, ErrBusy) {
		t.Fatalf("a second agent on a live state dir: %v, want ErrBusy", err)
	}
	if err := m.Update(41); err != nil {
		t.Fatal(err)
	}
	if err := m.Update(42); err != nil {
		t.Fatal(err)
	}
	m.Close() // no Clean: as after a SIGKILL

	m2, prev, err := Begin(dir, "state_dir", "run-2", now)
	if err != nil {
		t.Fatal(err)
	}
	if prev == nil || prev.RunID != "run-1" || !prev.HasLastSequence || prev.LastSequence != 42 {
		t.Fatalf("previous %+v, want run-1 at 42", prev)
	}
	if err := m2.Clean(); err != nil {
		t.Fatal(err)
	}
	if err := m2.Update(7); err != nil {
		t.Fatal(err)
	}
	m2.Close()
	if _, err := os.Stat(filepath.Join(dir, markerName)); !os.IsNotExist(err) {
		t.Fatalf("marker left after a clean stop: %v", err)
	}

	m3, prev, err := Begin(dir, "state_dir", "run-3", now)
	if err != nil {
		t.Fatal(err)
	}
	defer m3.Close()
	if prev != nil {
		t.Fatalf("after a clean stop: previous %+v", prev)
	}
}

// TestDamagedMarker: a marker that cannot be parsed still means the
// previous run did not stop cleanly; only its id is unknown.
func TestDamagedMarker(t *testing.T) {
	testutil.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, markerName), []byte(`{"run_id":"x`), 0o600); err != nil {
		t.Fatal(err)
	}
	m, prev, err := Begin(dir, "state_dir", "run-2", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if prev == nil || prev.RunID != "" || prev.HasLastSequence {
		t.Fatalf("previous %+v", prev)
	}
}

// TestUnsafeStateDir: a state directory another user can write is refused,
// naming the key.
func TestUnsafeStateDir(t *testing.T) {
	testutil.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Begin(dir, "state_dir", "r", time.Now()); err == nil {
		t.Fatal("a world-writable state dir was accepted")
	} else if !strings.Contains(err.Error(), "state_dir") {
		t.Fatalf("error does not name the key: %v", err)
	}
}
