// Package e2e runs the real fanaudit binary: it builds it once in
// TestMain, then drives it through its command line, config files,
// signals and private tmpfs mounts, and checks what comes out.
package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binary is set once by TestMain before any test runs.
var binary string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "fanaudit-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "fanaudit")
	cmd := exec.Command("go", "build", "-race", "-o", binary, "../cmd/fanaudit")
	if os.Getenv("FANAUDIT_E2E_NORACE") != "" {
		cmd = exec.Command("go", "build", "-o", binary, "../cmd/fanaudit")
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building fanaudit:", err)
		return 1
	}
	return m.Run()
}

// agent is one running fanaudit process.
type agent struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdout io.ReadCloser

	mu    sync.Mutex
	logs  []map[string]any
	raw   []string
	grew  chan struct{} // closed and replaced whenever a log line arrives
	ended bool
	done  chan struct{}
	err   error

	stderrDone chan struct{}
	stdoutDone chan struct{} // set by readStdout
	out        []byte
}

// readStdout starts draining stdout (start with keepStdout); output returns
// it after wait.
func (a *agent) readStdout() {
	a.stdoutDone = make(chan struct{})
	go func() {
		defer close(a.stdoutDone)
		a.out, _ = io.ReadAll(a.stdout)
	}()
}

func (a *agent) output() []byte {
	<-a.stdoutDone
	return a.out
}

// start runs the binary with args. Unless keepStdout is set, stdout is
// drained into a buffer nobody reads.
func start(t *testing.T, keepStdout bool, args ...string) *agent {
	t.Helper()
	return startTo(t, keepStdout, nil, args...)
}

// startTo is start with stdout going to out when out is not nil.
func startTo(t *testing.T, keepStdout bool, out *os.File, args ...string) *agent {
	t.Helper()
	return startArgv(t, keepStdout, out, append([]string{binary}, args...))
}

// startArgv is startTo for a command line that runs the binary itself,
// e.g. through setpriv.
func startArgv(t *testing.T, keepStdout bool, out *os.File, argv []string) *agent {
	t.Helper()
	a := &agent{t: t, cmd: exec.Command(argv[0], argv[1:]...), grew: make(chan struct{}), done: make(chan struct{}), stderrDone: make(chan struct{})}
	a.cmd.Env = append(os.Environ(), "GORACE=halt_on_error=1")
	stderr, err := a.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if keepStdout {
		if a.stdout, err = a.cmd.StdoutPipe(); err != nil {
			t.Fatal(err)
		}
	} else if out != nil {
		a.cmd.Stdout = out
	} else {
		a.cmd.Stdout = io.Discard
	}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(a.stderrDone)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			var m map[string]any
			_ = json.Unmarshal([]byte(line), &m)
			a.mu.Lock()
			a.raw = append(a.raw, line)
			a.logs = append(a.logs, m)
			close(a.grew)
			a.grew = make(chan struct{})
			a.mu.Unlock()
		}
		a.mu.Lock()
		a.ended = true
		close(a.grew)
		a.mu.Unlock()
	}()
	t.Cleanup(func() {
		select {
		case <-a.done:
		default:
			a.cmd.Process.Kill()
			if a.stdout != nil && a.stdoutDone == nil {
				a.readStdout()
			}
			a.wait()
		}
	})
	return a
}

// waitLog blocks until a log line with this msg arrives and returns it.
func (a *agent) waitLog(msg string, timeout time.Duration) map[string]any {
	a.t.Helper()
	deadline := time.After(timeout)
	seen := 0
	for {
		a.mu.Lock()
		for ; seen < len(a.logs); seen++ {
			if m := a.logs[seen]; m != nil && m["message"] == msg {
				a.mu.Unlock()
				return m
			}
		}
		grew, ended := a.grew, a.ended
		a.mu.Unlock()
		if ended {
			a.t.Fatalf("agent ended before logging %q; stderr:\n%s", msg, a.stderr())
		}
		select {
		case <-grew:
		case <-deadline:
			a.t.Fatalf("no %q log line within %s; stderr:\n%s", msg, timeout, a.stderr())
		}
	}
}

func (a *agent) stderr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return strings.Join(a.raw, "\n")
}

func (a *agent) signal(sig syscall.Signal) {
	a.t.Helper()
	if err := a.cmd.Process.Signal(sig); err != nil {
		a.t.Fatal(err)
	}
	if sig == syscall.SIGSTOP {
		a.waitStopped()
	}
}

