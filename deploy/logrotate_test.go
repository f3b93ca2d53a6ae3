package deploy_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

const snippetPath = "logrotate/fanaudit"

// TestLogrotateSnippet pins the settings the no-loss argument rests on.
func TestLogrotateSnippet(t *testing.T) {
	s := readFile(t, snippetPath)
	for _, want := range []string{
		"/var/log/fanaudit/events.json {", // the exact file, never the sink's own backups
		"\tcreate 0640 root root\n",
		"\tdelaycompress\n",
		"\tpostrotate\n",
		"--signal=HUP",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("%s lacks %q", snippetPath, want)
		}
	}
	var directives []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			directives = append(directives, l)
		}
	}
	if strings.Contains(strings.Join(directives, "\n"), "copytruncate") {
		t.Errorf("%s uses copytruncate, which loses lines", snippetPath)
	}
	// The snippet must rotate the file the shipped config writes, in a
	// directory the unit lets the agent write.
	example := readFile(t, filepath.Join(repoRoot(t), "config.toml.example"))
	m := regexp.MustCompile(`(?m)^\[sinks\.file\][^\[]*?^path = "([^"]+)"`).FindStringSubmatch(example)
	if m == nil {
		t.Fatal("config.toml.example has no [sinks.file] path")
	}
	if !strings.Contains(s, m[1]+" {") {
		t.Errorf("%s does not rotate %s, the file sink path of config.toml.example", snippetPath, m[1])
	}
	rw := unitValues(readFile(t, unitPath), "ReadWritePaths")
	if len(rw) != 1 || !slices.Contains(strings.Fields(rw[0]), filepath.Dir(m[1])) {
		t.Errorf("the unit's ReadWritePaths %q lacks %s", rw, filepath.Dir(m[1]))
	}
}

// record is what the test reads back from the sink: only the fields the
// no-loss check needs.
type record struct {
	Event struct {
		Action   string `json:"action"`
		Sequence uint64 `json:"sequence"`
	} `json:"event"`
	File struct {
		Path string `json:"path"`
	} `json:"file"`
	Fanaudit struct {
		Lost struct {
			Count  uint64 `json:"count"`
			Reason string `json:"reason"`
			Sink   string `json:"sink"`
		} `json:"lost"`
	} `json:"fanaudit"`
}

