package audit

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestBindAloneMovedInNamed: only a bind mount of src/sub is watched,
// under a filesystem mark. Events in out/e (which the bind mount does not
// show, so the kernel names every directory there "/") put ignore marks
// on out/e and out/e/h. Moved into the bound directory, e is in scope:
// its marks go when the move is read, the window before that is
// announced (events_lost naming it), and every later event in it comes,
// named exactly. The marks stayed before (rev6): every later event in e
// was lost without a record.
func TestBindAloneMovedInNamed(t *testing.T) {
	dir := tmpfs(t)
	files("src/", "src/sub/", "out/", "out/e/", "out/e/g", "out/e/h/", "out/e/h/i")(t, dir)
	bind := bindMount(t, filepath.Join(dir, "src", "sub"))
	s := startSession(t, Options{Paths: []string{bind}, Scope: ScopeFilesystem})
	lines := func(keep ...Action) []string {
		var got []string
		for _, e := range s.take() {
			if slices.Contains(keep, e.Action) {
				got = append(got, line(&e, bind))
			}
		}
		slices.Sort(got)
		return slices.Compact(got)
	}
	sh(t, dir, "echo a >> out/e/g && echo a >> out/e/h/i && touch out/e/h/j")
	s.mark(bind)
	if got := lines(ActionModify, ActionCreate, ActionEventsLost); len(got) > 0 {
		t.Errorf("outside the bind mount: got %q", got)
	}
	sh(t, dir, "mv out/e src/sub/e")
	s.mark(bind)
	if got, want := lines(ActionRename, ActionEventsLost), []string{"events_lost ./e (dir)", "rename ./e (dir)"}; !slices.Equal(got, want) {
		t.Errorf("the move in: got %q, want %q", got, want)
	}
	sh(t, dir, "echo b >> src/sub/e/g && echo b >> src/sub/e/h/i && touch src/sub/e/h/k")
	s.mark(bind)
	if got, want := lines(ActionModify, ActionCreate), []string{"create ./e/h/k", "modify ./e/g", "modify ./e/h/i"}; !slices.Equal(got, want) {
		t.Errorf("after the move in: got %q, want %q", got, want)
	}
}

// TestBindAloneExchangedInNamed: as TestBindAloneMovedInNamed, with e
// brought in by renameat2(RENAME_EXCHANGE) with a directory in the bound
// directory.
func TestBindAloneExchangedInNamed(t *testing.T) {
	dir := tmpfs(t)
	files("src/", "src/sub/", "src/sub/x/", "out/", "out/e/", "out/e/g", "out/e/h/", "out/e/h/i")(t, dir)
	bind := bindMount(t, filepath.Join(dir, "src", "sub"))
	s := startSession(t, Options{Paths: []string{bind}, Scope: ScopeFilesystem})
	sh(t, dir, "echo a >> out/e/g && echo a >> out/e/h/i && touch out/e/h/j")
	s.mark(bind)
	s.take()
	runHelper(t, "exchange", filepath.Join(dir, "out", "e"), filepath.Join(dir, "src", "sub", "x"))
	s.mark(bind)
	lost := false
	for _, e := range s.take() {
		lost = lost || e.Action == ActionEventsLost && e.Path == filepath.Join(bind, "x")
	}
	if !lost {
		t.Errorf("no events_lost for %s/x, where e was exchanged into scope", bind)
	}
	sh(t, dir, "echo b >> src/sub/x/g && echo b >> src/sub/x/h/i && touch src/sub/x/h/k")
	s.mark(bind)
	var got []string
	for _, e := range s.take() {
		if e.Action == ActionModify || e.Action == ActionCreate {
			got = append(got, line(&e, bind))
		}
	}
	slices.Sort(got)
	got = slices.Compact(got)
	if want := []string{"create ./x/h/k", "modify ./x/g", "modify ./x/h/i"}; !slices.Equal(got, want) {
		t.Errorf("after the exchange: got %q, want %q", got, want)
	}
}

// TestBindAloneLaggedMoveOut: only a bind mount of src/sub is watched;
// work in d/s (a directory the agent never named) and then the move of d
// out of the bound directory are all queued before the agent reads any
// of it. Read after the move, d/s's handle names nothing (the kernel
// names it "/"): its work is either delivered, by its true path or
// unnamed, or announced at d (events_lost), never dropped without a
// record (the test then waits until its deadlock guard fails it). A small read buffer puts the move in a later read than most of
// the work. Both were dropped without a record before (rev6).
func TestBindAloneLaggedMoveOut(t *testing.T) {
	for _, rb := range []int{0, 8 << 10} {
		t.Run(fmt.Sprint("read_buffer=", rb), func(t *testing.T) {
			dir := tmpfs(t)
			files("src/", "src/sub/", "src/sub/d/", "src/sub/d/s/", "out/")(t, dir)
			bind := bindMount(t, filepath.Join(dir, "src", "sub"))
			s := startSession(t, Options{Paths: []string{bind}, Scope: ScopeFilesystem, ReadBuffer: rb})
			s.mark(bind)
			s.take()
			s.pause()
			sh(t, dir, "for i in $(seq 100); do echo a > src/sub/d/s/f$i; done; mv src/sub/d out/d")
			s.resume()
			// The unnamed records go out when the kernel queue runs
			// empty, which may be after the marker: wait for all of
			// them or the announcement (a deadlock guard fails it).
			work, announced := 0, false
			s.waitFor("the work in d or an events_lost naming d", func(e *Event) bool {
				switch {
				case strings.Contains(e.Path, "/.mark-"):
				case e.Action == ActionEventsLost:
					announced = announced || e.Path == filepath.Join(bind, "d")
				case e.Action == ActionRename:
				case e.Path == "" || strings.HasPrefix(e.Path, filepath.Join(bind, "d", "s", "f")):
					work++
				default:
					t.Errorf("%s %q: a path the work never had", e.Action, e.Path)
				}
				return work >= 400 || announced
			})
			t.Logf("%d work records, announced %v", work, announced)
		})
	}
}
