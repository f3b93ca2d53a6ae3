package audit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// sh runs a shell script in dir from a child process (not the agent's pid).
func sh(t testing.TB, dir, script string) {
	t.Helper()
	cmd := exec.Command("sh", "-ec", script)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sh %q: %v: %s", script, err, out)
	}
}

func mkdirs(t testing.TB, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// creates counts the create events per path, relative to root.
func creates(evs []Event, root string) map[string]int {
	m := map[string]int{}
	for _, e := range evs {
		if e.Action == ActionCreate {
			m["."+strings.TrimPrefix(e.Path, root)]++
		}
	}
	return m
}

func has(evs []Event, a Action, p string) bool {
	for _, e := range evs {
		if e.Action == a && e.Path == p {
			return true
		}
	}
	return false
}

// TestSubtreeScope: inode marks report every operation inside the
// subtree (a directory that existed, one made after the start, one moved
// in), and the kernel sends nothing for work in a sibling directory on the
// same filesystem: proven by the count of events read, not by timing.
func TestSubtreeScope(t *testing.T) {
	for _, tc := range []struct {
		scope    string
		maxDirs  int
		inTree   bool // the sibling's work must not reach user space
		wantMark bool
	}{
		{ScopeSubtree, 0, true, true},
		{ScopeAuto, 0, true, true},
		{ScopeAuto, 2, false, false}, // 3 directories: above the limit
		{ScopeFilesystem, 0, false, false},
	} {
		t.Run(fmt.Sprintf("%s-%d", tc.scope, tc.maxDirs), func(t *testing.T) {
			mnt := tmpfs(t)
			w, sib := filepath.Join(mnt, "w"), filepath.Join(mnt, "sib")
			mkdirs(t, filepath.Join(w, "old", "deep"), filepath.Join(sib, "moved", "inner"))
			// Ignore marks off: the filesystem mark's cases prove the count.
			s := startSession(t, Options{Paths: []string{w}, Scope: tc.scope, SubtreeMaxDirs: tc.maxDirs, OutOfScopeMarks: -1})
			if got := s.c.Stats().InodeMarks; (got == 3) != tc.wantMark || (got == 0) == tc.wantMark {
				t.Fatalf("inode marks %d, want marks: %v", got, tc.wantMark)
			}
			s.mark(w)
			before := s.c.Stats().KernelEvents
			sh(t, sib, `for i in $(seq 100); do echo x > f$i; mv f$i g$i; done; rm g*`)
			s.mark(w)
			delta := s.c.Stats().KernelEvents - before
			if tc.inTree && delta > 10 {
				t.Errorf("%d kernel events read for sibling work (the markers take ≤ 10)", delta)
			}
			if !tc.inTree && delta < 300 {
				t.Errorf("only %d kernel events read under a filesystem mark: the count proves nothing", delta)
			}
			s.take()

			sh(t, w, `echo a > old/deep/f; mkdir new; mv ../sib/moved in`)
			// Writes in a directory made or moved in count once its create
			// or rename is read; before that only what exists is known
			// (TestSubtreeScanRace, see tree).
			s.waitFor("rename in", func(e *Event) bool { return e.Action == ActionRename && e.Path == filepath.Join(w, "in") })
			sh(t, w, `echo b > new/g; echo c > in/inner/h; rm old/deep/f`)
			s.mark(w)
			evs := s.take()
			for _, want := range []struct {
				a Action
				p string
			}{
				{ActionCreate, "old/deep/f"}, {ActionCloseWrite, "old/deep/f"},
				{ActionCreate, "new"}, {ActionCreate, "new/g"}, {ActionCloseWrite, "new/g"},
				{ActionRename, "in"}, {ActionCreate, "in/inner/h"}, {ActionCloseWrite, "in/inner/h"},
				{ActionDelete, "old/deep/f"},
			} {
				if !has(evs, want.a, filepath.Join(w, want.p)) {
					t.Errorf("no %s %s", want.a, want.p)
				}
			}
			for _, e := range evs {
				if e.Path == "" || !under(e.Path, w) && !under(e.OldPath, w) {
					t.Errorf("out of scope: %s", line(&e, mnt))
				}
			}
			if tc.wantMark {
				if got := s.c.Stats().InodeMarks; got != 6 { // w old deep new in inner
					t.Errorf("inode marks %d, want 6", got)
				}
				// Moved out: the marks go, and its work is not sent.
				sh(t, w, `mv in ../sib/out; rm new/g; rmdir new`)
				s.mark(w)
				if got := s.c.Stats().InodeMarks; got != 3 {
					t.Errorf("inode marks %d after moving out and rmdir, want 3", got)
				}
				before := s.c.Stats().KernelEvents
				sh(t, sib, `for i in $(seq 50); do echo x > out/inner/f$i; done`)
				s.mark(w)
				if delta := s.c.Stats().KernelEvents - before; delta > 10 {
					t.Errorf("%d kernel events read for work in a directory moved out", delta)
				}
			}
		})
	}
}

// TestSubtreeScanRace: a directory made and filled at once. Entries made
// before the new directory's mark get synthesized creates; every create
// comes exactly once.
func TestSubtreeScanRace(t *testing.T) {
	mnt := tmpfs(t)
	w := filepath.Join(mnt, "w")
	mkdirs(t, w)
	s := startSession(t, Options{Paths: []string{w}, Scope: ScopeSubtree})
	var script strings.Builder
	var want []string
	for i := range 30 {
		fmt.Fprintf(&script, "mkdir -p d%d/a/b; echo x > d%d/a/b/f; mkdir d%d/c; : > d%d/c/g; ", i, i, i, i)
		for _, p := range []string{"", "/a", "/a/b", "/a/b/f", "/c", "/c/g"} {
			want = append(want, fmt.Sprintf("./d%d%s", i, p))
		}
	}
	sh(t, w, script.String())
	s.mark(w)
	got := creates(s.take(), w)
	sort.Strings(want)
	for _, p := range want {
		if got[p] != 1 {
			t.Errorf("%s: %d creates, want 1", p, got[p])
		}
		delete(got, p)
	}
	for p, n := range got {
		t.Errorf("unexpected create %s (%d)", p, n)
	}
	t.Logf("inode marks %d", s.c.Stats().InodeMarks)
}

// TestFilesystemRootUsesFSMark: a path that is its filesystem's root gets
// the filesystem mark whatever the scope.
func TestFilesystemRootUsesFSMark(t *testing.T) {
	mnt := tmpfs(t)
	mkdirs(t, filepath.Join(mnt, "a", "b"))
	s := startSession(t, Options{Paths: []string{mnt}, Scope: ScopeSubtree})
	if got := s.c.Stats().InodeMarks; got != 0 {
		t.Fatalf("%d inode marks on a filesystem root", got)
	}
	sh(t, mnt, `: > a/b/f`)
	s.waitFor("create a/b/f", func(e *Event) bool { return e.Action == ActionCreate && e.Path == filepath.Join(mnt, "a/b/f") })
}

func TestScopeOption(t *testing.T) {
	mnt := tmpfs(t)
	if _, err := New(Options{Paths: []string{mnt}, Scope: "tree"}, testLogger(t)); err == nil || !strings.Contains(err.Error(), "scope") {
		t.Fatalf("bad scope: %v", err)
	}
}

// TestDroppedReadsKeepThePool: a read whose events are all dropped by
// the scope verdicts gives its Event slice back to the pool instead of
// leaving it to the garbage collector (which, with the pool run dry, made
// every later read allocate a batch-sized slice).
func TestDroppedReadsKeepThePool(t *testing.T) {
	mnt := tmpfs(t)
	w, sib := filepath.Join(mnt, "w"), filepath.Join(mnt, "sib")
	mkdirs(t, w, sib)
	// Ignore marks off: with them the kernel drops these events itself.
	s := startSession(t, Options{Paths: []string{w}, Scope: ScopeFilesystem, OutOfScopeMarks: -1})
	sh(t, sib, `for i in $(seq 200); do echo x > f$i; done`)
	deadline := time.Now().Add(30 * time.Second)
	for s.c.Stats().ScopeDrops < 200 {
		if time.Now().After(deadline) {
			t.Fatalf("the capture did not read the sibling's events: %+v", s.c.Stats())
		}
		time.Sleep(5 * time.Millisecond) // polling a counter the capture bumps
	}
	if n := len(s.c.evFree); n == 0 {
		t.Fatalf("no Event slice back in the pool after %d events dropped by scope (this session recycles nothing else)", s.c.Stats().ScopeDrops)
	}
}

// TestScopeVerdictCache: under a filesystem mark, events in an
// out-of-scope directory are dropped by the directory's cached verdict
// (no path built), and a directory renamed into scope is reported again.
func TestScopeVerdictCache(t *testing.T) {
	mnt := tmpfs(t)
	w, sib := filepath.Join(mnt, "w"), filepath.Join(mnt, "sib")
	mkdirs(t, w, filepath.Join(sib, "d"))
	// Ignore marks off, or the kernel drops the events the verdicts would.
	s := startSession(t, Options{Paths: []string{w}, Scope: ScopeFilesystem, OutOfScopeMarks: -1})
	sh(t, sib, `for i in $(seq 100); do echo x > d/f$i; done`)
	s.mark(w)
	if st := s.c.Stats(); st.ScopeDrops < 100 {
		t.Errorf("%d scope drops for 100 files made out of scope: %+v", st.ScopeDrops, st)
	}
	sh(t, mnt, `mv sib/d w/d; echo y > w/d/g; mv w/d sib/e; echo z > sib/e/h`)
	s.mark(w)
	evs := s.take()
	for _, want := range []string{"w/d/g"} {
		if !has(evs, ActionCloseWrite, filepath.Join(mnt, want)) {
			t.Errorf("no close_write %s", want)
		}
	}
	for _, e := range evs {
		if strings.HasPrefix(e.Path, sib) && !under(e.OldPath, w) {
			t.Errorf("out of scope: %s", line(&e, mnt))
		}
	}
}

// TestSubtreeDirMovedBeforeMark: a directory that appeared in the subtree
// (made there, or moved in) and was renamed again within it before the
// reader got to its create or rename, or renamed from an excluded name to
// an included one, is marked where it went: work in it afterwards is
// reported, and work in it before its mark is announced (unwatched_window
// naming where it went), never lost without a record.
func TestSubtreeDirMovedBeforeMark(t *testing.T) {
	for _, tc := range []struct {
		name, script string
		exclude      []string
		live         bool     // the script runs while the reader runs
		lost         string   // a directory whose earlier work was lost: announced
		later        []string // files written once the backlog is read
	}{
		{name: "made", script: `mkdir w/x; echo a > w/x/f; mv w/x w/y`, lost: "y", later: []string{"y/g"}},
		{name: "made-twice", script: `mkdir w/x; mv w/x w/y; mv w/y w/z`, later: []string{"z/g"}},
		{name: "made-nested", script: `mkdir -p w/x/s; mv w/x w/y`, later: []string{"y/g", "y/s/g"}},
		{name: "moved-in", script: `mv src/x w/x; echo a >> w/x/s/f; mv w/x w/y`, lost: "y", later: []string{"y/g", "y/s/g"}},
		{name: "replaced", script: `mkdir w/x; mv w/x w/y; mkdir w/x`, later: []string{"y/g", "x/g"}},
		{name: "excluded", script: `mv w/x.tmp w/x`, exclude: []string{"*.tmp"}, live: true, later: []string{"x/g", "x/s/g"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt := tmpfs(t)
			w := filepath.Join(mnt, "w")
			mkdirs(t, w, filepath.Join(mnt, "src", "x", "s"), filepath.Join(w, "x.tmp", "s"))
			sh(t, mnt, `echo x > src/x/s/f`)
			c, err := New(Options{Paths: []string{w}, Scope: ScopeSubtree, Exclude: tc.exclude}, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			var s *session
			if tc.live {
				s = attachSession(t, c)
			}
			// Without live, before the reader starts: it reads the create
			// (or rename in) after the directory has moved on.
			sh(t, mnt, tc.script)
			if !tc.live {
				s = attachSession(t, c)
			}
			s.mark(w)
			for _, f := range tc.later {
				runHelper(t, "touch", filepath.Join(w, f))
			}
			s.mark(w)
			evs := s.take()
			for _, f := range tc.later {
				p := filepath.Join(w, f)
				if !has(evs, ActionCloseWrite, p) {
					t.Errorf("no close_write %s: its directory was never marked (%d inode marks)", p, c.Stats().InodeMarks)
				}
			}
			ann := announced(evs)
			if tc.lost != "" && ann[filepath.Join(w, tc.lost)] != 1 {
				t.Errorf("work in %s before its mark not announced: %v", tc.lost, ann)
			}
			if tc.lost == "" && len(ann) > 0 {
				t.Errorf("announced with nothing lost: %v", ann)
			}
		})
	}
}