// TestLogrotateRunningAgent runs the shipped snippet with the real
// logrotate against a running agent, twice, while the agent is writing, and
// checks that the rotated and current files together hold every record
// exactly once, as whole JSON lines, in sequence order.
//
// The agent runs the way the systemd unit runs it: in its own mount
// namespace where / and the watched tree are read-only, with only the
// unit's capabilities and no_new_privs. So this also checks that those
// capabilities suffice and that marks placed through a read-only mount in
// a private namespace see the events of processes outside it.
func TestLogrotateRunningAgent(t *testing.T) {
	testutil.RequireRoot(t)
	logrotate := requireTool(t, "logrotate", "logrotate")
	setpriv := requireTool(t, "setpriv", "util-linux")
	unshare := requireTool(t, "unshare", "util-linux")
	requireTool(t, "gzip", "gzip")
	bin := agentBinary(t)

	watched := testutil.TmpfsMount(t, "64m")
	outMnt := testutil.TmpfsMount(t, "256m")
	logDir := filepath.Join(outMnt, "log")
	logFile := filepath.Join(logDir, "events.json")
	work := t.TempDir()
	port := freePort(t)

	cfg := fmt.Sprintf(`paths = [%q]
events = ["create", "close_write"]
stats_interval = "0s"
shutdown_timeout = "30s"
# Off by default; on here to prove the unit's capabilities allow it.
priority_boost = 4

[metrics]
enabled = true
listen = "127.0.0.1:%d"

[logging]
level = "info"
format = "json"

[[sinks]]
name = "file"
type = "file"
when_full = "block"
queue_size = 65536

[sinks.file]
path = %q
file_mode = "0640"
dir_mode = "0750"
# logrotate rotates, so the sink's own rotation is off.
max_size_mb = 0
max_backups = 0
compress = false
fsync = "never"
`, watched, port, logFile)
	cfgPath := filepath.Join(work, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o640); err != nil {
		t.Fatal(err)
	}

	caps := unitCapabilities(t)
	bounding := "-all"
	for _, c := range caps {
		bounding += ",+" + c
	}
	stderr := &lockedBuffer{}
	// Like ProtectSystem=strict: inside the agent's own mount namespace the
	// root and the watched tree are read-only, the output is writable. The
	// remounts change only the namespace's copies of the mounts.
	sandbox := `set -e; mount -o remount,bind,ro /; mount -o remount,bind,ro "$1"; shift; exec "$@"`
	cmd := exec.Command(unshare, "--mount", "--propagation", "slave",
		"sh", "-c", sandbox, "sandbox", watched,
		setpriv, "--bounding-set", bounding, "--inh-caps", "-all", "--no-new-privs", "--",
		bin, "run", "--config", cfgPath)
	cmd.Stderr = stderr
	cmd.Stdout = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// exited is closed when the agent is gone; waitErr is then its status.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("agent output:\n%s", stderr.String())
		}
	}()
	// unshare, sh and setpriv exec, so the pid is the agent's own.
	pid := cmd.Process.Pid

	cw := &canaryWriter{t: t, dir: watched, file: logFile, exited: exited}
	cw.waitVisible("ready", true) // the capture is marked and the sink writes
	checkCapabilities(t, pid, caps)
	checkBoosted(t, pid)
	checkReadOnly(t, pid, "/", watched)

	// logrotate refuses a config that others can write; 0644 root is fine.
	snippet := readFile(t, snippetPath)
	testSnippet := strings.ReplaceAll(snippet, "/var/log/fanaudit/events.json", logFile)
	var lines []string
	replaced := false
	for _, l := range strings.Split(testSnippet, "\n") {
		if strings.Contains(l, "--signal=HUP") {
			l = fmt.Sprintf("\t\tkill -HUP %d", pid)
			replaced = true
		}
		lines = append(lines, l)
	}
	if !replaced {
		t.Fatal("snippet has no postrotate line sending SIGHUP")
	}
	confPath := filepath.Join(work, "logrotate.conf")
	if err := os.WriteFile(confPath, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	rotate := func() {
		t.Helper()
		out, err := exec.Command(logrotate, "-f", "-s", filepath.Join(work, "logrotate.state"), confPath).CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Fatalf("logrotate -f: %v\n%s", err, out)
		}
	}

	var expected []string
	workload := func(prefix string, n int) {
		for i := range n {
			p := filepath.Join(watched, fmt.Sprintf("%s-%04d", prefix, i))
			if err := os.WriteFile(p, []byte("x\n"), 0o644); err != nil {
				t.Error(err)
				return
			}
		}
	}
	names := func(prefix string, n int) {
		for i := range n {
			expected = append(expected, filepath.Join(watched, fmt.Sprintf("%s-%04d", prefix, i)))
		}
	}
	const n = 1500

	workload("before", n)
	names("before", n)
	// Rotate while the agent is busy: records written between logrotate's
	// rename and the agent's reopen must land in the renamed file.
	for r, prefix := range []string{"during1", "during2"} {
		var wg sync.WaitGroup
		wg.Go(func() { workload(prefix, n) })
		rotate()
		wg.Wait()
		names(prefix, n)
		// A record in the current file proves the agent has reopened, so the
		// next rotation may compress the file it wrote before.
		cw.waitVisible(fmt.Sprintf("reopened%d", r+1), false)
	}
	workload("after", n)
	names("after", n)
	expected = append(expected, cw.paths...)

	// The endpoints the liveness probe and docs/operations.md rely on.
	t.Run("healthz and metrics", func(t *testing.T) {
		get := func(path string) string {
			res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != http.StatusOK {
				t.Errorf("GET %s: %s\n%s", path, res.Status, body)
			}
			return string(body)
		}
		var health struct{ Status string }
		if body := get("/healthz"); json.Unmarshal([]byte(body), &health) != nil || health.Status != "ok" {
			t.Errorf("/healthz body %q, want status ok", body)
		}
		metrics := get("/metrics")
		documented, families := documentedMetrics(t)
		for _, name := range documented {
			// No Kafka sink here: the kafka family is not served.
			if strings.HasPrefix(name, "fanaudit_kafka_") {
				continue
			}
			if !regexp.MustCompile(`(?m)^` + name + `[{ ]`).MatchString(metrics) {
				t.Errorf("docs/operations.md documents %s, which /metrics does not serve", name)
			}
		}
	served:
		for _, m := range regexp.MustCompile(`(?m)^# TYPE (fanaudit_\S+)`).FindAllStringSubmatch(metrics, -1) {
			if slices.Contains(documented, m[1]) {
				continue
			}
			for _, f := range families {
				if strings.HasPrefix(m[1], f) {
					continue served
				}
			}
			t.Errorf("/metrics serves %s, which docs/operations.md does not document", m[1])
		}
	})

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("agent exit after SIGTERM: %v (want 0)", waitErr)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("agent did not exit within 60s of SIGTERM")
	}

	ents, err := os.ReadDir(logDir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if want := []string{"events.json", "events.json.1", "events.json.2.gz"}; !slices.Equal(got, want) {
		t.Fatalf("log dir holds %q, want %q", got, want)
	}
	// Oldest first, so the sequence must rise across the files.
	var all []record
	for _, name := range []string{"events.json.2.gz", "events.json.1", "events.json"} {
		recs := readRecords(t, filepath.Join(logDir, name))
		if len(recs) == 0 {
			t.Fatalf("%s is empty", name)
		}
		// Whether a rotation fell inside a burst of writes: worth seeing,
		// not deterministic enough to assert.
		byPhase := map[string]int{}
		for _, r := range recs {
			phase, _, _ := strings.Cut(filepath.Base(r.File.Path), "-")
			byPhase[phase]++
		}
		t.Logf("%s: sequence %d..%d, records by workload phase %v", name, recs[0].Event.Sequence, recs[len(recs)-1].Event.Sequence, byPhase)
		all = append(all, recs...)
	}
	checkRecords(t, all, expected, cw.early)
}

