package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// TestMetricsAndHealth scrapes the running agent: the exposition passes
// promtool, the counters match the records, and /healthz says ok.
func TestMetricsAndHealth(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "16m")
	outDir := testutil.TmpfsMount(t, "16m")
	out := filepath.Join(outDir, "events.json")
	cfg := fileSinkConfig(watched, out, "") + "\n[metrics]\nenabled = true\nlisten = \"127.0.0.1:0\"\n"
	a := start(t, false, "run", "--config", runConfig(t, cfg))
	serving := a.waitLog("serving /metrics and /healthz", startTimeout)
	a.waitLog("running", startTimeout)
	base := fmt.Sprintf("http://%s", serving["listen"])

	for i := 0; i < 10; i++ {
		if err := os.WriteFile(filepath.Join(watched, fmt.Sprintf("m%d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// 10 creates and 10 close_writes: wait until the file sink has them.
	var body string
	for {
		body = httpGet(t, base+"/metrics")
		if strings.Contains(body, `fanaudit_sink_delivered_total{sink="out"} 20`+"\n") {
			break
		}
		a.waitAnyLogOrTick()
	}
	for _, want := range []string{
		"fanaudit_records_produced_total 20\n",
		"fanaudit_records_enriched_total 20\n",
		`fanaudit_sink_received_total{sink="out"} 20` + "\n",
		`fanaudit_sink_dropped_total{sink="out"} 0` + "\n",
		`fanaudit_sink_queue_capacity{sink="out"} 8192` + "\n",
		"fanaudit_reader_running 1\n",
		"fanaudit_healthy 1\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	promtoolCheck(t, body)

	var health struct{ Status, Reason string }
	if err := json.Unmarshal([]byte(httpGet(t, base+"/healthz")), &health); err != nil || health.Status != "ok" {
		t.Errorf("/healthz: %+v %v", health, err)
	}
	a.signal(syscall.SIGTERM)
	if code := a.wait(); code != 0 {
		t.Fatalf("exit %d: %s", code, a.stderr())
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func promtoolCheck(t *testing.T, body string) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool missing (Debian package prometheus); CI=true turns the skip into a failure")
		}
		t.Log("promtool not installed; exposition not linted")
		return
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestKernelOverflow: with the agent stopped (SIGSTOP), more events than
// the kernel queue holds overflow it; the agent reports that in-band and
// the sequence stays gapless.
func TestKernelOverflow(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "256m")
	outDir := testutil.TmpfsMount(t, "256m")
	out := filepath.Join(outDir, "events.json")
	cfg := strings.Replace(fileSinkConfig(watched, out, ""), `events = ["create", "close_write", "rename", "delete"]`, `events = ["create"]`, 1)
	a := start(t, false, "run", "--config", runConfig(t, cfg))
	a.waitLog("running", startTimeout)
	a.signal(syscall.SIGSTOP)
	const n = 20000 // the kernel's default queue holds 16384 events
	for i := 0; i < n; i++ {
		f, err := os.Create(filepath.Join(watched, fmt.Sprintf("o%05d", i)))
		if err != nil {
			a.signal(syscall.SIGCONT)
			t.Fatal(err)
		}
		f.Close()
	}
	a.signal(syscall.SIGCONT)
	a.stop()
	final := a.waitLog("final stats", 5*time.Second)
	data := readFile(t, out)
	recs := parseRecords(t, data)
	checkGapless(t, recs)
	overflows, creates := 0, 0
	for _, r := range recs {
		switch {
		case r.Event.Action == "events_lost" && r.Fanaudit.Lost.Reason == "kernel_queue_overflow":
			overflows++
			if len(r.Event.Category) != 0 {
				t.Errorf("events_lost with event.category %v", r.Event.Category)
			}
		case r.Event.Action == "create":
			creates++
		}
	}
	if overflows == 0 {
		t.Errorf("no kernel_queue_overflow record after %d events with the reader stopped (%d creates seen)", n, creates)
	}
	if creates >= n {
		t.Errorf("%d creates reported: the queue did not overflow", creates)
	}
	if final["kernel_overflows"] != float64(overflows) {
		t.Errorf("final stats count %v kernel overflows, the output %d", final["kernel_overflows"], overflows)
	}
	if s := finalSink(t, final, "out"); s["delivered"] != float64(len(recs)) {
		t.Errorf("final stats %v, %d lines", s, len(recs))
	}
}

// TestAlertRuleMetricsExist scrapes a running agent with a file and a
// Kafka sink (its broker unreachable: it spools) and checks that every
// metric the shipped alert rules use is exported, so that renaming one
// cannot silently stop an alert from firing.
func TestAlertRuleMetricsExist(t *testing.T) {
	testutil.RequireRoot(t)
	rules := readFile(t, "../deploy/prometheus/fanaudit.rules.yml")
	used := map[string]bool{}
	for _, line := range strings.Split(string(rules), "\n") {
		expr, ok := strings.CutPrefix(strings.TrimSpace(line), "expr:")
		if !ok {
			continue
		}
		for _, f := range strings.FieldsFunc(expr, func(r rune) bool {
			return r != '_' && (r < 'a' || r > 'z') && (r < '0' || r > '9')
		}) {
			if strings.HasPrefix(f, "fanaudit_") || strings.HasPrefix(f, "process_") {
				used[f] = true
			}
		}
	}
	if len(used) < 10 {
		t.Fatalf("found only %v in the rules", used)
	}
	watched := testutil.TmpfsMount(t, "16m")
	work := t.TempDir()
	out := filepath.Join(work, "events.json")
	cfg := fileSinkConfig(watched, out, "") + fmt.Sprintf(`
[[sinks]]
name = "k"
type = "kafka"
[sinks.kafka]
brokers = ["127.0.0.1:1"]
topic = "t"
create_topics = false
[sinks.kafka.spool]
dir = %q

[metrics]
enabled = true
listen = "127.0.0.1:0"
`, filepath.Join(work, "spool"))
	a := start(t, false, "run", "--config", runConfig(t, cfg))
	serving := a.waitLog("serving /metrics and /healthz", startTimeout)
	a.waitLog("running", startTimeout)
	body := httpGet(t, fmt.Sprintf("http://%s/metrics", serving["listen"]))
	for name := range used {
		if !strings.Contains(body, "\n"+name+" ") && !strings.Contains(body, "\n"+name+"{") {
			t.Errorf("the alert rules use %s, which the agent does not export", name)
		}
	}
	for _, name := range []string{"fanaudit_file_rotations_total", "fanaudit_file_write_errors_total", "fanaudit_file_sync_errors_total"} {
		if !strings.Contains(body, name+`{sink="out"} 0`) {
			t.Errorf("/metrics lacks %s for the file sink", name)
		}
	}
	a.stop()
}
