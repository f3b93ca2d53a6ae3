package kafka

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// TestAgentRoundTrip runs `fanaudit run` with a Kafka sink against the
// real broker, creates known files, stops the agent with SIGTERM and checks
// with kcat that every created file was reported and that the event ids
// cover event.sequence 1..max without a gap.
func TestAgentRoundTrip(t *testing.T) {
	brokers, watched, work, bin, topic := agentSetup(t)
	createTopic(t, brokers, topic, 1)
	ag := startAgent(t, bin, work, fmt.Sprintf(`paths = [%q]

[[sinks]]
name = "kafka"
type = "kafka"

[sinks.kafka]
brokers = [%q]
topic = %q
dead_letter_file = %q

[sinks.kafka.spool]
dir = %q
`, watched, brokers, topic, filepath.Join(work, "dead.jsonl"), filepath.Join(work, "spool")))
	stderr, stop := &ag.log, ag.stop

	const files = 300
	for i := range files {
		if err := os.WriteFile(filepath.Join(watched, fmt.Sprintf("f-%03d.txt", i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The contract: SIGTERM drains and flushes, then exits 0.
	if err := stop(); err != nil {
		t.Fatalf("agent exit after SIGTERM: %v (%s)", err, lastLine(stderr.String()))
	}

	// Values carry event.sequence and file.path; headers the event id.
	var out []byte
	var created map[string]bool
	var seqs map[uint64]int
	var prefix string
	deadline := time.Now().Add(60 * time.Second)
	for {
		o, err := exec.Command("kcat", "-C", "-b", brokers, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%h\t%s\n").Output()
		if err != nil {
			t.Fatalf("kcat: %v", err)
		}
		out = o
		created, seqs = map[string]bool{}, map[uint64]int{}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			hdr, val, ok := strings.Cut(line, "\t")
			if !ok {
				continue
			}
			id, _ := strings.CutPrefix(hdr, HeaderEventID+"=")
			var rec struct {
				Event struct {
					Action   string `json:"action"`
					Sequence uint64 `json:"sequence"`
				} `json:"event"`
				File struct {
					Path string `json:"path"`
				} `json:"file"`
			}
			if err := json.Unmarshal([]byte(val), &rec); err != nil {
				t.Fatalf("value is not JSON: %q: %v", val, err)
			}
			i := strings.LastIndexByte(id, ':')
			if i < 0 || id[i+1:] != strconv.FormatUint(rec.Event.Sequence, 10) {
				t.Fatalf("event id %q does not end in event.sequence %d", id, rec.Event.Sequence)
			}
			if prefix == "" {
				prefix = id[:i]
			} else if prefix != id[:i] {
				t.Fatalf("event ids from two runs: %q and %q", prefix, id[:i])
			}
			seqs[rec.Event.Sequence]++
			if rec.Event.Action == "create" {
				created[filepath.Base(rec.File.Path)] = true
			}
		}
		if len(created) >= files || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(created) != files {
		t.Fatalf("%d of %d creates arrived\nagent log:\n%s", len(created), files, tail(stderr.String(), 40))
	}
	var max uint64
	dups := 0
	for s, n := range seqs {
		max = maxU(max, s)
		dups += n - 1
	}
	missing := 0
	for s := uint64(1); s <= max; s++ {
		if seqs[s] == 0 {
			missing++
		}
	}
	t.Logf("agent round trip: %d records (sequence 1..%d), %d duplicates, %d missing, %d creates", len(seqs), max, dups, missing, len(created))
	if missing != 0 {
		t.Fatalf("%d sequence numbers missing", missing)
	}
	if bytes.Contains(out, []byte(`"events_lost"`)) {
		t.Logf("the run reported events_lost records")
	}
}

// agent is a running `fanaudit run`.
type agent struct {
	log  syncBuffer
	stop func() error
}

// startAgent writes cfg and runs the agent on it until stop (SIGTERM, and
// the exit status) or the test's end.
func startAgent(t *testing.T, bin, work, cfg string) *agent {
	t.Helper()
	cfgPath := filepath.Join(work, "config.toml")
	// The run marker goes to the test's own state dir, never the machine's.
	cfg = fmt.Sprintf("state_dir = %q\n", filepath.Join(work, "state")) + cfg
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ag := &agent{}
	cmd := exec.Command(bin, "run", "--config", cfgPath)
	cmd.Stderr = &ag.log
	cmd.Stdout = &ag.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var once sync.Once
	var stopErr error
	ag.stop = func() error {
		once.Do(func() {
			if serr := cmd.Process.Signal(syscall.SIGTERM); serr != nil {
				stopErr = serr
				return
			}
			select {
			case stopErr = <-exited:
			case <-time.After(60 * time.Second):
				_ = cmd.Process.Kill()
				stopErr = fmt.Errorf("agent did not exit within 60 s of SIGTERM")
			}
		})
		return stopErr
	}
	t.Cleanup(func() { _ = ag.stop() })
	waitFor(t, 30*time.Second, "agent running", func() bool {
		select {
		case err := <-exited:
			t.Fatalf("agent exited early: %v\n%s", err, ag.log.String())
		default:
		}
		return strings.Contains(ag.log.String(), `"running"`)
	})
	return ag
}

// agentSetup skips or fails (as testutil does) a test that builds and
// runs the agent with a Kafka sink, and returns what each such test
// needs: the broker, a watched tmpfs, a work directory with the agent
// built in it, and a topic name of its own (not created).
func agentSetup(t *testing.T) (brokers, watched, work, bin, topic string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the agent")
	}
	brokers = testutil.KafkaBrokers(t)
	testutil.RequireRoot(t)
	watched = testutil.TmpfsMount(t, "32m")
	work = t.TempDir()
	bin = buildAgent(t, work)
	return brokers, watched, work, bin, uniqueTopic(t)
}

func buildAgent(t *testing.T, work string) string {
	t.Helper()
	bin := filepath.Join(work, "fanaudit")
	build := exec.Command("go", "build", "-o", bin, "./cmd/fanaudit")
	build.Dir = repoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/fanaudit: %v\n%s", err, out)
	}
	return bin
}

func maxU(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
