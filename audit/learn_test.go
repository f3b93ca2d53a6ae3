package audit

import (
	"path/filepath"
	"testing"
)

// TestOutOfScopeIgnoreMarks: under a filesystem mark, an out-of-scope
// directory gets an ignore mark at its first event read, and from then
// on its files' work never reaches user space (proven by the count of
// kernel events read, not by timing). What crosses into scope still comes:
// a file renamed in, a directory moved in (its ignore marks go; work in
// it right after the move is reported or announced as unwatched_window,
// and work after its rename was read is reported), both sides of an
// exchange, and a directory moved back out is learned again.
func TestOutOfScopeIgnoreMarks(t *testing.T) {
	for _, fs := range []struct {
		name  string
		mount func(testing.TB) string
	}{{"tmpfs", tmpfs}, {"ext4", ext4}} {
		t.Run(fs.name, func(t *testing.T) {
			mnt := fs.mount(t)
			w, sib := filepath.Join(mnt, "w"), filepath.Join(mnt, "sib")
			mkdirs(t, w, filepath.Join(sib, "d", "sub"), filepath.Join(sib, "x", "y"))
			s := startSession(t, Options{Paths: []string{w}, Scope: ScopeFilesystem})
			sh(t, sib, `echo a > d/first; echo a > d/sub/first; echo a > x/first; echo a > x/y/first`)
			s.mark(w)
			if got := s.c.Stats().IgnoreMarks; got != 4 {
				t.Fatalf("ignore marks %d after work in 4 out-of-scope directories, want 4", got)
			}
			before := s.c.Stats().KernelEvents
			sh(t, sib, `for i in $(seq 200); do echo x > d/f$i; echo y >> d/sub/first; rm d/f$i; done`)
			s.mark(w)
			// 200 unlinks still send their link count attrib (no parent to
			// ignore it by); the rest (600 or more kernel events, merged)
			// must not come.
			if delta := s.c.Stats().KernelEvents - before; delta > 230 {
				t.Errorf("%d kernel events read for ignored work (the markers and 200 attribs take ≤ 230)", delta)
			}
			if evs := s.take(); len(evs) != 0 {
				t.Errorf("%d events out of scope, first %s", len(evs), line(&evs[0], mnt))
			}

			// Into scope: a file renamed in, then a directory moved in and
			// written to at once, before the agent reads its move.
			sh(t, mnt, `echo b > sib/d/moving; mv sib/d/moving w/moved; mv sib/d w/d; echo z > w/d/sub/early; cat w/d/first >/dev/null`)
			s.waitFor("rename of d", func(e *Event) bool { return e.Action == ActionRename && e.Path == filepath.Join(w, "d") })
			sh(t, w, `echo q > d/sub/later`)
			s.mark(w)
			evs := s.take()
			for _, want := range []struct {
				a Action
				p string
			}{
				{ActionRename, "moved"}, {ActionRename, "d"},
				{ActionCreate, "d/sub/later"}, {ActionCloseWrite, "d/sub/later"},
			} {
				if !has(evs, want.a, filepath.Join(w, want.p)) {
					t.Errorf("no %s %s", want.a, want.p)
				}
			}
			// The write and the read right after the move may have been
			// ignored; a read leaves no timestamp to tell, so the move of an
			// ignored directory into scope is always announced.
			if !hasWindow(evs, filepath.Join(w, "d")) {
				t.Errorf("the move of an ignored directory into scope was not announced (unwatched_window %s)", filepath.Join(w, "d"))
			}
			if got := s.c.Stats().IgnoreMarks; got != 2 {
				t.Errorf("ignore marks %d after d and d/sub moved into scope, want 2 (x, x/y)", got)
			}

			// Exchange: x (ignored, with x/y) trades places with w/d.
			runHelper(t, "exchange", filepath.Join(sib, "x"), filepath.Join(w, "d"))
			s.waitFor("exchange", func(e *Event) bool { return e.Action == ActionRename && e.Path == filepath.Join(w, "d") })
			sh(t, w, `echo r > d/y/late`)
			s.mark(w)
			evs = s.take()
			if !has(evs, ActionCloseWrite, filepath.Join(w, "d/y/late")) {
				t.Errorf("no close_write d/y/late in the directory exchanged into scope")
			}
			if got := s.c.Stats().IgnoreMarks; got != 0 {
				t.Errorf("ignore marks %d after the exchange, want 0", got)
			}

			// Out again: learned again, its work gone from user space.
			sh(t, mnt, `mv w/d sib/back; echo s > sib/back/y/one`)
			s.mark(w)
			s.take()
			before = s.c.Stats().KernelEvents
			sh(t, sib, `for i in $(seq 100); do echo x >> back/y/one; done`)
			s.mark(w)
			if delta := s.c.Stats().KernelEvents - before; delta > 30 {
				t.Errorf("%d kernel events read for work in a directory moved out and learned again", delta)
			}
			if evs := s.take(); len(evs) != 0 {
				t.Errorf("%d events out of scope, first %s", len(evs), line(&evs[0], mnt))
			}
		})
	}
}

