package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// keygen runs seal-keygen and returns the printed key.
func keygen(t *testing.T, state string) string {
	t.Helper()
	out, err := exec.Command(binary, "seal-keygen", "--state", state).Output()
	if err != nil {
		t.Fatalf("seal-keygen: %v", err)
	}
	k := strings.TrimSpace(string(out))
	if len(k) != 64 || strings.Count(string(out), "\n") != 1 {
		t.Fatalf("seal-keygen printed %q", out)
	}
	return k
}

// verifyRun runs verify and returns its exit code and stderr lines.
func verifyRun(t *testing.T, args ...string) (int, []string) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"verify"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var lines []string
	if s := strings.TrimSpace(stderr.String()); s != "" {
		lines = strings.Split(s, "\n")
	}
	return code, lines
}

// makeFiles creates n files in dir, each a create, close_write and delete.
func makeFiles(t *testing.T, dir, prefix string, n int) {
	t.Helper()
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("%s%05d", prefix, i))
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
}

// streamFiles lists the sink's files oldest first, as verify orders them.
func sinkFiles(t *testing.T, out string) []string {
	t.Helper()
	m, err := filepath.Glob(out + ".*")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return append(m, out)
}

func isSealLine(l string) bool { return strings.Contains(l, `"dataset":"fanaudit.seal"`) }

// TestSealedFileSink: a sealed file sink through several rotations with
// gzip and an agent restart verifies; each kind of tampering is found
// and named by file and line; the wrong key is named as such.
func TestSealedFileSink(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "16m")
	outDir := testutil.TmpfsMount(t, "64m")
	out := filepath.Join(outDir, "events.json")
	state := filepath.Join(t.TempDir(), "seal.state")
	key := keygen(t, state)
	cfg := runConfig(t, fileSinkConfig(watched, out, "")+`compress = true
max_backups = 0
max_size_mb = 1
`)
	body, _ := os.ReadFile(cfg)
	// The sink-level keys go before [sinks.file].
	body = bytes.Replace(body, []byte("type = \"file\"\n"), fmt.Appendf(nil, "type = \"file\"\nseal_state = %q\nseal_interval = \"1s\"\n", state), 1)
	body = bytes.Replace(body, []byte("max_size_mb = 0\n"), nil, 1)
	if err := os.WriteFile(cfg, body, 0o600); err != nil {
		t.Fatal(err)
	}

	// Two runs, about 2.5 MiB of records each, so the file rotates
	// several times; the second run continues the chain from the state.
	for run, prefix := range []string{"a", "b"} {
		a := start(t, false, "run", "--config", cfg)
		a.waitLog("running", startTimeout)
		makeFiles(t, watched, prefix, 1400)
		if run == 1 {
			// Wait for the last record and an interval seal after it, so
			// that the live file ends with a sealed tail before the
			// closing seal.
			last := fmt.Sprintf(`"path":%q`, filepath.Join(watched, "b01399"))
			deadline := time.Now().Add(30 * time.Second)
			for {
				b, _ := os.ReadFile(out)
				lines := strings.Split(string(b), "\n")
				i := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, last) && strings.Contains(l, `"action":"delete"`) })
				if i >= 0 && slices.ContainsFunc(lines[i:], func(l string) bool { return isSealLine(l) && strings.Contains(l, `"kind":"interval"`) }) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no interval seal after the last record in %s", out)
				}
				a.waitAnyLogOrTick()
			}
		}
		a.stop()
	}
	files := sinkFiles(t, out)
	gz := 0
	for _, f := range files {
		if strings.HasSuffix(f, ".gz") {
			gz++
		}
	}
	if len(files) < 4 || gz < 2 {
		t.Fatalf("want several rotated files, gzipped: %v", files)
	}
	if code, errs := verifyRun(t, "--key", key, out); code != 0 {
		t.Fatalf("verify of the intact stream: exit %d: %q", code, errs)
	}

	live := readFile(t, out)
	lines := strings.SplitAfter(string(live), "\n")
	lines = lines[:len(lines)-1]
	// A record line in the middle of the live file, with a record after it.
	k := len(lines) / 2
	for isSealLine(lines[k-1]) || isSealLine(lines[k]) {
		k++
	}
	lastInterval := -1
	for i, l := range lines {
		if isSealLine(l) && strings.Contains(l, `"kind":"interval"`) {
			lastInterval = i
		}
	}
	if lastInterval < 0 {
		t.Fatal("no interval seal in the live file")
	}
	anySeal := slices.IndexFunc(lines, isSealLine)
	otherKey := keygen(t, filepath.Join(t.TempDir(), "other.state"))

	cases := []struct {
		name string
		edit func(dir string, lines []string) []string // returns the live file's new lines
		key  string
		file string // the finding names this file (base name); "" = the live file
		line int    // and this line; 0: any
		from int    // or a line in [from, line]
		want string
	}{
		{name: "one byte changed", edit: func(_ string, l []string) []string {
			l[k-1] = strings.Replace(l[k-1], `"create"`, `"crEate"`, 1)
			l[k-1] = strings.Replace(l[k-1], `"delete"`, `"dElete"`, 1)
			l[k-1] = strings.Replace(l[k-1], `"close_write"`, `"close_wrItE"`, 1)
			return l
		}, from: k - 15, line: k, want: "changed"},
		{name: "line removed", edit: func(_ string, l []string) []string { return slices.Delete(l, k-1, k) }, line: k, want: "removed"},
		{name: "two lines swapped", edit: func(_ string, l []string) []string { l[k-1], l[k] = l[k], l[k-1]; return l }, line: k, want: "reordered"},
		{name: "line appended", edit: func(_ string, l []string) []string { return append(l, l[k-1]) }, line: len(lines) + 1, want: "not sealed"},
		{name: "forged seal", edit: func(_ string, l []string) []string {
			l[anySeal] = strings.Replace(l[anySeal], `"kind":"`, `"kind":"x`, 1)
			return l
		}, line: anySeal + 1, want: "forged"},
		{name: "tail cut after the last seal", edit: func(_ string, l []string) []string { return l[:lastInterval+1] }, line: lastInterval + 1, want: "without a closing seal"},
		{name: "rotated file removed", edit: func(dir string, l []string) []string {
			if err := os.Remove(filepath.Join(dir, filepath.Base(files[1]))); err != nil {
				t.Fatal(err)
			}
			return l
		}, file: filepath.Base(files[2]), line: 1, want: "missing between"},
		{name: "wrong key", key: otherKey, file: filepath.Base(files[0]), line: 1, want: "wrong key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range files[:len(files)-1] {
				b := readFile(t, f)
				if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			l := slices.Clone(lines)
			if tc.edit != nil {
				l = tc.edit(dir, l)
			}
			if err := os.WriteFile(filepath.Join(dir, "events.json"), []byte(strings.Join(l, "")), 0o600); err != nil {
				t.Fatal(err)
			}
			k := key
			if tc.key != "" {
				k = tc.key
			}
			code, errs := verifyRun(t, "--key", k, filepath.Join(dir, "events.json"))
			if code != 1 || len(errs) == 0 {
				t.Fatalf("verify: exit %d, findings %q; want exit 1 with findings", code, errs)
			}
			t.Log(errs)
			file := tc.file
			if file == "" {
				file = "events.json"
			}
			var n int
			rest, ok := strings.CutPrefix(errs[0], filepath.Join(dir, file)+":")
			if _, err := fmt.Sscanf(rest, "%d:", &n); !ok || err != nil {
				t.Fatalf("first finding %q does not name %s and a line", errs[0], file)
			}
			if tc.from == 0 && tc.line != 0 && n != tc.line || tc.from != 0 && (n < tc.from || n > tc.line) {
				t.Fatalf("first finding %q: line %d, want %d (from %d)", errs[0], n, tc.line, tc.from)
			}
			if !strings.Contains(errs[0], tc.want) {
				t.Fatalf("first finding %q does not say %q", errs[0], tc.want)
			}
		})
	}

	// Usage errors exit 2 with one line.
	for _, args := range [][]string{
		{out}, {"--key", "xyz", out}, {"--key", key}, {"--key", key, filepath.Join(outDir, "nope")},
		{"--key", key, "--topic", "t"}, {"--key", key, "--brokers", "127.0.0.1:1"},
		{"--key", key, "--brokers", "127.0.0.1:1", "--topic", "t", out},
		{"--key", key, "--config", filepath.Join(outDir, "nope.toml"), "--sink", "s"},
		{"--key", key, "--topic", "t", "--brokers", "127.0.0.1:1", "--sink", "s"},
	} {
		if code, errs := verifyRun(t, args...); code != 2 || len(errs) != 1 {
			t.Errorf("verify %q: exit %d, stderr %q; want 2 and one line", args, code, errs)
		}
	}
}

