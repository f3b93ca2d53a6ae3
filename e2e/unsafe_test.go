package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// TestUnsafeOutputPaths: directories and files that the unprivileged user
// nobody controls are refused at start-up, as config errors: exit 2 and
// one stderr line naming the key and its line. The victim file that a
// planted link points to stays byte-identical, and a forged spool segment
// is never read.
func TestUnsafeOutputPaths(t *testing.T) {
	testutil.RequireRoot(t)
	m := testutil.TmpfsMount(t, "16m")
	if err := os.Chmod(m, 0o755); err != nil {
		t.Fatal(err)
	}
	watched := filepath.Join(m, "watched")
	if err := os.Mkdir(watched, 0o755); err != nil {
		t.Fatal(err)
	}
	nobody := func(argv ...string) {
		t.Helper()
		args := append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--"}, argv...)
		if out, err := exec.Command("setpriv", args...).CombinedOutput(); err != nil {
			t.Fatalf("as nobody %v: %v: %s", argv, err, out)
		}
	}
	mkdir := func(name string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(m, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	victim := filepath.Join(m, "victim")
	want := []byte("root:secret:1\nroot:secret:2 (no newline)")
	if err := os.WriteFile(victim, want, 0o600); err != nil {
		t.Fatal(err)
	}

	sticky := mkdir("sticky", os.ModeSticky|0o777) // like /tmp: accepted
	nobody("ln", "-s", victim, filepath.Join(sticky, "events.json"))
	world := mkdir("world", 0o777) // anyone can write: refused
	owned := mkdir("owned", 0o755)
	if err := os.Chown(owned, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	nobody("ln", "-s", victim, filepath.Join(owned, "events.json"))
	// nobody pre-creates the spool directory, with a "segment" in it.
	spool := filepath.Join(sticky, "spool")
	nobody("mkdir", "-m", "0700", spool)
	nobody("sh", "-c", `printf forged > "$1"`, "sh", filepath.Join(spool, "seg-00000000000000000001.log"))

	fileCfg := func(path string) string {
		return fmt.Sprintf("paths = [%q]\n\n[[sinks]]\nname = \"f\"\ntype = \"file\"\n[sinks.file]\npath = %q\n", watched, path)
	}
	kafkaCfg := func(key, path string) string {
		return fmt.Sprintf("paths = [%q]\n\n[[sinks]]\nname = \"s\"\ntype = \"stdout\"\n\n[[sinks]]\nname = \"k\"\ntype = \"kafka\"\n[sinks.kafka]\nbrokers = [\"127.0.0.1:1\"]\ntopic = \"t\"\n%s = %q\n", watched, key, path)
	}
	for _, tc := range []struct {
		name, cfg string
		want      []string
	}{
		{"planted link", fileCfg(filepath.Join(sticky, "events.json")), []string{"key sinks[0].file.path", ":7:", "symbolic link"}},
		{"nobody's directory", fileCfg(filepath.Join(owned, "events.json")), []string{"key sinks[0].file.path", ":7:", "owned by uid 65534"}},
		{"world-writable directory", fileCfg(filepath.Join(world, "events.json")), []string{"key sinks[0].file.path", "any user can write it"}},
		{"dead-letter link", kafkaCfg("dead_letter_file", filepath.Join(sticky, "events.json")), []string{"key sinks[1].kafka.dead_letter_file", ":13:", "symbolic link"}},
		{"nobody's spool", kafkaCfg("spool.dir", spool), []string{"key sinks[1].kafka.spool.dir", "owned by uid 65534"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			if strings.Contains(tc.name, "spool") {
				// spool.dir is a key of the [sinks.kafka.spool] table.
				cfg = strings.Replace(cfg, "spool.dir = ", "[sinks.kafka.spool]\ndir = ", 1)
			}
			// Exit 2 before any state is touched; raw config, for its lines.
			a := start(t, false, "run", "--config", writeConfig(t, cfg))
			code := a.wait()
			errs := a.stderr()
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr:\n%s", code, errs)
			}
			if strings.Contains(errs, "\n") || errs == "" {
				t.Errorf("want exactly one stderr line, got:\n%s", errs)
			}
			for _, w := range tc.want {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr %q does not contain %q", errs, w)
				}
			}
		})
	}
	got, err := os.ReadFile(victim)
	if fi, serr := os.Stat(victim); err != nil || serr != nil || !bytes.Equal(got, want) || fi.Mode() != 0o600 {
		t.Errorf("victim changed: %q %v %v", got, err, serr)
	}
	if b, err := os.ReadFile(filepath.Join(spool, "seg-00000000000000000001.log")); err != nil || string(b) != "forged" {
		t.Errorf("forged segment touched: %q %v", b, err)
	}
}

// TestOutputDeletedUnderAgent: the file sink's output is deleted while
// the agent runs. The agent says so, creates the file anew, and every
// record from the deletion on is in the new file, gapless up to the last
// one; the final stats count nothing lost.
func TestOutputDeletedUnderAgent(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "16m")
	outDir := testutil.TmpfsMount(t, "16m")
	out := filepath.Join(outDir, "events.json")
	a := start(t, false, "run", "--config", runConfig(t, fileSinkConfig(watched, out, "")))
	a.waitLog("running", startTimeout)
	if err := os.WriteFile(filepath.Join(watched, "before"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	a.waitFileLines(out, 2)
	if err := os.Remove(out); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(watched, "after-0"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	a.waitLog("output file was deleted under the sink; reopening it and writing those lines again", 10*time.Second)
	for i := 1; i <= 50; i++ {
		if err := os.WriteFile(filepath.Join(watched, fmt.Sprintf("after-%d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a.stop()
	final := a.waitLog("final stats", time.Second)
	data := readFile(t, out)
	recs := parseRecords(t, data)
	if len(recs) == 0 {
		t.Fatal("the new file is empty")
	}
	for i, r := range recs {
		if r.Event.Sequence != recs[0].Event.Sequence+uint64(i) {
			t.Fatalf("record %d has event.sequence %d, want %d: a gap", i, r.Event.Sequence, recs[0].Event.Sequence+uint64(i))
		}
	}
	if last := recs[len(recs)-1].Event.Sequence; float64(last) != final["produced"] {
		t.Errorf("the new file ends at sequence %d, the agent produced %v", last, final["produced"])
	}
	for i := 0; i <= 50; i++ {
		if !bytes.Contains(data, []byte(fmt.Sprintf("%q", filepath.Join(watched, fmt.Sprintf("after-%d", i))))) {
			t.Errorf("no record of after-%d in the new file", i)
		}
	}
	if s := finalSink(t, final, "out"); s["dropped"] != 0 || s["in_flight"] != 0 || s["delivered"] != final["produced"] {
		t.Errorf("final stats %v", final)
	}
}

// TestSwappedLinkOnSIGHUP: the agent writes into a sticky root-owned
// directory (like /tmp). Its file is moved away, nobody plants a link to
// a root-owned victim at the path, and SIGHUP asks for a reopen. The
// reopen is refused and logged, the victim stays byte-identical, and
// every record is in the moved file, gapless.
func TestSwappedLinkOnSIGHUP(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "16m")
	m := testutil.TmpfsMount(t, "16m")
	if err := os.Chmod(m, 0o755); err != nil {
		t.Fatal(err)
	}
	outDir := filepath.Join(m, "log")
	if err := os.Mkdir(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(outDir, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(m, "victim")
	want := []byte("root:secret:1\nroot:secret:2 (no newline)")
	if err := os.WriteFile(victim, want, 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(outDir, "events.json")
	a := start(t, false, "run", "--config", writeConfig(t, fileSinkConfig(watched, out, "")))
	a.waitLog("running", startTimeout)
	if err := os.WriteFile(filepath.Join(watched, "one"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	a.waitFileLines(out, 2)
	if err := os.Rename(out, out+".1"); err != nil {
		t.Fatal(err)
	}
	args := []string{"--reuid=65534", "--regid=65534", "--clear-groups", "--", "ln", "-s", victim, out}
	if b, err := exec.Command("setpriv", args...).CombinedOutput(); err != nil {
		t.Fatalf("as nobody: %v: %s", err, b)
	}
	a.signal(syscall.SIGHUP)
	a.waitLog("SIGHUP: reopen failed", 10*time.Second)
	for i := range 20 {
		if err := os.WriteFile(filepath.Join(watched, fmt.Sprintf("two-%d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a.stop()
	final := a.waitLog("final stats", time.Second)
	data := readFile(t, out+".1")
	recs := parseRecords(t, data)
	checkGapless(t, recs)
	if float64(len(recs)) != final["produced"] {
		t.Errorf("moved file holds %d records, the agent produced %v", len(recs), final["produced"])
	}
	got, err := os.ReadFile(victim)
	if fi, serr := os.Lstat(victim); err != nil || serr != nil || !bytes.Equal(got, want) || fi.Mode() != 0o600 {
		t.Errorf("victim changed: %q %v %v", got, err, serr)
	}
	if fi, err := os.Lstat(out); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the planted link was touched: %v %v", fi, err)
	}
}
