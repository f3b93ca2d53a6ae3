package e2e

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

const startTimeout = 30 * time.Second

func fileSinkConfig(watched, out string, extra string) string {
	return fmt.Sprintf(`paths = [%q]
events = ["create", "close_write", "rename", "delete"]
shutdown_timeout = "20s"
stats_interval = "0s"
%s
[logging]
format = "json"

[[sinks]]
name = "out"
type = "file"
[sinks.file]
path = %q
fsync = "never"
max_size_mb = 0
`, watched, extra, out)
}

func checkGapless(t *testing.T, recs []rec) {
	t.Helper()
	for i, r := range recs {
		if r.Event.Sequence != uint64(i+1) {
			t.Fatalf("record %d has event.sequence %d, want %d", i, r.Event.Sequence, i+1)
		}
	}
}

// TestRunFileSink: known operations on a watched tmpfs produce exactly the
// expected records, in order, gapless from 1, and the final counters add up.
func TestRunFileSink(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "16m")
	outDir := testutil.TmpfsMount(t, "16m")
	out := filepath.Join(outDir, "events.json")
	a := start(t, false, "run", "--config", runConfig(t, fileSinkConfig(watched, out, "")))
	a.waitLog("running", startTimeout)

	me := os.Getpid()
	f := filepath.Join(watched, "a.txt")
	if err := os.WriteFile(f, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	g := filepath.Join(watched, "b.txt")
	if err := os.Rename(f, g); err != nil {
		t.Fatal(err)
	}
	d := filepath.Join(watched, "dir")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(g); err != nil {
		t.Fatal(err)
	}
	a.stop()
	final := a.waitLog("final stats", time.Second)

	data := readFile(t, out)
	recs := parseRecords(t, data)
	checkGapless(t, recs)
	want := []struct{ action, path, old string }{
		{"create", f, ""},
		{"close_write", f, ""},
		{"rename", g, f},
		{"create", d, ""},
		{"delete", g, ""},
	}
	if len(recs) != len(want) {
		t.Fatalf("got %d records, want %d:\n%s", len(recs), len(want), data)
	}
	for i, w := range want {
		r := recs[i]
		if r.Event.Action != w.action || r.File.Path != w.path || r.File.Ext.Original.Path != w.old {
			t.Errorf("record %d: %s %s (from %q), want %s %s (from %q)", i, r.Event.Action, r.File.Path, r.File.Ext.Original.Path, w.action, w.path, w.old)
		}
		if r.Process.Pid != me {
			t.Errorf("record %d: process.pid %d, want %d", i, r.Process.Pid, me)
		}
		if len(r.Event.Category) != 1 || r.Event.Category[0] != "file" {
			t.Errorf("record %d: event.category %v", i, r.Event.Category)
		}
	}
	s := finalSink(t, final, "out")
	if final["produced"] != float64(len(recs)) || s["received"] != float64(len(recs)) || s["delivered"] != float64(len(recs)) || s["dropped"] != 0 || s["in_flight"] != 0 {
		t.Errorf("final stats do not add up to %d records: %v", len(recs), final)
	}
}

