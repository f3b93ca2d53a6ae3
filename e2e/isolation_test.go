package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// twoSinkConfig is a stdout sink beside a file sink, with /metrics on.
func twoSinkConfig(watched, out string) string {
	return fmt.Sprintf(`paths = [%q]
events = ["create"]
shutdown_timeout = "20s"
stats_interval = "0s"
[logging]
format = "json"
[metrics]
enabled = true
listen = "127.0.0.1:0"

[[sinks]]
name = "stdout"
type = "stdout"
when_full = "block"

[[sinks]]
name = "out"
type = "file"
[sinks.file]
path = %q
fsync = "never"
max_size_mb = 0
`, watched, out)
}

// createFiles makes n files in dir.
func createFiles(t *testing.T, dir string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("f%05d", i)))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}

// checkIsolated checks the file sink of a run whose stdout failed: it has
// every create, gapless, and announces stdout's losses exactly (but for
// the last round of loss records, which stdout fails too and nothing can
// announce after the final round).
func checkIsolated(t *testing.T, a *agent, out string, n int) {
	t.Helper()
	final := a.waitLog("final stats", time.Second)
	data := readFile(t, out)
	recs := parseRecords(t, data)
	checkGapless(t, recs)
	creates := 0
	var announced uint64
	for _, r := range recs {
		switch {
		case r.Event.Action == "create":
			creates++
		case r.Event.Action == "events_lost" && r.Fanaudit.Lost.Sink == "stdout":
			if r.Fanaudit.Lost.Reason != "sink_error" {
				t.Errorf("stdout loss with reason %q", r.Fanaudit.Lost.Reason)
			}
			announced += r.Fanaudit.Lost.Count
		case r.Event.Action == "events_lost":
			t.Errorf("unexpected loss record: %+v", r.Fanaudit.Lost)
		}
	}
	if creates != n {
		t.Errorf("file sink has %d creates, want %d", creates, n)
	}
	s := finalSink(t, final, "stdout")
	dropped := uint64(s["dropped"])
	if announced == 0 || announced > dropped || dropped-announced > 1 {
		t.Errorf("stdout dropped %d, the file announces %d", dropped, announced)
	}
	if o := finalSink(t, final, "out"); o["dropped"] != 0 || o["delivered"] != float64(len(recs)) {
		t.Errorf("file sink stats %v, %d records", o, len(recs))
	}
}

// healthz returns /healthz's status and body.
func healthz(t *testing.T, a *agent) (int, string) {
	t.Helper()
	serving := a.waitLog("serving /metrics and /healthz", startTimeout)
	resp, err := http.Get(fmt.Sprintf("http://%s/healthz", serving["listen"]))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestClosedStdoutPipe is `fanaudit run | head -c 2000` with a file sink
// beside stdout: no SIGPIPE death, the file sink gets every record, the
// stdout losses are announced in it, /healthz names stdout, and SIGTERM
// still exits 0.
func TestClosedStdoutPipe(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "64m")
	out := filepath.Join(testutil.TmpfsMount(t, "64m"), "events.json")
	a := start(t, true, "run", "--config", runConfig(t, twoSinkConfig(watched, out)))
	a.waitLog("running", startTimeout)
	const n = 2000
	createFiles(t, watched, n)
	head := make([]byte, 2000)
	if _, err := io.ReadFull(a.stdout, head); err != nil {
		t.Fatal(err)
	}
	a.stdout.Close()
	a.waitLog("write failed; records are dropped (and announced) until writing works again", 30*time.Second)
	code, body := healthz(t, a)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "sink stdout") {
		t.Errorf("/healthz %d %s, want 503 naming sink stdout", code, body)
	}
	a.stop()
	checkIsolated(t, a, out, n)
}

