package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// TestUnwatchedWindowRecord: under inode marks (scope = "subtree"), work in
// a directory made while the agent does not read (stopped with SIGSTOP, as
// when it reads behind) happened before the directory's mark; the agent
// announces it with an events_lost record, reason unwatched_window, naming
// the directory, in every sink: ECS file, OCSF file and stdout.
func TestUnwatchedWindowRecord(t *testing.T) {
	testutil.RequireRoot(t)
	w := filepath.Join(testutil.TmpfsMount(t, "64m"), "w")
	if err := os.Mkdir(w, 0o755); err != nil {
		t.Fatal(err)
	}
	outDir := testutil.TmpfsMount(t, "64m")
	ecs, ocsf := filepath.Join(outDir, "ecs.json"), filepath.Join(outDir, "ocsf.json")
	a := start(t, true, "run", "--config", runConfig(t, fmt.Sprintf(`paths = [%q]
stats_interval = "0s"
[capture]
scope = "subtree"
[logging]
format = "json"

[[sinks]]
name = "stdout"
type = "stdout"
when_full = "block"

[[sinks]]
name = "ecs"
type = "file"
[sinks.file]
path = %q

[[sinks]]
name = "ocsf"
type = "file"
format = "ocsf"
[sinks.file]
path = %q
`, w, ecs, ocsf)))
	a.readStdout()
	a.waitLog("running", startTimeout)
	ready := filepath.Join(w, "ready")
	if err := os.WriteFile(ready, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitRecord(t, a, ecs, func(m map[string]any) bool { return leaf(m, "file.path") == ready })

	d := filepath.Join(w, "d")
	a.signal(syscall.SIGSTOP)
	err := os.Mkdir(d, 0o755)
	if err == nil {
		err = os.WriteFile(filepath.Join(d, "f"), []byte("x"), 0o644)
	}
	a.signal(syscall.SIGCONT)
	if err != nil {
		t.Fatal(err)
	}
	isWindow := func(m map[string]any) bool {
		return leaf(m, "event.action") == "events_lost" && leaf(m, "fanaudit.lost.reason") == "unwatched_window"
	}
	waitRecord(t, a, ecs, func(m map[string]any) bool { return isWindow(m) && leaf(m, "file.path") == d })
	a.stop()

	for name, data := range map[string][]byte{"stdout": a.output(), "ecs": readFile(t, ecs)} {
		n := 0
		for _, r := range parseRecords(t, data) {
			if r.Event.Action == "events_lost" && r.Fanaudit.Lost.Reason == "unwatched_window" {
				n++
				if r.File.Path != d || r.File.Type != "dir" || r.Fanaudit.Lost.Count != 0 {
					t.Errorf("%s: unwatched_window record names %q (%s), count %d; want %s (dir), no count", name, r.File.Path, r.File.Type, r.Fanaudit.Lost.Count, d)
				}
			}
		}
		if n != 1 {
			t.Errorf("%s: %d unwatched_window records, want 1", name, n)
		}
	}
	n := 0
	for _, line := range bytes.Split(bytes.TrimSpace(readFile(t, ocsf)), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("ocsf: %v: %s", err, line)
		}
		if leaf(m, "unmapped.fanaudit.lost.reason") == "unwatched_window" {
			n++
			if leaf(m, "file.path") != d || leaf(m, "file.type") != "Folder" {
				t.Errorf("ocsf: unwatched_window record's file %v, want %s (Folder)", m["file"], d)
			}
		}
	}
	if n != 1 {
		t.Errorf("ocsf: %d unwatched_window records, want 1", n)
	}
}