// TestOutOfScopeMarksOff: OutOfScopeMarks < 0 leaves every event to the
// user-space verdicts.
func TestOutOfScopeMarksOff(t *testing.T) {
	mnt := tmpfs(t)
	w, sib := filepath.Join(mnt, "w"), filepath.Join(mnt, "sib")
	mkdirs(t, w, sib)
	s := startSession(t, Options{Paths: []string{w}, Scope: ScopeFilesystem, OutOfScopeMarks: -1})
	before := s.c.Stats().KernelEvents
	sh(t, sib, `for i in $(seq 100); do echo x > f$i; done`)
	s.mark(w)
	if st := s.c.Stats(); st.IgnoreMarks != 0 || st.KernelEvents-before < 100 {
		t.Errorf("ignore marks %d, %d kernel events for 100 files made out of scope", st.IgnoreMarks, st.KernelEvents-before)
	}
}

func hasWindow(evs []Event, dir string) bool {
	for _, e := range evs {
		if e.Action == ActionEventsLost && e.LostReason == ReasonUnwatchedWindow && e.Path == dir {
			return true
		}
	}
	return false
}

// TestIgnoredMovedWhileLagging: the reader lags (Run paused, so the moves
// wait in the kernel queue behind the ignore marks still in place). Work
// in an ignored directory moved into scope by way of another out-of-scope
// place, or moved into scope and away again, or removed, before the agent
// read its move, is announced as unwatched_window: its ignore mark was
// still there, and no timestamp can be checked where it went.
func TestIgnoredMovedWhileLagging(t *testing.T) {
	mnt := tmpfs(t)
	w, out := filepath.Join(mnt, "w"), filepath.Join(mnt, "out")
	mkdirs(t, w, filepath.Join(out, "G", "D"), filepath.Join(out, "E"), filepath.Join(out, "F"))
	s := startSession(t, Options{Paths: []string{w}, Scope: ScopeFilesystem})
	sh(t, out, `echo a > G/D/f; echo a > E/f; echo a > F/f`)
	s.mark(w)
	if got := s.c.Stats().IgnoreMarks; got != 3 {
		t.Fatalf("ignore marks %d after work in 3 out-of-scope directories, want 3", got)
	}
	s.pause()
	sh(t, mnt, `mv out/G out/H; mv out/H w/H; echo s > w/H/D/new
		mv out/E w/E; echo s > w/E/new; mv w/E out/E2
		mv out/F w/F; echo s > w/F/new; rm -r w/F`)
	s.resume()
	s.mark(w)
	evs := s.take()
	for _, d := range []string{"H", "E", "F"} {
		if !hasWindow(evs, filepath.Join(w, d)) {
			t.Errorf("work in w/%s (an ignored directory moved in while the reader lagged) not announced", d)
		}
	}
}

