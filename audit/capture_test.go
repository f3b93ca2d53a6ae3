package audit

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestExactEvents asserts the exact events, in order, with exact paths,
// for each operation, done by a child process on a fresh tmpfs and on a
// fresh loop-mounted ext4.
func TestExactEvents(t *testing.T) {
	type step struct {
		op   string
		args []string // relative to the mount
	}
	tests := []struct {
		name      string
		setup     func(t *testing.T, root string)
		steps     []step
		want      []string
		unordered bool // compare as sets
	}{
		{
			name:  "create write close",
			steps: []step{{"touch", []string{"f"}}},
			want:  []string{"create ./f", "open ./f", "modify ./f", "close_write ./f"},
		},
		{
			name:  "open read-only and read",
			setup: files("f"),
			steps: []step{{"read", []string{"f"}}},
			want:  []string{"open ./f", "access ./f", "close_nowrite ./f"},
		},
		{
			name:  "rename within a directory",
			setup: files("a"),
			steps: []step{{"rename", []string{"a", "b"}}},
			want:  []string{"rename ./b <- ./a", "move_self ./b"},
		},
		{
			name:  "rename across directories",
			setup: files("x/", "y/", "x/a"),
			steps: []step{{"rename", []string{"x/a", "y/a"}}},
			want:  []string{"rename ./y/a <- ./x/a", "move_self ./y/a"},
		},
		{
			name:  "rename a directory then write below it",
			setup: files("d/", "d/e/"),
			steps: []step{{"rename", []string{"d", "d2"}}, {"touch", []string{"d2/e/f"}}},
			want: []string{"rename ./d2 <- ./d (dir)", "move_self ./d2 (dir)",
				"create ./d2/e/f", "open ./d2/e/f", "modify ./d2/e/f", "close_write ./d2/e/f"},
		},
		{
			name:  "unlink",
			setup: files("f"),
			steps: []step{{"unlink", []string{"f"}}},
			want:  []string{"attrib ./f", "delete_self ./f", "delete ./f"},
		},
		{
			name:  "mkdir",
			steps: []step{{"mkdir", []string{"d"}}},
			want:  []string{"create ./d (dir)"},
		},
		{
			name:  "rmdir",
			setup: files("d/"),
			steps: []step{{"rmdir", []string{"d"}}},
			want:  []string{"delete_self ./d (dir)", "delete ./d (dir)"},
		},
		{
			name:  "mkdir then rmdir",
			steps: []step{{"mkdir", []string{"d"}}, {"rmdir", []string{"d"}}},
			want:  []string{"create ./d (dir)", "delete_self ./d (dir)", "delete ./d (dir)"},
		},
		{
			name:  "chmod",
			setup: files("f"),
			steps: []step{{"chmod", []string{"f"}}},
			want:  []string{"attrib ./f"},
		},
		{
			name:  "truncate",
			setup: files("f"),
			steps: []step{{"truncate", []string{"f"}}},
			want:  []string{"modify ./f"},
		},
		{
			name:  "chown",
			setup: files("f"),
			steps: []step{{"chown", []string{"f"}}},
			want:  []string{"attrib ./f"},
		},
		{
			name:  "exec",
			setup: copyTrue,
			steps: []step{{"exec", []string{"true"}}},
			want:  []string{"exec ./true", "access ./true", "close_nowrite ./true"},
		},
		{
			// The kernel merges queued events of one object into one mask,
			// so their order differs by filesystem; the set and the names
			// (never "(deleted)") are exact.
			name:      "write after unlink",
			steps:     []step{{"unlink-open-write", []string{"f"}}},
			want:      []string{"attrib ./f", "close_write ./f", "create ./f", "delete ./f", "delete_self ./f", "modify ./f", "open ./f"},
			unordered: true,
		},
		{
			name:  "non-UTF-8 name",
			steps: []step{{"mkdir", []string{"a\xff\\b"}}},
			want:  []string{`create ./a\xff\\b (dir)`},
		},
	}
	for _, fs := range []struct {
		name  string
		mount func(testing.TB) string
	}{{"tmpfs", tmpfs}, {"ext4", ext4}} {
		for _, tt := range tests {
			t.Run(fs.name+"/"+tt.name, func(t *testing.T) {
				root := fs.mount(t)
				if tt.setup != nil {
					tt.setup(t, root)
				}
				// Every action by name: the kernel's echoes come raw (the
				// default folds them, see TestNames).
				s := startSession(t, Options{Paths: []string{root}, Actions: FileActions()})
				for _, st := range tt.steps {
					args := make([]string, len(st.args))
					for i, a := range st.args {
						args[i] = filepath.Join(root, a)
					}
					runHelper(t, st.op, args...)
				}
				s.mark(root)
				var got []string
				for _, e := range s.take() {
					if e.Pid <= 0 && e.Action != ActionDeleteSelf {
						t.Errorf("%s: pid %d", line(&e, root), e.Pid)
					}
					l := line(&e, root)
					// Repeated access/modify of one file merge in the queue
					// only while unread, so their count depends on timing.
					if n := len(got); n > 0 && got[n-1] == l && (e.Action == ActionAccess || e.Action == ActionModify) {
						continue
					}
					got = append(got, l)
				}
				if tt.unordered {
					slices.Sort(got)
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("events:\n got %q\nwant %q", got, tt.want)
				}
				if st := s.c.Stats(); st.ResolveFailures != 0 || st.DecodeErrors != 0 {
					t.Errorf("stats %+v", st)
				}
			})
		}
	}
}