func checkRecords(t *testing.T, all []record, expected, optional []string) {
	t.Helper()
	var dropped uint64
	seen := map[string]int{}
	for i, r := range all {
		if i > 0 && r.Event.Sequence <= all[i-1].Event.Sequence {
			t.Fatalf("event.sequence %d follows %d: records duplicated or out of order across rotation", r.Event.Sequence, all[i-1].Event.Sequence)
		}
		if r.Event.Action == "events_lost" {
			// A sink-side drop leaves a gap in event.sequence that its loss
			// record announces; a kernel overflow loses expected records.
			t.Logf("events_lost: count %d reason %q sink %q", r.Fanaudit.Lost.Count, r.Fanaudit.Lost.Reason, r.Fanaudit.Lost.Sink)
			if r.Fanaudit.Lost.Sink == "file" {
				dropped += r.Fanaudit.Lost.Count
			}
			continue
		}
		seen[r.Event.Action+" "+r.File.Path]++
	}
	if len(all) == 0 {
		t.Fatal("no records")
	}
	first, last := all[0].Event.Sequence, all[len(all)-1].Event.Sequence
	if first != 1 {
		t.Errorf("first event.sequence is %d, want 1", first)
	}
	if gaps := last - first + 1 - uint64(len(all)); gaps != dropped {
		t.Errorf("event.sequence has %d gaps, but events_lost records announce %d dropped by this sink", gaps, dropped)
	}
	for _, p := range expected {
		for _, action := range []string{"create", "close_write"} {
			if c := seen[action+" "+p]; c != 1 {
				t.Errorf("%s %s: %d records, want exactly 1", action, p, c)
			}
			delete(seen, action+" "+p)
		}
	}
	for _, p := range optional {
		for _, action := range []string{"create", "close_write"} {
			if c := seen[action+" "+p]; c > 1 {
				t.Errorf("%s %s: %d records, want at most 1", action, p, c)
			}
			delete(seen, action+" "+p)
		}
	}
	for k, c := range seen {
		t.Errorf("unexpected record %s (%d times)", k, c)
	}
	t.Logf("%d records, sequence %d..%d, %d expected files", len(all), first, last, len(expected))
}