// TestOverflowForgetsVerdicts: an ignored directory moved into scope
// while the kernel queue is full (its rename is lost with the overflow):
// once the reader has caught up, work in it is reported. The overflow
// drops the ignore marks, and also the cached scope verdicts and
// directory names, which the lost rename left stale: they dropped the
// directory's events as out of scope from then on, silently.
func TestOverflowForgetsVerdicts(t *testing.T) {
	mnt := tmpfs(t)
	w, out := filepath.Join(mnt, "w"), filepath.Join(mnt, "out")
	mkdirs(t, filepath.Join(w, "burst"), filepath.Join(out, "D"))
	s := startSession(t, Options{Paths: []string{w}, Scope: ScopeFilesystem})
	sh(t, out, `echo a > D/f`)
	s.mark(w)
	if got := s.c.Stats().IgnoreMarks; got != 1 {
		t.Fatalf("ignore marks %d after work in out/D, want 1", got)
	}
	s.pause()
	runHelper(t, "burst", filepath.Join(w, "burst"), "20000") // ≥ 2 events per file, queue holds 16384
	sh(t, mnt, `mv out/D w/D`)
	s.resume()
	s.mark(w)
	if st := s.c.Stats(); st.Overflows == 0 {
		t.Fatalf("no overflow: %+v", st)
	}
	s.take()
	sh(t, w, `echo b > D/later; mkdir D/sub`)
	s.mark(w)
	evs := s.take()
	for _, want := range []struct {
		a Action
		p string
	}{{ActionCreate, "D/later"}, {ActionCloseWrite, "D/later"}, {ActionCreate, "D/sub"}} {
		if !has(evs, want.a, filepath.Join(w, want.p)) {
			t.Errorf("no %s %s after the overflow", want.a, want.p)
		}
	}
}

// TestIgnoredMovedFromGoneParent: an ignored directory moved between two
// out-of-scope places whose old parent is removed before the agent reads
// the move (its old side can't be named), then moved into scope: its
// ignore mark must not survive there.
func TestIgnoredMovedFromGoneParent(t *testing.T) {
	mnt := tmpfs(t)
	w, out := filepath.Join(mnt, "w"), filepath.Join(mnt, "out")
	mkdirs(t, w, filepath.Join(out, "X", "D"), filepath.Join(out, "Y"))
	s := startSession(t, Options{Paths: []string{w}, Scope: ScopeFilesystem})
	sh(t, out, `echo a > X/D/f`)
	s.mark(w)
	if got := s.c.Stats().IgnoreMarks; got != 1 {
		t.Fatalf("ignore marks %d after work in out/X/D, want 1", got)
	}
	s.pause()
	sh(t, out, `mv X/D Y/D; rmdir X`)
	s.resume()
	s.mark(w)
	sh(t, mnt, `mv out/Y/D w/D`)
	s.waitFor("rename of D", func(e *Event) bool { return e.Action == ActionRename && e.Path == filepath.Join(w, "D") })
	sh(t, w, `echo b > D/later`)
	s.mark(w)
	if evs := s.take(); !has(evs, ActionCloseWrite, filepath.Join(w, "D/later")) {
		t.Errorf("no close_write D/later in a directory moved into scope; stats %+v", s.c.Stats())
	}
}