// TestNoFeedbackLoop: the agent's output file lives inside the watched
// tree; none of its own writes may show up.
func TestNoFeedbackLoop(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "16m")
	out := filepath.Join(watched, "log", "events.json")
	cfg := strings.Replace(fileSinkConfig(watched, out, ""), `events = ["create", "close_write", "rename", "delete"]`, `events = []`, 1)
	a := start(t, false, "run", "--config", runConfig(t, cfg))
	a.waitLog("running", startTimeout)
	for i := 0; i < 20; i++ {
		if err := os.WriteFile(filepath.Join(watched, fmt.Sprintf("f%d", i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a.stop()
	data := readFile(t, out)
	recs := parseRecords(t, data)
	checkGapless(t, recs)
	seen := 0
	for _, r := range recs {
		if strings.HasPrefix(r.File.Path, filepath.Dir(out)) {
			t.Errorf("the agent reported its own output: %s %s", r.Event.Action, r.File.Path)
		}
		if strings.HasPrefix(filepath.Base(r.File.Path), "f") && r.Event.Action == "close_write" {
			seen++
		}
	}
	if seen != 20 {
		t.Errorf("saw %d close_write records for the 20 files", seen)
	}
}

// TestDropPolicy: a stdout pipe nobody reads stalls a drop_newest sink;
// the file sink still gets everything, and the stalled sink's gaps are
// exactly the counts of the loss records naming it.
func TestDropPolicy(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "64m")
	outDir := testutil.TmpfsMount(t, "256m")
	out := filepath.Join(outDir, "events.json")
	cfg := fileSinkConfig(watched, out, "") + `
[[sinks]]
name = "stdout"
type = "stdout"
when_full = "drop_newest"
queue_size = 16
`
	cfg = strings.Replace(cfg, `events = ["create", "close_write", "rename", "delete"]`, `events = ["create"]`, 1)
	a := start(t, true, "run", "--config", runConfig(t, cfg))
	a.waitLog("running", startTimeout)
	// 3000 records of ~500 bytes overflow the 64 KiB pipe and the queue.
	const n = 3000
	for i := 0; i < n; i++ {
		f, err := os.Create(filepath.Join(watched, fmt.Sprintf("file-%05d", i)))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	// The queue only drops while the pipe is stalled; now let it drain.
	a.readStdout()
	a.stop()
	stdoutData := a.output()
	final := a.waitLog("final stats", time.Second)

	fileData := readFile(t, out)
	all := parseRecords(t, fileData)
	checkGapless(t, all)
	creates := 0
	for _, r := range all {
		if r.Event.Action == "create" {
			creates++
		}
	}
	if creates != n {
		t.Errorf("file sink has %d create records, want %d", creates, n)
	}
	some := parseRecords(t, stdoutData)
	var prev uint64
	for _, r := range some {
		if r.Event.Sequence <= prev {
			t.Fatalf("stdout out of order: %d after %d", r.Event.Sequence, prev)
		}
		prev = r.Event.Sequence
	}
	// Both sinks write the one encoding of each record, from the same
	// buffers: a line stdout wrote is the file's line of its sequence,
	// byte for byte (a buffer reused while one of them still read it
	// would show here).
	fileLines := strings.Split(strings.TrimSuffix(string(fileData), "\n"), "\n")
	stdoutLines := strings.Split(strings.TrimSuffix(string(stdoutData), "\n"), "\n")
	for i, r := range some {
		if stdoutLines[i] != fileLines[r.Event.Sequence-1] {
			t.Fatalf("stdout's line of sequence %d differs from the file's:\n%.300q\n%.300q", r.Event.Sequence, stdoutLines[i], fileLines[r.Event.Sequence-1])
		}
	}
	gaps := uint64(len(all) - len(some))
	if gaps == 0 {
		t.Fatal("the stalled stdout sink dropped nothing; the test proves nothing")
	}
	if lossFor(all, "stdout") != gaps || lossFor(some, "stdout") != gaps {
		t.Errorf("stdout missed %d records; loss records say %d (file) and %d (stdout)", gaps, lossFor(all, "stdout"), lossFor(some, "stdout"))
	}
	if s := finalSink(t, final, "stdout"); s["dropped"] != float64(gaps) || s["received"] != float64(len(all)) {
		t.Errorf("final stats for stdout: %v (gaps %d, produced %d)", s, gaps, len(all))
	}
	if s := finalSink(t, final, "out"); s["dropped"] != 0 || s["delivered"] != float64(len(all)) {
		t.Errorf("final stats for the file sink: %v", s)
	}
}

// TestFullDisk: the file sink's filesystem fills up; the agent keeps
// running, counts and reports what it drops, and resumes once there is
// space again.
func TestFullDisk(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "16m")
	outDir := testutil.TmpfsMount(t, "1m")
	out := filepath.Join(outDir, "events.json")
	// Leave about 32 KiB: a few dozen records.
	filler := filepath.Join(outDir, "filler")
	if err := os.WriteFile(filler, make([]byte, 1024*1024-32*1024), 0o600); err != nil && !isNoSpace(err) {
		t.Fatal(err)
	}
	cfg := fileSinkConfig(watched, out, "")
	cfg = strings.Replace(cfg, `events = ["create", "close_write", "rename", "delete"]`, `events = ["create"]`, 1)
	cfg = strings.Replace(cfg, "name = \"out\"\ntype = \"file\"\n", "name = \"out\"\ntype = \"file\"\nwhen_full = \"drop_newest\"\nqueue_size = 32\n", 1)
	a := start(t, false, "run", "--config", runConfig(t, cfg))
	a.waitLog("running", startTimeout)
	for i := 0; i < 500; i++ {
		if err := os.WriteFile(filepath.Join(watched, fmt.Sprintf("before-%04d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a.waitLog("write failed; keeping the items and retrying", 20*time.Second)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	a.waitLog("writing again", 30*time.Second)
	// The backlog may still fill the queue for a moment, and drop_newest
	// then drops new records too: keep creating files until one of them
	// reaches the output.
	after := filepath.Join(watched, "after")
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		if err := os.WriteFile(fmt.Sprintf("%s-%d", after, i), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(out); bytes.Contains(b, []byte(after+"-")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no record reached the output after space was freed")
		}
		a.waitAnyLogOrTick()
	}
	a.stop()
	final := a.waitLog("final stats", time.Second)

	data := readFile(t, out)
	recs := parseRecords(t, data)
	var prev uint64
	sawAfter := false
	for _, r := range recs {
		if r.Event.Sequence <= prev {
			t.Fatalf("out of order: %d after %d", r.Event.Sequence, prev)
		}
		prev = r.Event.Sequence
		if strings.HasPrefix(r.File.Path, after+"-") {
			sawAfter = true
		}
	}
	if !sawAfter {
		t.Error("no record written after space was freed")
	}
	produced := uint64(final["produced"].(float64))
	lost := lossFor(recs, "out")
	if lost == 0 {
		t.Error("nothing reported lost on a full disk with drop_newest")
	}
	if uint64(len(recs))+lost != produced {
		t.Errorf("%d lines + %d reported lost != %d produced", len(recs), lost, produced)
	}
	if s := finalSink(t, final, "out"); s["dropped"] != float64(lost) || s["in_flight"] != 0 {
		t.Errorf("final stats: %v, reported lost %d", s, lost)
	}
}

func isNoSpace(err error) bool {
	return err != nil && bytes.Contains([]byte(err.Error()), []byte("no space"))
}

// TestWatch: the contract's watch command on its own, stopped by --duration.
func TestWatch(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "16m")
	a := start(t, true, "watch", "--events", "create,delete", "--exclude", watched+"/*.tmp", "--duration", "1h", watched)
	a.readStdout()
	a.waitLog("running", startTimeout)
	for _, name := range []string{"keep", "skip.tmp"} {
		p := filepath.Join(watched, name)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	a.signal(syscall.SIGINT)
	if code := a.wait(); code != 0 {
		t.Fatalf("exit %d after SIGINT: %s", code, a.stderr())
	}
	recs := parseRecords(t, a.output())
	checkGapless(t, recs)
	if len(recs) != 2 || recs[0].Event.Action != "create" || recs[1].Event.Action != "delete" || filepath.Base(recs[0].File.Path) != "keep" {
		t.Errorf("watch output: %+v", recs)
	}
}

func TestWatchDuration(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "16m")
	a := start(t, false, "watch", "--duration", "300ms", watched)
	if code := a.wait(); code != 0 {
		t.Fatalf("exit %d: %s", code, a.stderr())
	}
}

// TestSIGHUPReopens: after the file is moved away (as logrotate does),
// SIGHUP makes the sink write to a new file at the configured path.
func TestSIGHUPReopens(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "16m")
	outDir := testutil.TmpfsMount(t, "16m")
	out := filepath.Join(outDir, "events.json")
	a := start(t, false, "run", "--config", runConfig(t, fileSinkConfig(watched, out, "")))
	a.waitLog("running", startTimeout)
	if err := os.WriteFile(filepath.Join(watched, "one"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Wait until the first records reached the file before moving it.
	a.waitFileLines(out, 2)
	if err := os.Rename(out, out+".1"); err != nil {
		t.Fatal(err)
	}
	a.signal(syscall.SIGHUP)
	a.waitLog("SIGHUP: outputs reopened", 10*time.Second)
	if err := os.WriteFile(filepath.Join(watched, "two"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	a.stop()
	old, _ := os.ReadFile(out + ".1")
	cur := readFile(t, out)
	all := append(parseRecords(t, old), parseRecords(t, cur)...)
	checkGapless(t, all)
	if !bytes.Contains(cur, []byte(filepath.Join(watched, "two"))) {
		t.Errorf("new file lacks the record written after SIGHUP:\n%s", cur)
	}
}

// TestShutdownTimeout: a blocking stdout sink whose reader never reads
// cannot flush; SIGTERM still ends the agent, after shutdown_timeout, with
// exit 1 and a log line saying why.
func TestShutdownTimeout(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "64m")
	cfg := fmt.Sprintf(`paths = [%q]
events = ["create"]
shutdown_timeout = "1s"
stats_interval = "0s"
[logging]
format = "json"
[[sinks]]
name = "stdout"
type = "stdout"
when_full = "block"
queue_size = 16
`, watched)
	a := start(t, true, "run", "--config", runConfig(t, cfg))
	a.waitLog("running", startTimeout)
	for i := 0; i < 2000; i++ {
		f, err := os.Create(filepath.Join(watched, fmt.Sprintf("s%05d", i)))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	began := time.Now()
	a.signal(syscall.SIGTERM)
	a.waitLog("shutdown timeout: aborting the flush", 30*time.Second)
	a.readStdout()
	if code := a.wait(); code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, a.stderr())
	}
	if d := time.Since(began); d > 20*time.Second {
		t.Errorf("stop took %s with shutdown_timeout 1s", d)
	}
}

// TestNoFeedbackLoopRotation: the file sink rotates (and gzips) inside the
// watched tree; neither the live file nor the rotated ones are reported,
// and the records of all files together are gapless.
func TestNoFeedbackLoopRotation(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "64m")
	logDir := filepath.Join(watched, "log")
	out := filepath.Join(logDir, "events.json")
	cfg := strings.Replace(fileSinkConfig(watched, out, ""), `events = ["create", "close_write", "rename", "delete"]`, `events = []`, 1)
	cfg = strings.Replace(cfg, "max_size_mb = 0\n", "max_size_mb = 1\ncompress = true\nmax_backups = 0\n", 1)
	a := start(t, false, "run", "--config", runConfig(t, cfg))
	a.waitLog("running", startTimeout)
	const n = 800 // about four records each: over 1 MiB of output
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(watched, fmt.Sprintf("f%04d", i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a.stop()
	ents, err := os.ReadDir(logDir)
	if err != nil {
		t.Fatal(err)
	}
	var all []rec
	for _, e := range ents {
		data := readFile(t, filepath.Join(logDir, e.Name()))
		if strings.HasSuffix(e.Name(), ".gz") {
			zr, err := gzip.NewReader(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if data, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		}
		all = append(all, parseRecords(t, data)...)
	}
	if len(ents) < 2 {
		t.Fatalf("no rotation happened: %v", ents)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Event.Sequence < all[j].Event.Sequence })
	checkGapless(t, all)
	for _, r := range all {
		if strings.HasPrefix(r.File.Path, logDir) || strings.HasPrefix(r.File.Ext.Original.Path, logDir) {
			t.Fatalf("the agent reported its own output: %s %s", r.Event.Action, r.File.Path)
		}
	}
}