// readRecords reads one output file, gunzipping .gz, and fails on a
// partial last line or on any line that is not one JSON object.
func readRecords(t *testing.T, name string) []record {
	t.Helper()
	raw, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(name, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if raw, err = io.ReadAll(zr); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if len(raw) > 0 && raw[len(raw)-1] != '\n' {
		t.Fatalf("%s ends in a partial line: %q", name, raw[max(0, len(raw)-200):])
	}
	var recs []record
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for ln := 1; sc.Scan(); ln++ {
		var r record
		d := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		if err := d.Decode(&r); err != nil {
			t.Fatalf("%s:%d: not JSON: %v: %q", name, ln, err, sc.Text())
		}
		if d.More() {
			t.Fatalf("%s:%d: more than one JSON value on a line: %q", name, ln, sc.Text())
		}
		if r.Event.Sequence == 0 || r.Event.Action == "" {
			t.Fatalf("%s:%d: no event.sequence or event.action: %q", name, ln, sc.Text())
		}
		recs = append(recs, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return recs
}

// canaryWriter creates files in the watched tree until the record of one
// shows up in the sink's current file. It is how the test knows, without
// sleeping, that the agent is capturing or that it has reopened its file.
type canaryWriter struct {
	t      *testing.T
	dir    string
	prefix string // what the agent's mount namespace puts before dir
	file   string
	exited <-chan struct{}
	paths  []string // must each have their records
	early  []string // written before the capture was known to run: 0 or 1 records
}

// waitVisible writes canaries until one is in the current file. With
// startup set, the canaries before that one may predate the marks.
func (c *canaryWriter) waitVisible(label string, startup bool) {
	c.t.Helper()
	first := len(c.paths)
	defer func() {
		if startup {
			last := len(c.paths) - 1
			c.early = append(c.early, c.paths[first:last]...)
			c.paths = append(c.paths[:first], c.paths[last])
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		p := filepath.Join(c.dir, fmt.Sprintf("canary-%s-%d", label, i))
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			c.t.Fatal(err)
		}
		c.paths = append(c.paths, p)
		// The path is the tmpfs root plus a plain name, so its JSON form is
		// the path itself; quote it to match the whole value.
		needle := []byte(strconv.Quote(c.prefix + p))
		for range 10 {
			select {
			case <-c.exited:
				c.t.Fatalf("agent exited while waiting for %s", label)
			default:
			}
			if b, err := os.ReadFile(c.file); err == nil && bytes.Contains(b, needle) {
				return
			} else if err != nil && !errors.Is(err, os.ErrNotExist) {
				c.t.Fatal(err)
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("no canary record in %s within 30s (%s)", c.file, label)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// checkBoosted asserts that the unit's capabilities let the config's
// priority_boost (4) lower the agent's nice value from the test's.
func checkBoosted(t *testing.T, pid int) {
	t.Helper()
	nice := func(pid int) int {
		stat := readFile(t, fmt.Sprintf("/proc/%d/stat", pid))
		f := strings.Fields(stat[strings.LastIndexByte(stat, ')')+1:])
		n, err := strconv.Atoi(f[19-3]) // field 19; the fields after ')' start at 3
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if got, want := nice(pid), max(nice(os.Getpid())-4, -20); got != want {
		t.Fatalf("agent nice %d, want %d (priority_boost 4)", got, want)
	}
}

// checkCapabilities asserts that the agent holds exactly the unit's
// capabilities, so that the test runs it as systemd would.
func checkCapabilities(t *testing.T, pid int, caps []string) {
	t.Helper()
	bits := map[string]uint{"sys_admin": 21, "dac_read_search": 2, "sys_ptrace": 19, "sys_nice": 23}
	var want uint64
	for _, c := range caps {
		b, ok := bits[c]
		if !ok {
			t.Fatalf("unit capability %q unknown to the test", c)
		}
		want |= 1 << b
	}
	status := readFile(t, fmt.Sprintf("/proc/%d/status", pid))
	for _, key := range []string{"CapBnd:", "CapEff:"} {
		for _, l := range strings.Split(status, "\n") {
			if v, ok := strings.CutPrefix(l, key); ok {
				got, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				if err != nil {
					t.Fatal(err)
				}
				if got != want {
					t.Fatalf("agent %s %#x, want %#x (%v)", key, got, want, caps)
				}
			}
		}
	}
}

// documentedMetrics returns the metric names docs/operations.md documents,
// and the families it documents as a prefix (`fanaudit_capture_*`), which
// cover counters a stage adds later.
func documentedMetrics(t *testing.T) (names, families []string) {
	t.Helper()
	doc := readFile(t, filepath.Join(repoRoot(t), "docs", "operations.md"))
	re := regexp.MustCompile(`\bfanaudit_[a-z0-9_]*[a-z0-9]`)
	for _, loc := range re.FindAllStringIndex(doc, -1) {
		name := doc[loc[0]:loc[1]]
		if strings.HasPrefix(doc[loc[1]:], "_*") {
			families = append(families, name+"_")
			continue
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		t.Fatal("docs/operations.md names no fanaudit_ metric")
	}
	return names, families
}

// checkReadOnly asserts that the agent sees the mount points read-only, so
// that the test really ran it in the sandbox.
func checkReadOnly(t *testing.T, pid int, points ...string) {
	t.Helper()
	info := readFile(t, fmt.Sprintf("/proc/%d/mountinfo", pid))
	for _, p := range points {
		// mountinfo: id parent major:minor root mountpoint options ...; the
		// last mount at a point is the one on top, the one paths resolve in.
		opts := ""
		for _, l := range strings.Split(info, "\n") {
			if f := strings.Fields(l); len(f) > 5 && f[4] == p {
				opts = f[5]
			}
		}
		if !slices.Contains(strings.Split(opts, ","), "ro") {
			t.Fatalf("agent sees %s with options %q, want ro", p, opts)
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// lockedBuffer collects the agent's output, written by exec's copier
// goroutine and read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
