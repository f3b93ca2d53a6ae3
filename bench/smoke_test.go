package bench

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// needOrSkip skips when a prerequisite is missing, except under CI=true,
// where a skip would let the harness rot unnoticed.
func needOrSkip(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("smoke run needs %s: %v", what, err)
	}
	t.Skipf("smoke run needs %s: %v", what, err)
}

// TestSmoke runs the whole harness with a tiny workload and one round, so
// `make test` keeps it working. It checks that every configuration ran and
// was counted, never how fast.
func TestSmoke(t *testing.T) {
	if os.Geteuid() != 0 {
		needOrSkip(t, "root", errors.New("not root"))
	}
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	sticks := filepath.Join(repo, "..", "shared", "bench")
	_, err = os.Stat(filepath.Join(sticks, "fanread.c"))
	needOrSkip(t, "the measuring sticks in "+sticks, err)
	_, err = exec.LookPath("cc")
	needOrSkip(t, "a C compiler", err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	fat, err := FindFatrace(ctx, false)
	needOrSkip(t, "fatrace", err)

	work := t.TempDir()
	o := Options{
		Repo: repo, Sticks: sticks, WorkDir: work,
		N: 500, Block: 64, Rounds: 1,
		Fatrace:   fat,
		PacedRate: 20000, PacedFor: 300 * time.Millisecond,
		Log: logWriter{t},
	}
	fa := filepath.Join(work, "fanaudit")
	ok, err := BuildFanaudit(ctx, repo, fa)
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		o.Fanaudit = fa
	} else {
		t.Log("cmd/fanaudit has no Go files yet; its configurations are left out")
	}

	rep, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	wantLive, wantDrain, wantSibling, wantPaced := 6, 4, 3, 1
	if ok {
		wantLive += 2 // run with a file sink, watch
		if rep.SealNA == "" {
			wantLive++ // the sealed file sink
		}
		wantDrain++
		wantSibling++
		if defaultScope(o.Fanaudit) != "subtree" {
			wantSibling++ // the agent with inode marks, opt-in
		}
		wantPaced++
	}
	if len(rep.Live) != wantLive || len(rep.Drain) != wantDrain || len(rep.Sibling) != wantSibling || len(rep.Paced) != wantPaced {
		t.Fatalf("got %d live, %d drain, %d sibling and %d paced configurations, want %d, %d, %d and %d",
			len(rep.Live), len(rep.Drain), len(rep.Sibling), len(rep.Paced), wantLive, wantDrain, wantSibling, wantPaced)
	}
	for _, c := range slices.Concat(rep.Live, rep.Drain, rep.Sibling, rep.Paced) {
		if len(c.Samples) != 1 {
			t.Fatalf("%s: %d samples, want 1", c.Name, len(c.Samples))
		}
		s := c.Samples[0]
		if s.Err != "" {
			t.Errorf("%s: %s", c.Name, s.Err)
			continue
		}
		if s.WL.Ops == 0 {
			t.Errorf("%s: workload report not parsed: %+v", c.Name, s.WL)
		}
		// In the sibling rows only a filesystem mark sees the workload.
		quiet := strings.HasPrefix(c.Name, "no monitor") || c.Name == nameSibTree || c.Name == nameSibAgent || c.Name == nameSibSubtree
		if !quiet && s.Counts.total() == 0 {
			t.Errorf("%s: captured nothing", c.Name)
		}
		// The C reader is the reference: if it misses operations, the
		// harness counts wrongly.
		if strings.HasPrefix(c.Name, "fanread") {
			if miss := Missing(s.Counts, c.Ops, o.N, o.Block); miss != 0 {
				t.Errorf("%s: %d operations missing: %v", c.Name, miss, s.Counts.Ops)
			}
		}
		// The agent's sibling row did the scripted work in the watched
		// subtree and counted what it reported.
		if (c.Name == nameSibAgent || c.Name == nameSibSubtree) && (!s.ScopeChecked || s.ScopeOps == 0) {
			t.Errorf("%s: subtree check did not run or counted nothing: %+v", c.Name, s)
		}
	}
	var md bytes.Buffer
	if err := rep.Markdown(&md); err != nil {
		t.Fatal(err)
	}
	for _, c := range slices.Concat(rep.Live, rep.Sibling) {
		if !strings.Contains(md.String(), "| "+c.Name+" |") {
			t.Errorf("results table has no row for %s", c.Name)
		}
	}
	// Every target gets a verdict computed from the run (or says why not).
	rows := rep.targetRows()
	if len(rows) < 10 {
		t.Errorf("%d target rows, want at least 10", len(rows))
	}
	for _, r := range rows {
		if !strings.Contains(r.verdict, "PASS") && !strings.Contains(r.verdict, "FAIL") && !strings.HasPrefix(r.verdict, "n/a") && r.verdict != notMeasured {
			t.Errorf("target %q: verdict %q", r.target, r.verdict)
		}
		if ok && strings.HasPrefix(r.target, "live slowdown") && r.verdict == notMeasured {
			t.Errorf("target %q not measured", r.target)
		}
	}
	t.Log("\n" + md.String())
}