// files creates files and (with a trailing slash) directories before the
// capture starts.
func files(names ...string) func(t *testing.T, root string) {
	return func(t *testing.T, root string) {
		for _, n := range names {
			p := filepath.Join(root, n)
			var err error
			if strings.HasSuffix(n, "/") {
				err = os.Mkdir(p, 0o755)
			} else {
				err = os.WriteFile(p, []byte("hello"), 0o644)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

func copyTrue(t *testing.T, root string) {
	src, err := os.Open("/bin/true")
	if err != nil {
		t.Skip("no /bin/true")
	}
	defer src.Close()
	dst, err := os.OpenFile(filepath.Join(root, "true"), os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestSelfExclusion: the agent's own activity is never reported.
func TestSelfExclusion(t *testing.T) {
	root := tmpfs(t)
	s := startSession(t, Options{Paths: []string{root}})
	for i := range 10 {
		p := filepath.Join(root, fmt.Sprintf("self%d", i))
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := os.ReadFile(p); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(p, p+".r"); err != nil {
			t.Fatal(err)
		}
	}
	runHelper(t, "touch", filepath.Join(root, "other"))
	s.mark(root)
	me := int32(os.Getpid())
	var other bool
	for _, e := range s.take() {
		if e.Pid == me || strings.Contains(e.Path, "/self") {
			t.Errorf("own event reported: %s pid %d", line(&e, root), e.Pid)
		}
		other = other || strings.HasSuffix(e.Path, "/other")
	}
	if !other {
		t.Error("the helper's event is missing")
	}
	if s.c.Stats().Self == 0 {
		t.Error("Stats.Self is 0")
	}
}

// TestBurst: 100,000 creates in one burst; every create is reported or
// the loss is reported as events_lost.
func TestBurst(t *testing.T) {
	root := tmpfs(t)
	const n = 100000
	s := startSession(t, Options{Paths: []string{root}, Actions: []Action{ActionCreate}})
	runHelper(t, "burst", root, fmt.Sprint(n))
	s.mark(root)
	seen := make(map[string]bool, n)
	lost := 0
	for _, e := range s.take() {
		switch e.Action {
		case ActionCreate:
			if seen[e.Path] {
				t.Fatalf("duplicate create %s", e.Path)
			}
			seen[e.Path] = true
		case ActionEventsLost:
			lost++
			if e.LostReason != ReasonKernelOverflow || e.HasLost {
				t.Errorf("lost event %+v", e)
			}
		default:
			t.Errorf("unexpected %s", line(&e, root))
		}
	}
	st := s.c.Stats()
	t.Logf("creates %d, events_lost %d, stats %+v", len(seen), lost, st)
	if lost == 0 && len(seen) != n {
		t.Fatalf("silent loss: %d of %d creates, no events_lost", len(seen), n)
	}
	if uint64(lost) != st.Overflows {
		t.Errorf("events_lost %d != Stats.Overflows %d", lost, st.Overflows)
	}
}

// TestForcedOverflow: with reading paused the default queue overflows and
// an events_lost record appears.
func TestForcedOverflow(t *testing.T) {
	root := tmpfs(t)
	c, err := New(Options{Paths: []string{root}}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	runHelper(t, "burst", root, "20000") // ≥ 2 events per file, queue holds 16384
	ctx, cancel := contextCancelled()
	defer cancel()
	out := make(chan []Event, 1024)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, out); close(out) }()
	lost := 0
	for evs := range out {
		for i := range evs {
			if evs[i].Action == ActionEventsLost && evs[i].LostReason == ReasonKernelOverflow {
				lost++
			}
			evs[i].Release()
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if lost != 1 || c.Stats().Overflows != 1 {
		t.Fatalf("events_lost %d, stats %+v", lost, c.Stats())
	}
}

// TestReadAhead: while nothing receives Run's output, a burst of over
// three times the kernel queue overflows it without read-ahead or with
// too little, and reaches the receiver whole with enough, once receiving
// resumes; the bytes read ahead stay within the bound.
func TestReadAhead(t *testing.T) {
	// Each file is a create, an open and a close_write: over three times
	// the kernel's queue (16384 events by default; a machine may raise
	// it), and a read-ahead that holds them all at 128 bytes an event.
	files := 20000
	if b, err := os.ReadFile("/proc/sys/fs/fanotify/max_queued_events"); err == nil {
		var q int
		if _, err := fmt.Sscan(string(b), &q); err == nil {
			files = max(files, q*4/3)
		}
	}
	for _, tc := range []struct {
		name     string
		ahead    int
		overflow bool
	}{
		{"none", 0, true},
		{"too little", 256 << 10, true},
		{"enough", max(16<<20, files*3*128), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := tmpfs(t)
			creates, lost := 0, 0
			st := runUnreceived(t, Options{Paths: []string{root}, ReadAhead: tc.ahead}, func() {
				runHelper(t, "burst", root, fmt.Sprint(files))
			}, func(e *Event) {
				switch e.Action {
				case ActionCreate:
					creates++
				case ActionEventsLost:
					lost++
				}
			})
			t.Logf("creates %d of %d, events_lost %d, stats %+v", creates, files, lost, st)
			if uint64(lost) != st.Overflows {
				t.Errorf("events_lost %d != Stats.Overflows %d", lost, st.Overflows)
			}
			// Reads waiting, the one filling and the one being handed
			// over: the bound, and one read more.
			if limit := uint64(tc.ahead + DefaultReadBuffer); st.ReadAheadPeak > limit {
				t.Errorf("read ahead up to %d bytes, the bound is %d", st.ReadAheadPeak, limit)
			}
			if got := st.Overflows > 0; got != tc.overflow {
				t.Fatalf("overflowed: %v, want %v", got, tc.overflow)
			}
			if !tc.overflow && creates != files {
				t.Errorf("%d creates, want %d", creates, files)
			}
		})
	}
}

// TestHeldBehindReadAhead: the agent lags behind by more than the kernel
// queue (read ahead) when a directory it has not named yet is filled,
// emptied and removed: every event in it waits for the rmdir's record and
// is named by it, none goes out unnamed (the hold was capped at the
// kernel queue's 16384 events).
func TestHeldBehindReadAhead(t *testing.T) {
	const files = 6000 // create, open, modify, close_write, delete: 30,000 events
	root := tmpfs(t)
	fill, big := filepath.Join(root, "fill"), filepath.Join(root, "big")
	for _, d := range []string{fill, big} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	inBig, unnamed := 0, 0
	st := runUnreceived(t, Options{Paths: []string{root}, ReadAhead: 16 << 20}, func() {
		// The first reads, which the capture processes before it waits
		// on its output, are fill's: big is not named before it is gone.
		runHelper(t, "churn", fill, "2000")
		runHelper(t, "churn", big, fmt.Sprint(files))
		runHelper(t, "rmdir", big)
	}, func(e *Event) {
		switch {
		case e.Action == ActionEventsLost:
			t.Errorf("events_lost %s", e.LostReason)
		case e.Path == "":
			unnamed++
		case strings.HasPrefix(e.Path, big+"/"):
			inBig++
		}
	})
	t.Logf("named in big %d, unnamed %d, stats %+v", inBig, unnamed, st)
	if unnamed != 0 || st.Unnamed != 0 {
		t.Errorf("%d events unnamed (Stats.Unnamed %d), want none", unnamed, st.Unnamed)
	}
	if inBig < 5*files {
		t.Errorf("%d events named in big, want %d", inBig, 5*files)
	}
}

// runUnreceived runs a Capture on opts while nothing receives its output,
// does work, ends the run (Run reads the queue to empty, then ends),
// hands each event to each, and returns the stats.
func runUnreceived(t *testing.T, opts Options, work func(), each func(*Event)) Stats {
	t.Helper()
	c, err := New(opts, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := contextBackground()
	defer cancel()
	out := make(chan []Event)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, out); close(out) }()
	work()
	cancel()
	for evs := range out {
		for i := range evs {
			each(&evs[i])
			evs[i].Release()
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return c.Stats()
}

// TestDrainOnCancel: events queued when ctx ends are still delivered.
func TestDrainOnCancel(t *testing.T) {
	root := tmpfs(t)
	c, err := New(Options{Paths: []string{root}, UnlimitedQueue: true}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	runHelper(t, "burst", root, "1000")
	ctx, cancel := contextCancelled()
	defer cancel()
	out := make(chan []Event, 1024)
	if err := c.Run(ctx, out); err != nil {
		t.Fatal(err)
	}
	close(out)
	creates := 0
	for evs := range out {
		for i := range evs {
			if evs[i].Action == ActionCreate {
				creates++
			}
			evs[i].Release()
		}
	}
	if creates != 1000 {
		t.Fatalf("creates %d, want 1000; stats %+v", creates, c.Stats())
	}
}

// TestCloseUnblocksRun: Close ends a Run blocked in read.
func TestCloseUnblocksRun(t *testing.T) {
	root := tmpfs(t)
	c, err := New(Options{Paths: []string{root}}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := contextBackground()
	defer cancel()
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		close(started)
		done <- c.Run(ctx, make(chan []Event))
	}()
	<-started
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Run after Close: %v, want os.ErrClosed", err)
	}
}

// TestFDLeak counts /proc/self/fd before and after sessions with events,
// in FID mode (with pidfds and files for hashing) and in fd mode.
func TestFDLeak(t *testing.T) {
	for _, fd := range []bool{false, true} {
		t.Run(fmt.Sprintf("fdmode=%v", fd), func(t *testing.T) {
			root := tmpfs(t)
			before := countFDs(t)
			s := startSession(t, Options{Paths: []string{root}, PidFD: true, OpenForHash: true, forceFDMode: fd})
			for i := range 20 {
				p := filepath.Join(root, fmt.Sprint(i))
				runHelper(t, "touch", p)
				runHelper(t, "read", p)
			}
			last := filepath.Join(root, "last")
			runHelper(t, "touch", last)
			s.waitFor("close_write of last", func(e *Event) bool {
				return e.Action == ActionCloseWrite && e.Path == last
			})
			if err := s.stop(); err != nil {
				t.Fatal(err)
			}
			if after := countFDs(t); after != before {
				t.Fatalf("fds before %d, after %d", before, after)
			}
		})
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestFDMode forces the fd-mode fallback: events carry an fd, are named by
// readlink, and every fd is closed exactly once (see TestFDLeak).
func TestFDMode(t *testing.T) {
	root := tmpfs(t)
	files("f", "g")(t, root)
	s := startSession(t, Options{Paths: []string{root}, forceFDMode: true})
	if !s.c.FDMode() {
		t.Fatal("not in fd mode")
	}
	f, g := filepath.Join(root, "f"), filepath.Join(root, "g")
	runHelper(t, "read", f)
	runHelper(t, "touch", g)
	s.waitFor("close_write g", func(e *Event) bool { return e.Action == ActionCloseWrite && e.Path == g })
	var got []string
	for _, e := range s.take() {
		got = append(got, line(&e, root))
	}
	want := []string{"open ./f", "access ./f", "close_nowrite ./f", "open ./g", "modify ./g", "close_write ./g"}
	if !slices.Equal(got, want) {
		t.Fatalf("events:\n got %q\nwant %q", got, want)
	}
}

// TestIgnoreAndExclude: IgnorePaths and excluded directories get ignore
// marks and are filtered in user space, new files below them included.
func TestIgnoreAndExclude(t *testing.T) {
	root := tmpfs(t)
	files("out/", "cache/", "keep/", "out.log")(t, root)
	s := startSession(t, Options{
		Paths:       []string{root},
		IgnorePaths: []string{filepath.Join(root, "out"), filepath.Join(root, "out.log")},
		Exclude:     []string{filepath.Join(root, "cach?"), "*.tmp"},
	})
	for _, p := range []string{"out/a", "cache/b", "keep/c", "keep/d.tmp", "out.log"} {
		runHelper(t, "touch", filepath.Join(root, p))
	}
	s.mark(root)
	var got []string
	for _, e := range s.take() {
		got = append(got, line(&e, root))
	}
	want := []string{"create ./keep/c", "open ./keep/c", "modify ./keep/c", "close_write ./keep/c"}
	if !slices.Equal(got, want) {
		t.Fatalf("events:\n got %q\nwant %q", got, want)
	}
	// out/a and cache/b are ignored in the kernel; keep/d.tmp and the
	// out.log writes are filtered here (base-name glob; a file ignore
	// mark doesn't cover the create in its parent).
	st := s.c.Stats()
	t.Logf("stats %+v", st)
	if st.Filtered == 0 {
		t.Error("nothing counted as filtered")
	}
}

// TestIgnoreNames: an IgnoreNames glob drops the events of the files it
// names and of a directory it names, but not of what someone puts below
// such a directory: the agent's derived output names are not a place to
// hide work in.
func TestIgnoreNames(t *testing.T) {
	root := tmpfs(t)
	s := startSession(t, Options{
		Paths:       []string{root},
		IgnoreNames: []string{filepath.Join(root, "events.json.*")},
		Actions:     []Action{ActionCreate},
	})
	runHelper(t, "touch", filepath.Join(root, "events.json.20261202T030000.000000000Z"))
	runHelper(t, "mkdir", filepath.Join(root, "events.json.hide"))
	runHelper(t, "touch", filepath.Join(root, "events.json.hide", "f"))
	s.mark(root)
	var got []string
	for _, e := range s.take() {
		got = append(got, line(&e, root))
	}
	want := []string{"create ./events.json.hide/f"}
	if !slices.Equal(got, want) {
		t.Fatalf("events:\n got %q\nwant %q", got, want)
	}
}

// TestTwoFilesystems: roots on two filesystems get a mark and a mount fd
// each, and both are named right.
func TestTwoFilesystems(t *testing.T) {
	a, b := tmpfs(t), tmpfs(t)
	s := startSession(t, Options{Paths: []string{a, b}, Actions: []Action{ActionCreate}})
	runHelper(t, "mkdir", filepath.Join(a, "x"))
	runHelper(t, "mkdir", filepath.Join(b, "y"))
	runHelper(t, "touch", filepath.Join(a, "x", "f"))
	runHelper(t, "touch", filepath.Join(b, "y", "g"))
	s.mark(a)
	s.mark(b)
	var got []string
	for _, e := range s.take() {
		got = append(got, e.Action.String()+" "+e.Path)
	}
	want := []string{"create " + filepath.Join(a, "x"), "create " + filepath.Join(b, "y"),
		"create " + filepath.Join(a, "x", "f"), "create " + filepath.Join(b, "y", "g")}
	if !slices.Equal(got, want) {
		t.Fatalf("events:\n got %q\nwant %q", got, want)
	}
}

// TestWatchedPrefix: under a filesystem mark, events outside the watched
// directory are dropped; under inode marks they never come, and a move
// into the subtree has no old name (the kernel names only the marked
// side) and no move_self (the file carries no mark).
func TestWatchedPrefix(t *testing.T) {
	for _, tc := range []struct {
		scope string
		want  []string
	}{
		{ScopeFilesystem, []string{"rename ./w/x <- ./other/x"}}, // its move_self is folded into it
		{ScopeSubtree, []string{"rename ./w/x"}},
	} {
		t.Run(tc.scope, func(t *testing.T) {
			root := tmpfs(t)
			files("w/", "other/")(t, root)
			w := filepath.Join(root, "w")
			s := startSession(t, Options{Paths: []string{w}, Scope: tc.scope})
			runHelper(t, "touch", filepath.Join(root, "other/x"))
			runHelper(t, "rename", filepath.Join(root, "other/x"), filepath.Join(w, "x"))
			s.mark(w)
			var got []string
			for _, e := range s.take() {
				got = append(got, line(&e, root))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("events:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// TestStatOpenForHashPidFD: Stat by handle, the hashing file on
// close_write and pidfds, in FID mode.
func TestStatOpenForHashPidFD(t *testing.T) {
	root := tmpfs(t)
	ch := make(chan []Event, 64)
	c, err := New(Options{Paths: []string{root}, OpenForHash: true, PidFD: true}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := contextBackground()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, ch) }()
	f, d := filepath.Join(root, "f"), filepath.Join(root, "d")
	runHelper(t, "mkdir", d)
	runHelper(t, "touch", f)
	var sawFile, sawDir, sawHash bool
	pidfds := 0
	for !(sawFile && sawDir && sawHash) {
		for _, e := range <-ch {
			// A pidfd is FAN_NOPIDFD when the helper exited before the
			// read, so its presence is timing; where there is one it must
			// name the event's process.
			if e.PidFD >= 0 {
				pidfds++
				if p := pidfdPid(t, e.PidFD); p != e.Pid && p != -1 {
					t.Errorf("%s: pidfd names pid %d", line(&e, root), p)
				}
			}
			switch {
			case e.Action == ActionCreate && e.Path == d:
				if rf, err := e.Stat(); err != nil || rf.Type != "dir" || !e.Dir {
					t.Errorf("dir stat %+v %v", rf, err)
				}
				sawDir = true
			case e.Action == ActionCreate && e.Path == f:
				if rf, err := e.Stat(); err != nil || rf.Type != "file" || rf.Ino == 0 {
					t.Errorf("file stat %+v %v", rf, err)
				}
				sawFile = true
			case e.Action == ActionCloseWrite && e.Path == f:
				if e.File == nil {
					t.Fatal("close_write without File")
				}
				b, err := io.ReadAll(e.File)
				if err != nil || string(b) != "hello" {
					t.Errorf("hash file read %q %v", b, err)
				}
				if rf, err := e.Stat(); err != nil || rf.Size != 5 {
					t.Errorf("stat via File %+v %v", rf, err)
				}
				sawHash = true
			}
			e.Release()
			e.Release() // a second Release is a no-op
		}
	}
	t.Logf("%d events carried a pidfd", pidfds)
	cancel()
	go func() {
		for evs := range ch {
			for i := range evs {
				evs[i].Release()
			}
		}
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	close(ch)
}

// TestSelfDeleteSelf: when the agent holds the last reference to an
// unlinked file (the hashing File), the kernel blames delete_self on the
// agent. It is reported, named, with Pid 0 rather than dropped.
func TestSelfDeleteSelf(t *testing.T) {
	root := tmpfs(t)
	c, err := New(Options{Paths: []string{root}, OpenForHash: true, Actions: FileActions()}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := contextBackground()
	ch := make(chan []Event, 64)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, ch) }()
	f := filepath.Join(root, "f")
	runHelper(t, "touch", f)
	var held *Event
	next := func(ok func(*Event) bool) *Event {
		t.Helper()
		for {
			for _, e := range <-ch {
				if ok(&e) {
					return &e
				}
				e.Release()
			}
		}
	}
	held = next(func(e *Event) bool { return e.Action == ActionCloseWrite && e.File != nil })
	runHelper(t, "unlink", f)
	if e := next(func(e *Event) bool { return e.Action == ActionDelete }); e.Path != f || e.Pid <= 0 {
		t.Fatalf("delete %s pid %d", e.Path, e.Pid)
	}
	held.Release()
	e := next(func(e *Event) bool { return e.Action == ActionDeleteSelf })
	if e.Path != f || e.Pid != 0 {
		t.Fatalf("delete_self %q pid %d, want %q pid 0", e.Path, e.Pid, f)
	}
	cancel()
	go func() {
		for evs := range ch {
			for i := range evs {
				evs[i].Release()
			}
		}
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	close(ch)
}

// pidfdPid reads the pid a pidfd refers to from its fdinfo.
func pidfdPid(t *testing.T, fd int) int32 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Pid:"); ok {
			var p int32
			fmt.Sscan(strings.TrimSpace(v), &p)
			return p
		}
	}
	t.Fatalf("fd %d is not a pidfd: %s", fd, b)
	return 0
}

type countObserver struct{ n int }

func (o *countObserver) Observe(*Event) { o.n++ }

// TestBatchDelayObserver: with BatchDelay the reader sleeps instead of
// polling and still delivers; the Observer sees every event sent.
func TestBatchDelayObserver(t *testing.T) {
	root := tmpfs(t)
	obs := &countObserver{}
	s := startSession(t, Options{Paths: []string{root}, BatchDelay: 2 * time.Millisecond, Observer: obs})
	runHelper(t, "touch", filepath.Join(root, "f"))
	s.mark(root)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	st := s.c.Stats()
	if uint64(obs.n) != st.Emitted || st.Emitted < 8 {
		t.Fatalf("observed %d, stats %+v", obs.n, st)
	}
}

// execObserver records the exec events it is shown. Observe runs in the
// reader goroutine; the test reads after stop.
type execObserver struct{ execs []string }

func (o *execObserver) Observe(ev *Event) {
	if ev.Action == ActionExec {
		o.execs = append(o.execs, ev.Path)
	}
}

// TestObserverSeesUnreportedExec: with exec not wanted, and with the
// binary outside the watched paths, the Observer is still shown the exec
// (it names short-lived processes' executables), and no exec is reported.
func TestObserverSeesUnreportedExec(t *testing.T) {
	root := tmpfs(t)
	watched := filepath.Join(root, "watched")
	if err := os.Mkdir(watched, 0o755); err != nil {
		t.Fatal(err)
	}
	copyTrue(t, root)
	obs := &execObserver{}
	s := startSession(t, Options{Paths: []string{watched}, Actions: []Action{ActionCreate}, Observer: obs})
	bin := filepath.Join(root, "true")
	runHelper(t, "exec", bin)
	s.mark(watched)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(obs.execs, bin) {
		t.Fatalf("observer saw execs %q, want %s", obs.execs, bin)
	}
	for _, e := range s.take() {
		if e.Action != ActionCreate {
			t.Errorf("reported %s %s; only create is wanted", e.Action, e.Path)
		}
	}
}

// TestExecPaths: a filesystem named in ExecPaths gets an exec-only mark;
// the Observer sees execs of binaries there, and nothing on it is
// reported.
func TestExecPaths(t *testing.T) {
	watched, bins := tmpfs(t), tmpfs(t)
	copyTrue(t, bins)
	obs := &execObserver{}
	s := startSession(t, Options{Paths: []string{watched}, ExecPaths: []string{bins}, Observer: obs})
	bin := filepath.Join(bins, "true")
	runHelper(t, "exec", bin)
	runHelper(t, "touch", filepath.Join(bins, "not-watched"))
	s.mark(watched)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(obs.execs, bin) {
		t.Fatalf("observer saw execs %q, want %s", obs.execs, bin)
	}
	for _, e := range s.take() {
		if strings.HasPrefix(e.Path, bins) {
			t.Errorf("reported %s %s on an exec-only filesystem", e.Action, e.Path)
		}
	}
}