// TestStdoutENOSPC: stdout is a file on a full tmpfs. The file sink gets
// every record, the stdout losses are announced in it, stdout's file holds
// whole lines only, and SIGTERM exits 0.
func TestStdoutENOSPC(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "64m")
	out := filepath.Join(testutil.TmpfsMount(t, "64m"), "events.json")
	stdoutPath := filepath.Join(testutil.TmpfsMount(t, "64k"), "stdout.json")
	so, err := os.Create(stdoutPath)
	if err != nil {
		t.Fatal(err)
	}
	defer so.Close()
	a := startTo(t, false, so, "run", "--config", runConfig(t, twoSinkConfig(watched, out)))
	a.waitLog("running", startTimeout)
	const n = 2000 // ~1.5 MB of records: far more than 64k
	createFiles(t, watched, n)
	a.waitLog("write failed; records are dropped (and announced) until writing works again", 30*time.Second)
	a.stop()
	checkIsolated(t, a, out, n)
	data := readFile(t, stdoutPath)
	if len(data) == 0 {
		t.Fatal("nothing reached stdout before the disk filled")
	}
	recs := parseRecords(t, data) // fails on a torn line
	for i := 1; i < len(recs); i++ {
		if recs[i].Event.Sequence <= recs[i-1].Event.Sequence {
			t.Fatalf("stdout: sequence %d after %d", recs[i].Event.Sequence, recs[i-1].Event.Sequence)
		}
	}
}

// TestSIGHUPStorm: SIGHUPs from the first moments of start-up, as fast as
// they can be sent, do not kill the agent; it comes up and records.
//
// The storm starts when the process shows SIGHUP ignored in
// /proc/PID/status: the agent's first package initializer (earlysig) has
// run, about 1 ms after exec (GODEBUG=inittrace=1). Before that the Go
// runtime is starting and no program's code has run; the kernel's default
// action applies to any process then.
func TestSIGHUPStorm(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "16m")
	out := filepath.Join(testutil.TmpfsMount(t, "16m"), "events.json")
	a := start(t, false, "run", "--config", runConfig(t, fileSinkConfig(watched, out, "")))
	began := time.Now()
	pid := a.cmd.Process.Pid
	for !sighupIgnored(pid) {
		if time.Since(began) > startTimeout {
			t.Fatal("SIGHUP never ignored")
		}
	}
	t.Logf("storm starts %s after exec", time.Since(began))
	stop := make(chan struct{})
	stormed := make(chan int)
	go func() {
		sent := 0
		for {
			select {
			case <-stop:
				stormed <- sent
				return
			default:
			}
			if syscall.Kill(pid, syscall.SIGHUP) != nil {
				stormed <- sent
				return
			}
			sent++
		}
	}()
	a.waitLog("running", startTimeout)
	f := filepath.Join(watched, "after-storm")
	if err := os.Mkdir(f, 0o755); err != nil {
		t.Fatal(err)
	}
	close(stop)
	sent := <-stormed
	a.stop()
	data := readFile(t, out)
	if !strings.Contains(string(data), `"path":"`+f+`"`) {
		t.Errorf("the create of %s is missing after %d SIGHUPs:\n%s", f, sent, data)
	}
	t.Logf("%d SIGHUPs during start-up", sent)
}

// sighupIgnored reports whether /proc/PID/status shows SIGHUP in SigIgn.
func sighupIgnored(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "SigIgn:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && m&(1<<(uint(syscall.SIGHUP)-1)) != 0
		}
	}
	return false
}

// TestSIGTERMDuringStartup: SIGTERM in the middle of the start-up (the run
// marker is written after the capture and the sinks are set up, before
// the pipeline runs) is a clean stop: exit 0, and no marker is left.
func TestSIGTERMDuringStartup(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "16m")
	out := filepath.Join(testutil.TmpfsMount(t, "16m"), "events.json")
	state := filepath.Join(t.TempDir(), "state")
	marker := filepath.Join(state, "run.json")
	a := start(t, false, "run", "--config", writeConfig(t, withStateDir(fileSinkConfig(watched, out, ""), state)))
	deadline := time.Now().Add(startTimeout)
	for {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no run marker")
		}
		runtime.Gosched()
	}
	a.signal(syscall.SIGTERM)
	if code := a.wait(); code != 0 {
		t.Fatalf("exit %d after SIGTERM during start-up; stderr:\n%s", code, a.stderr())
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Errorf("a clean stop left the marker: %v", err)
	}
}

// restartRec is what TestRestartAfterSIGKILL reads of a record.
type restartRec struct {
	Event struct {
		Action   string `json:"action"`
		Sequence uint64 `json:"sequence"`
	} `json:"event"`
	Fanaudit struct {
		RunID string `json:"run_id"`
		Lost  struct {
			Reason        string  `json:"reason"`
			PreviousRunID string  `json:"previous_run_id"`
			LastSequence  *uint64 `json:"last_sequence"`
		} `json:"lost"`
	} `json:"fanaudit"`
}