// waitStopped returns once every thread of the agent is in the stopped
// state. kill(2) returns before a thread running on another CPU has
// stopped, so a test that acts "while the agent does not read" right after
// SIGSTOP could race a last read of the agent's (seen in CI under load:
// the agent marked a new directory before the test wrote into it).
func (a *agent) waitStopped() {
	a.t.Helper()
	tasks := fmt.Sprintf("/proc/%d/task", a.cmd.Process.Pid)
	deadline := time.Now().Add(startTimeout)
	for {
		ents, err := os.ReadDir(tasks)
		if err != nil {
			a.t.Fatal(err)
		}
		running := 0
		for _, e := range ents {
			stat, err := os.ReadFile(filepath.Join(tasks, e.Name(), "stat"))
			if err != nil {
				continue // the thread exited
			}
			// The state follows the command's closing parenthesis.
			i := bytes.LastIndexByte(stat, ')')
			if i < 0 || i+2 >= len(stat) || (stat[i+2] != 'T' && stat[i+2] != 't') {
				running++
			}
		}
		if running == 0 {
			return
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("agent still has %d threads running %v after SIGSTOP", running, startTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// wait waits for the exit and returns the exit code. The pipes are read
// to their end first: exec.Cmd.Wait closes them.
func (a *agent) wait() int {
	select {
	case <-a.done:
	default:
		<-a.stderrDone
		if a.stdoutDone != nil {
			<-a.stdoutDone
		}
		a.err = a.cmd.Wait()
		close(a.done)
	}
	if a.err == nil {
		return 0
	}
	if ee := (*exec.ExitError)(nil); errors.As(a.err, &ee) {
		return ee.ExitCode()
	}
	a.t.Fatalf("wait: %v", a.err)
	return -1
}

// stop sends SIGTERM and requires a clean exit.
func (a *agent) stop() {
	a.t.Helper()
	a.signal(syscall.SIGTERM)
	if code := a.wait(); code != 0 {
		a.t.Fatalf("exit %d after SIGTERM; stderr:\n%s", code, a.stderr())
	}
}

// rec is the part of a record the tests look at.
type rec struct {
	Event struct {
		Action   string   `json:"action"`
		Sequence uint64   `json:"sequence"`
		Category []string `json:"category"`
	} `json:"event"`
	File struct {
		Path string `json:"path"`
		Ext  struct {
			Original struct {
				Path string `json:"path"`
			} `json:"original"`
		} `json:"Ext"`
		Type string `json:"type"`
	} `json:"file"`
	Process struct {
		Pid int `json:"pid"`
	} `json:"process"`
	Fanaudit struct {
		Lost struct {
			Count  uint64 `json:"count"`
			Reason string `json:"reason"`
			Sink   string `json:"sink"`
		} `json:"lost"`
	} `json:"fanaudit"`
}

// readFile returns the contents of file p, failing the test when it
// cannot be read.
func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parseRecords(t *testing.T, data []byte) []rec {
	t.Helper()
	var out []rec
	for i, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if line == "" {
			if len(data) == 0 {
				break
			}
			t.Fatalf("empty line %d", i+1)
		}
		var r rec
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %d is not JSON: %v: %q", i+1, err, line)
		}
		out = append(out, r)
	}
	return out
}

// lossFor sums queue_full counts naming sink.
func lossFor(recs []rec, sink string) uint64 {
	var n uint64
	for _, r := range recs {
		if r.Event.Action == "events_lost" && r.Fanaudit.Lost.Reason == "queue_full" && r.Fanaudit.Lost.Sink == sink {
			n += r.Fanaudit.Lost.Count
		}
	}
	return n
}

// finalSink extracts one sink's numbers from the "final stats" line.
func finalSink(t *testing.T, final map[string]any, name string) map[string]float64 {
	t.Helper()
	list, _ := final["sinks"].([]any)
	for _, s := range list {
		m, _ := s.(map[string]any)
		if m["sink"] == name {
			out := map[string]float64{}
			for k, v := range m {
				if f, ok := v.(float64); ok {
					out[k] = f
				}
			}
			return out
		}
	}
	t.Fatalf("final stats have no sink %q: %v", name, final)
	return nil
}

// runConfig writes body for `fanaudit run` with state_dir set to a fresh
// temp dir (inserted before the first table), so that no test reads or
// leaves a run marker in the machine's /var/lib/fanaudit.
func runConfig(t *testing.T, body string) string {
	t.Helper()
	return writeConfig(t, withStateDir(body, filepath.Join(t.TempDir(), "state")))
}

func withStateDir(body, dir string) string {
	line := fmt.Sprintf("state_dir = %q\n", dir)
	lines := strings.SplitAfter(body, "\n")
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "[") {
			return strings.Join(lines[:i], "") + line + strings.Join(lines[i:], "")
		}
	}
	return body + "\n" + line
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitFileLines waits until the file at path holds at least n lines.
func (a *agent) waitFileLines(path string, n int) {
	for {
		if b, _ := os.ReadFile(path); bytes.Count(b, []byte("\n")) >= n {
			return
		}
		a.waitAnyLogOrTick()
	}
}

// waitAnyLogOrTick waits for a new log line or 10ms, for the rare state
// (a file's content) that no event announces.
func (a *agent) waitAnyLogOrTick() {
	a.mu.Lock()
	grew := a.grew
	a.mu.Unlock()
	select {
	case <-grew:
	case <-time.After(10 * time.Millisecond):
	}
}
