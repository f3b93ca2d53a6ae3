package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/ecs"
	"github.com/fanaudit/fanaudit/internal/testutil"
)

// TestFormatsMixedWorkload runs the agent with an ECS and an OCSF file
// sink over a mixed workload (create, write, read, rename, chmod, delete,
// the exec of a program with quoted arguments, and a stalled sink's drops
// for a loss record) and checks every ECS record against the
// ECS field table (0 deviations) and the OCSF records against the OCSF
// 1.8.0 JSON Schema of File System Activity.
func TestFormatsMixedWorkload(t *testing.T) {
	testutil.RequireRoot(t)
	tab, err := ecs.Table()
	if err != nil {
		t.Fatal(err)
	}
	watched := testutil.TmpfsMount(t, "256m")
	outDir := testutil.TmpfsMount(t, "256m")
	ecsOut, ocsfOut := filepath.Join(outDir, "ecs.json"), filepath.Join(outDir, "ocsf.json")
	// A third sink, stdout, is never read until the end: once the pipe
	// is full its one-record queue drops, and the pipeline announces that
	// in-band, to every sink, as an events_lost record.
	cfg := fmt.Sprintf(`paths = [%q]
events = ["create", "open", "access", "modify", "close_write", "close_nowrite", "attrib", "rename", "delete", "exec"]
shutdown_timeout = "60s"
stats_interval = "0s"

[enrich]
file_stat = true

[enrich.hash]
enabled = true

[logging]
format = "json"

[[sinks]]
name = "ecs"
type = "file"
format = "ecs"
queue_size = 65536
[sinks.file]
path = %q
fsync = "never"
max_size_mb = 0

[[sinks]]
name = "ocsf"
type = "file"
format = "ocsf"
queue_size = 65536
[sinks.file]
path = %q
fsync = "never"
max_size_mb = 0

[[sinks]]
name = "stalled"
type = "stdout"
when_full = "drop_newest"
queue_size = 1
`, watched, ecsOut, ocsfOut)
	a := start(t, true, "run", "--config", runConfig(t, cfg))
	a.waitLog("running", startTimeout)

	// create, write, read, rename, chmod
	f := filepath.Join(watched, "report.txt")
	if err := os.WriteFile(f, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(f); err != nil {
		t.Fatal(err)
	}
	g := filepath.Join(watched, "renamed.log")
	if err := os.Rename(f, g); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(g, 0o600); err != nil {
		t.Fatal(err)
	}

	// exec of a program on the watched mount with quoted arguments; it
	// stays alive (reading stdin) until its own create is recorded, so
	// its argv can be read.
	sh := readFile(t, "/bin/sh")
	prog := filepath.Join(watched, "prog")
	if err := os.WriteFile(prog, sh, 0o755); err != nil {
		t.Fatal(err)
	}
	outFile := filepath.Join(watched, "out file.txt")
	script := `echo "quoted arg" > "$1"; read x; exit 0`
	cmd := exec.Command(prog, "-c", script, "prog", outFile)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	wantArgs := []any{prog, "-c", script, "prog", outFile}
	waitRecord(t, a, ecsOut, func(m map[string]any) bool {
		return leaf(m, "event.action") == "close_write" && leaf(m, "file.path") == outFile
	})
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}

	if err := os.Remove(g); err != nil {
		t.Fatal(err)
	}
	// The loss: 300 directories make 300 records, more than the 64 KiB
	// stdout pipe holds.
	fill := filepath.Join(watched, "fill")
	if err := os.Mkdir(fill, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i++ {
		if err := os.Mkdir(filepath.Join(fill, fmt.Sprintf("d%03d", i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	waitRecord(t, a, ecsOut, func(m map[string]any) bool {
		return leaf(m, "event.action") == "create" && leaf(m, "file.path") == filepath.Join(fill, "d299")
	})
	a.readStdout()
	a.stop()

	ecsLines, ocsfLines := readLines(t, ecsOut), readLines(t, ocsfOut)
	if len(ecsLines) != len(ocsfLines) {
		t.Fatalf("%d ECS records, %d OCSF records", len(ecsLines), len(ocsfLines))
	}
	seen := map[string]bool{}
	ids := map[string]bool{}
	var runID any
	var sample bytes.Buffer // the OCSF records to validate
	for i, line := range ecsLines {
		m, err := ecs.Decode(line)
		if err != nil {
			t.Fatalf("ECS line %d: %v", i+1, err)
		}
		for _, d := range ecs.Check(tab, m) {
			t.Errorf("ECS line %d: %s\n%s", i+1, d, line)
		}
		action, _ := leaf(m, "event.action").(string)
		seen[action] = true
		id, _ := leaf(m, "event.id").(string)
		if id == "" || ids[id] {
			t.Errorf("ECS line %d: event.id %q missing or repeated", i+1, id)
		}
		ids[id] = true
		if runID == nil {
			runID = leaf(m, "fanaudit.run_id")
		}
		if r := leaf(m, "fanaudit.run_id"); r != runID || r == nil || !strings.Contains(id, fmt.Sprintf(":%v:", r)) {
			t.Errorf("ECS line %d: run id %v, event.id %s", i+1, r, id)
		}
		if leaf(m, "host.os.type") != "linux" || leaf(m, "ecs.version") == nil || leaf(m, "event.kind") != "event" {
			t.Errorf("ECS line %d lacks host.os.type, ecs.version or event.kind: %s", i+1, line)
		}
		if action == "create" && leaf(m, "file.path") == outFile {
			args, _ := leaf(m, "process.args").([]any)
			if fmt.Sprint(args) != fmt.Sprint(wantArgs) {
				t.Errorf("process.args %q, want %q", args, wantArgs)
			}
		}
		var o struct {
			Metadata struct {
				UID string `json:"uid"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(ocsfLines[i], &o); err != nil || o.Metadata.UID != id {
			t.Errorf("OCSF line %d: metadata.uid %q, want the ECS event.id %q (%v)", i+1, o.Metadata.UID, id, err)
		}
		sample.Write(ocsfLines[i])
		sample.WriteByte('\n')
	}
	for _, want := range []string{"create", "modify", "close_write", "open", "access", "rename", "attrib", "delete", "exec", "events_lost"} {
		if !seen[want] {
			t.Errorf("no %s record in the mixed workload", want)
		}
	}
	testutil.ValidateOCSF(t, sample.Bytes())
}

// TestWatchText: watch --format text prints one aligned line per event,
// with the rename arrow and the user, and no colour on a pipe.
func TestWatchText(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "16m")
	a := start(t, true, "watch", "--format", "text", "--events", "create,rename,delete", watched)
	a.readStdout()
	a.waitLog("running", startTimeout)
	p, q := filepath.Join(watched, "a"), filepath.Join(watched, "b c")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p, q); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(q); err != nil {
		t.Fatal(err)
	}
	a.signal(syscall.SIGINT)
	if code := a.wait(); code != 0 {
		t.Fatalf("exit %d: %s", code, a.stderr())
	}
	out := string(a.output())
	pid := fmt.Sprint(os.Getpid())
	want := []*regexp.Regexp{
		regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3} create        ` + regexp.QuoteMeta(p) + `  \S+\[` + pid + `\] root$`),
		regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3} rename        ` + regexp.QuoteMeta(p+" -> "+q) + `  \S+\[` + pid + `\] root$`),
		regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3} delete        ` + regexp.QuoteMeta(q) + `  \S+\[` + pid + `\] root$`),
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(want) || strings.Contains(out, "\x1b") {
		t.Fatalf("watch --format text printed:\n%s", out)
	}
	for i, re := range want {
		if !re.MatchString(lines[i]) {
			t.Errorf("line %q does not match %s", lines[i], re)
		}
	}
}

// waitRecord waits until the ECS file holds a record that ok accepts.
func waitRecord(t *testing.T, a *agent, path string, ok func(map[string]any) bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		data, _ := os.ReadFile(path)
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && ok(m) {
				return
			}
		}
		a.waitAnyLogOrTick()
	}
	t.Fatalf("the awaited record never reached %s; stderr:\n%s", path, a.stderr())
}

func readLines(t *testing.T, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][]byte
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 {
			out = append(out, bytes.TrimSuffix(line, []byte("\n")))
		}
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// leaf returns the value at a dotted name of a decoded record.
func leaf(m map[string]any, name string) any {
	var v any = m
	for _, k := range strings.Split(name, ".") {
		o, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = o[k]
	}
	return v
}

// TestWatchOCSF: watch --format ocsf prints OCSF File System Activity
// records that the OCSF 1.8.0 schema accepts.
func TestWatchOCSF(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "16m")
	a := start(t, true, "watch", "--format", "ocsf", "--events", "create,rename", watched)
	a.readStdout()
	a.waitLog("running", startTimeout)
	p, q := filepath.Join(watched, "a.txt"), filepath.Join(watched, "b.txt")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p, q); err != nil {
		t.Fatal(err)
	}
	a.signal(syscall.SIGINT)
	if code := a.wait(); code != 0 {
		t.Fatalf("exit %d: %s", code, a.stderr())
	}
	out := a.output()
	type ocsfRec struct {
		ClassUID   int `json:"class_uid"`
		ActivityID int `json:"activity_id"`
		File       struct {
			Path string `json:"path"`
		} `json:"file"`
		FileResult struct {
			Path string `json:"path"`
		} `json:"file_result"`
	}
	var recs []ocsfRec
	for _, line := range bytes.Split(bytes.TrimSuffix(out, []byte("\n")), []byte("\n")) {
		var one ocsfRec
		if err := json.Unmarshal(line, &one); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		recs = append(recs, one)
	}
	if len(recs) != 2 || recs[0].ClassUID != 1001 || recs[0].ActivityID != 1 || recs[0].File.Path != p ||
		recs[1].ActivityID != 5 || recs[1].File.Path != p || recs[1].FileResult.Path != q {
		t.Fatalf("watch --format ocsf printed:\n%s", out)
	}
	testutil.ValidateOCSF(t, out)
}