func readRestartRecs(t *testing.T, path string) []restartRec {
	t.Helper()
	data := readFile(t, path)
	var out []restartRec
	for _, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		var r restartRec
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("bad line %q: %v", l, err)
		}
		out = append(out, r)
	}
	return out
}

// TestRestartAfterSIGKILL: a run killed with SIGKILL leaves its marker; the
// next run opens with one events_lost record, reason agent_restart, naming
// the killed run's id and its last settled sequence. A clean stop leaves
// no marker, so the run after it opens with a file event.
func TestRestartAfterSIGKILL(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "16m")
	out := filepath.Join(testutil.TmpfsMount(t, "16m"), "events.json")
	state := filepath.Join(t.TempDir(), "state")
	cfg := writeConfig(t, withStateDir(fileSinkConfig(watched, out, ""), state))

	a := start(t, false, "run", "--config", cfg)
	a.waitLog("running", startTimeout)
	for i := 0; i < 10; i++ {
		if err := os.Mkdir(filepath.Join(watched, fmt.Sprintf("d%d", i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The marker's last_sequence is written every few seconds.
	marker := filepath.Join(state, "run.json")
	deadline := time.Now().Add(startTimeout)
	for {
		var m struct {
			LastSequence uint64 `json:"last_sequence"`
		}
		b, _ := os.ReadFile(marker)
		if json.Unmarshal(b, &m) == nil && m.LastSequence >= 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the marker never reached sequence 10: %s", b)
		}
		a.waitAnyLogOrTick()
	}
	a.signal(syscall.SIGKILL)
	a.wait()
	first := readRestartRecs(t, out)
	if len(first) != 10 || first[0].Fanaudit.RunID == "" {
		t.Fatalf("first run wrote %d records (run id %q), want 10", len(first), first[0].Fanaudit.RunID)
	}

	b := start(t, false, "run", "--config", cfg)
	b.waitLog("running", startTimeout)
	if err := os.Mkdir(filepath.Join(watched, "second"), 0o755); err != nil {
		t.Fatal(err)
	}
	b.stop()
	second := readRestartRecs(t, out)[len(first):]
	if len(second) != 2 {
		t.Fatalf("second run wrote %d records, want the restart record and one create: %+v", len(second), second)
	}
	r := second[0]
	if r.Event.Action != "events_lost" || r.Event.Sequence != 1 || r.Fanaudit.Lost.Reason != "agent_restart" ||
		r.Fanaudit.Lost.PreviousRunID != first[0].Fanaudit.RunID || r.Fanaudit.RunID == first[0].Fanaudit.RunID {
		t.Fatalf("second run opens with %+v, want agent_restart naming run %s", r, first[0].Fanaudit.RunID)
	}
	if ls := r.Fanaudit.Lost.LastSequence; ls == nil || *ls != 10 {
		t.Errorf("last_sequence %v, want 10", ls)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Errorf("a clean stop left the marker: %v", err)
	}

	c := start(t, false, "run", "--config", cfg)
	c.waitLog("running", startTimeout)
	c.stop()
	if third := readRestartRecs(t, out)[len(first)+len(second):]; len(third) != 0 {
		t.Errorf("after a clean stop the next run wrote %+v", third)
	}
}

// TestWatchClosedPipe is `fanaudit watch DIR | head -c 100`: watch writes
// to stdout only, so when its reader goes away it stops, cleanly (exit 0),
// like any filter in a pipeline, instead of being killed by SIGPIPE.
func TestWatchClosedPipe(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "16m")
	a := start(t, true, "watch", "--events", "create", watched)
	a.waitLog("running", startTimeout)
	stop := make(chan struct{})
	made := make(chan struct{})
	go func() {
		defer close(made)
		for i := 0; i < 100000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := os.Mkdir(filepath.Join(watched, fmt.Sprintf("d%d", i)), 0o755); err != nil {
				return
			}
		}
	}()
	head := make([]byte, 100)
	if _, err := io.ReadFull(a.stdout, head); err != nil {
		t.Fatal(err)
	}
	a.stdout.Close()
	code := a.wait()
	close(stop)
	<-made
	if code != 0 {
		t.Fatalf("exit %d after its reader went away; stderr:\n%s", code, a.stderr())
	}
}