// TestSealedWatch: watch --seal-state seals stdout between an open and a
// closing seal, and the output verifies.
func TestSealedWatch(t *testing.T) {
	testutil.RequireRoot(t)
	watched := testutil.TmpfsMount(t, "16m")
	state := filepath.Join(t.TempDir(), "seal.state")
	key := keygen(t, state)
	a := start(t, true, "watch", "--events", "create,delete", "--seal-state", state, "--duration", "1h", watched)
	a.readStdout()
	a.waitLog("running", startTimeout)
	makeFiles(t, watched, "w", 20)
	a.signal(syscall.SIGINT)
	if code := a.wait(); code != 0 {
		t.Fatalf("exit %d after SIGINT: %s", code, a.stderr())
	}
	out := filepath.Join(t.TempDir(), "watch.json")
	if err := os.WriteFile(out, a.output(), 0o600); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(a.output())), "\n")
	if len(lines) != 42 || !isSealLine(lines[0]) || !strings.Contains(lines[41], `"kind":"close"`) {
		t.Fatalf("watch output: %d lines, first %q, last %q", len(lines), lines[0], lines[len(lines)-1])
	}
	if code, errs := verifyRun(t, "--key", key, out); code != 0 {
		t.Fatalf("verify of watch's output: exit %d: %q", code, errs)
	}
}