// TestMovedOutBehindLaggingReader: work in a directory in scope, then
// the directory moved out of scope, while the reader lags by more than
// one read (Run paused): the first reads find the directory out of scope
// by its handle, where it is now, and drop its events; reading the move
// announces them (unwatched_window at the directory where the work was,
// with their count) instead of leaving them silent.
func TestMovedOutBehindLaggingReader(t *testing.T) {
	mnt := tmpfs(t)
	w, out := filepath.Join(mnt, "w"), filepath.Join(mnt, "out")
	mkdirs(t, filepath.Join(w, "old"), out)
	s := startSession(t, Options{Paths: []string{w}, Scope: ScopeFilesystem})
	s.mark(w)
	s.pause()
	sh(t, mnt, `mkdir w/new; for i in $(seq 400); do echo x > w/new/f$i; echo x > w/old/f$i; done; mv w/new out/new; mv w/old out/old`)
	s.resume()
	s.mark(w)
	evs := s.take()
	for _, d := range []string{"new", "old"} {
		p := filepath.Join(w, d)
		if !has(evs, ActionCloseWrite, filepath.Join(p, "f1")) && !hasWindow(evs, p) {
			t.Errorf("work in %s before its move out of scope neither reported nor announced; stats %+v", p, s.c.Stats())
		}
	}
}

// TestExcludedDirRenamed: a directory an exclude glob names gets an
// ignore mark at start, yet a file moved out of it into scope is
// reported, and so is work in it once it is renamed to a name the glob
// does not match (work right after the rename, before the agent reads
// it, is reported or announced).
func TestExcludedDirRenamed(t *testing.T) {
	mnt := tmpfs(t)
	w := filepath.Join(mnt, "w")
	mkdirs(t, filepath.Join(w, "x.tmp"), filepath.Join(w, "y.tmp"))
	s := startSession(t, Options{Paths: []string{w}, Scope: ScopeFilesystem, Exclude: []string{filepath.Join(w, "*.tmp")}})
	if got := s.c.Stats().IgnoreMarks; got != 2 {
		t.Fatalf("ignore marks %d for 2 excluded directories, want 2", got)
	}
	sh(t, w, `echo a > y.tmp/f; mv y.tmp/f f; mv x.tmp x; echo b > x/early`)
	s.waitFor("rename of x", func(e *Event) bool { return e.Action == ActionRename && e.Path == filepath.Join(w, "x") })
	sh(t, w, `echo c > x/later`)
	s.mark(w)
	evs := s.take()
	for _, want := range []struct {
		a Action
		p string
	}{{ActionRename, "f"}, {ActionRename, "x"}, {ActionCreate, "x/later"}, {ActionCloseWrite, "x/later"}} {
		if !has(evs, want.a, filepath.Join(w, want.p)) {
			t.Errorf("no %s %s", want.a, want.p)
		}
	}
	if !has(evs, ActionCloseWrite, filepath.Join(w, "x/early")) && !hasWindow(evs, filepath.Join(w, "x")) {
		t.Errorf("the write right after the rename was neither reported nor announced")
	}
	for _, e := range evs {
		if under(e.Path, filepath.Join(w, "y.tmp")) {
			t.Errorf("excluded: %s", line(&e, mnt))
		}
	}
}

// TestIgnoredMovedInReadAnnounced: an ignored directory moved into scope
// and only read at once, before the agent reads its move: the read was
// ignored by the kernel and changed no timestamp, so only the
// announcement of the move explains it.
func TestIgnoredMovedInReadAnnounced(t *testing.T) {
	for i := 0; i < 3; i++ {
		mnt := tmpfs(t)
		w, sib := filepath.Join(mnt, "w"), filepath.Join(mnt, "sib")
		mkdirs(t, w, filepath.Join(sib, "r"))
		s := startSession(t, Options{Paths: []string{w}, Scope: ScopeFilesystem})
		sh(t, sib, `echo a > r/f`)
		s.mark(w)
		if got := s.c.Stats().IgnoreMarks; got != 1 {
			t.Fatalf("ignore marks %d after work in sib/r, want 1", got)
		}
		sh(t, mnt, `mv sib/r w/r; cat w/r/f >/dev/null`)
		s.mark(w)
		evs := s.take()
		if !has(evs, ActionOpen, filepath.Join(w, "r/f")) && !hasWindow(evs, filepath.Join(w, "r")) {
			t.Errorf("round %d: the read right after the move was neither reported nor announced", i)
		}
		if err := s.stop(); err != nil {
			t.Fatal(err)
		}
	}
}
