package audit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// run runs a command the test needs to succeed.
func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// mountDir makes a directory for a mount and unmounts and removes it when
// the test ends.
func mountDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("umount", "-l", dir).Run()
		os.Remove(dir)
	})
	return dir
}

// btrfs loop-mounts a btrfs image (see loopFS) with a subvolume "sv" and
// returns the mount point.
func btrfs(t testing.TB) string {
	t.Helper()
	dir := loopFS(t, "btrfs", 128<<20)
	run(t, "btrfs", "-q", "subvolume", "create", filepath.Join(dir, "sv"))
	return dir
}

// checkOps runs a few operations in dir and checks they are reported
// with exact paths; it returns how many events it checked.
func checkOps(t *testing.T, s *session, dir string) int {
	t.Helper()
	sh(t, dir, `mkdir sub`)
	// Under inode marks, writes count once the new directory's create is
	// read (TestSubtreeScanRace covers what comes before).
	s.waitFor("create sub", func(e *Event) bool { return e.Action == ActionCreate && e.Path == filepath.Join(dir, "sub") })
	sh(t, dir, `echo x > sub/f; mv sub/f sub/g; rm sub/g; rmdir sub`)
	s.mark(dir)
	evs := s.take()
	for _, want := range []struct {
		a Action
		p string
	}{
		{ActionCreate, "sub"}, {ActionCreate, "sub/f"}, {ActionCloseWrite, "sub/f"},
		{ActionRename, "sub/g"}, {ActionDelete, "sub/g"},
	} {
		if !has(evs, want.a, filepath.Join(dir, want.p)) {
			t.Errorf("no %s %s", want.a, want.p)
		}
	}
	for _, e := range evs {
		if e.Path == "" {
			t.Errorf("no path: %s mask=%#x pid %d (%s)", line(&e, dir), e.Mask, e.Pid, comm(e.Pid))
		}
		if e.Action == ActionEventsLost {
			t.Errorf("events_lost %s", e.LostReason)
		}
	}
	return len(evs)
}

// TestBtrfsSubvolume: a btrfs subvolume directory and a subvol= mount
// refuse filesystem marks (EXDEV); the agent starts on inode marks and
// reports events, in every scope.
func TestBtrfsSubvolume(t *testing.T) {
	mnt := btrfs(t)
	sv := filepath.Join(mnt, "sv")
	svMount := mountDir(t, "fanaudit-subvol-")
	run(t, "mount", "-o", "subvol=sv", mountSource(t, mnt), svMount)
	for _, path := range []string{sv, svMount} {
		for _, scope := range []string{ScopeFilesystem, ScopeAuto, ScopeAuto + "-limit"} {
			t.Run(filepath.Base(path)+"/"+scope, func(t *testing.T) {
				opts := Options{Paths: []string{path}, Scope: scope}
				if scope == ScopeAuto+"-limit" {
					// Past subtree_max_dirs with no filesystem mark to fall
					// back on, the inode marks go on and nothing is lost.
					opts.Scope, opts.SubtreeMaxDirs = ScopeAuto, 1
				}
				s := startSession(t, opts)
				if s.c.Stats().InodeMarks == 0 {
					t.Errorf("no inode marks on a subvolume")
				}
				checkOps(t, s, path)
			})
		}
		// Exec marks (the default exec_paths) go on other filesystems;
		// next to a subvolume's inode marks the kernel refuses them
		// (EXDEV: one group cannot mix their fsids). The watched path
		// comes first: the capture starts without them.
		t.Run(filepath.Base(path)+"/exec-paths", func(t *testing.T) {
			s := startSession(t, Options{Paths: []string{path}, ExecPaths: []string{tmpfs(t)}, Observer: &countObserver{}})
			checkOps(t, s, path)
		})
		// A path on another filesystem can't be watched by the same
		// group, in either order: the capture refuses to start, saying
		// why, rather than blaming the mark limit.
		t.Run(filepath.Base(path)+"/with-another-filesystem", func(t *testing.T) {
			other := tmpfs(t)
			for _, paths := range [][]string{{path, other}, {other, path}} {
				c, err := New(Options{Paths: paths}, testLogger(t))
				if err == nil {
					c.Close()
					t.Fatalf("%v: started", paths)
				}
				if !errors.Is(err, syscall.EXDEV) || !strings.Contains(err.Error(), "one agent per subvolume") {
					t.Errorf("%v: %v", paths, err)
				}
			}
		})
	}
}

// TestOverlayfs: overlayfs as containers use it. The merged directory
// refuses filesystem marks (EOPNOTSUPP) and is watched with inode marks;
// it reports operations by their merged paths, a lower file's first write
// included (copy-up). The upper directory is an ordinary directory on the
// host's filesystem: it reports the overlay's writes as they land there,
// by their upper paths, and nothing for reads of lower files.
func TestOverlayfs(t *testing.T) {
	base := tmpfs(t)
	lower, upper, work := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work")
	mkdirs(t, filepath.Join(lower, "etc"), upper, work)
	for _, n := range []string{"conf", "ro", "gone"} {
		if err := os.WriteFile(filepath.Join(lower, "etc", n), []byte("a\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	merged := mountDir(t, "fanaudit-ovl-")
	run(t, "mount", "-t", "overlay", "overlay", "-o", "lowerdir="+lower+",upperdir="+upper+",workdir="+work, merged)

	t.Run("merged", func(t *testing.T) {
		s := startSession(t, Options{Paths: []string{merged}})
		if s.c.Stats().InodeMarks == 0 {
			t.Errorf("no inode marks on the merged directory")
		}
		checkOps(t, s, merged)
		sh(t, merged, `cat etc/conf > /dev/null; echo b >> etc/conf`)
		s.mark(merged)
		evs := s.take()
		if !has(evs, ActionCloseNowrite, filepath.Join(merged, "etc/conf")) ||
			!has(evs, ActionCloseWrite, filepath.Join(merged, "etc/conf")) {
			t.Errorf("no close_nowrite and close_write of a lower file")
		}
	})
	t.Run("upper", func(t *testing.T) {
		s := startSession(t, Options{Paths: []string{upper}})
		sh(t, merged, `mkdir -p new; echo x > new/f; cat etc/ro >/dev/null; rm etc/gone`)
		s.mark(upper)
		evs := s.take()
		for _, p := range []string{"new", "new/f"} {
			if !has(evs, ActionCreate, filepath.Join(upper, p)) {
				t.Errorf("no create %s in upper", p)
			}
		}
		// A deleted lower file is a whiteout made in the work directory
		// and moved into place.
		if !has(evs, ActionRename, filepath.Join(upper, "etc/gone")) {
			t.Errorf("no rename of the whiteout etc/gone")
		}
		for _, e := range evs {
			if e.Path == "" || !under(e.Path, upper) || strings.HasSuffix(e.Path, "/ro") {
				t.Errorf("unexpected: %s", line(&e, base))
			}
		}
	})
}

// waitHealth waits until the capture's health is ok (a guard bound, not
// a timing assumption: the state changes on the mount table's signal).
func waitHealth(t *testing.T, c *Capture, ok bool) string {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	for {
		got, why := c.Health()
		if got == ok {
			return why
		}
		if time.Now().After(deadline) {
			t.Fatalf("health stayed %v (%s)", got, why)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestUnmountedRoot: a watched filesystem unmounted with umount -l is
// logged and reflected in Health; a new mount at the path is watched, and
// what happens there is reported with exact paths, in a tree that was on
// the filesystem before it was mounted again. A filesystem's root (tmpfs,
// and ext4, xfs and btrfs loop images, mounted again from the same image)
// takes the filesystem mark. The inode-mark layouts (#12 case 8 on them):
// a bind mount of a subdirectory; a btrfs subvolume watched directly (its
// filesystem is unmounted and mounted again, EXDEV for filesystem marks);
// a btrfs subvol= mount (the filesystem stays mounted elsewhere, so the
// subvolume's inodes and their marks outlive the unmount); an overlayfs
// merged directory with the tree in the upper layer, or in the lower one
// (redirect_dir=on), mounted again over the same layers (EOPNOTSUPP).
func TestUnmountedRoot(t *testing.T) {
	testutil.RequireRoot(t)
	for _, kind := range []string{"tmpfs", "bind-subdir", "ext4", "xfs", "btrfs",
		"btrfs-subvolume", "btrfs-subvol-mount", "overlayfs", "overlayfs-lower"} {
		t.Run(kind, func(t *testing.T) {
			inode := kind == "bind-subdir" || strings.HasPrefix(kind, "btrfs-") || strings.HasPrefix(kind, "overlayfs")
			at := mountDir(t, "fanaudit-umount-") // what is unmounted and mounted again
			path := at                            // the watched path
			var src, dev string
			var mountIt func(i int)
			switch kind {
			case "tmpfs":
				mountIt = func(int) { run(t, "mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", at) }
			case "bind-subdir":
				src = tmpfs(t)
				for _, i := range []string{"1", "2"} {
					mkPreTree(t, filepath.Join(src, i))
				}
				mountIt = func(i int) { run(t, "mount", "--bind", filepath.Join(src, fmt.Sprint(i)), at) }
			case "ext4", "xfs", "btrfs", "btrfs-subvolume":
				size := int64(128 << 20)
				if kind == "xfs" {
					size = 300 << 20
				}
				src = testutil.LoopImage(t, strings.TrimSuffix(kind, "-subvolume"), size)
				mountIt = func(int) {
					run(t, "mount", "-o", "loop", src, at)
					os.Remove(filepath.Join(at, "lost+found"))
				}
				if kind == "btrfs-subvolume" {
					path = filepath.Join(at, "sv")
				}
			case "btrfs-subvol-mount":
				base := btrfs(t)
				mkPreTree(t, filepath.Join(base, "sv"))
				dev = mountSource(t, base)
				mountIt = func(int) { run(t, "mount", "-o", "subvol=sv", dev, at) }
			case "overlayfs", "overlayfs-lower":
				base := tmpfs(t)
				lower, upper, work := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work")
				mkdirs(t, lower, upper, work)
				if kind == "overlayfs-lower" {
					mkPreTree(t, lower)
				}
				mountIt = func(int) {
					run(t, "mount", "-t", "overlay", "overlay", "-o",
						"lowerdir="+lower+",upperdir="+upper+",workdir="+work+",redirect_dir=on", at)
				}
			}
			mountIt(1)
			switch kind {
			case "ext4", "xfs", "btrfs", "overlayfs":
				mkPreTree(t, at) // on the filesystem (overlayfs: in the upper layer)
			case "btrfs-subvolume":
				run(t, "btrfs", "-q", "subvolume", "create", path)
				mkPreTree(t, path)
			}
			var logs syncBuffer
			c, err := New(Options{Paths: []string{path}}, zerolog.New(&logs))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Stats().InodeMarks; (got > 0) != inode {
				t.Errorf("%d inode marks", got)
			}
			s := attachSession(t, c)
			checked := checkOps(t, s, path)
			if ok, why := c.Health(); !ok {
				t.Fatalf("unhealthy at start: %s", why)
			}
			run(t, "umount", "-l", at)
			why := waitHealth(t, c, false)
			if !strings.Contains(why, path) {
				t.Errorf("health %q", why)
			}
			// Health changes just before the line that announces it.
			waitLogged(t, &logs, "watched filesystem unmounted")
			mountIt(2)
			waitHealth(t, c, true)
			waitLogged(t, &logs, "watched again")
			if got := c.Stats().InodeMarks; (got > 0) != inode {
				t.Errorf("%d inode marks after the new mount", got)
			}
			if kind != "tmpfs" { // a new tmpfs is empty
				checked += checkPreTree(t, s, path)
			}
			checked += checkOps(t, s, path)
			t.Logf("%s: case 8, %d events checked", kind, checked)
		})
	}
}

// TestUnmountedBindWithSource: a bind mount of a subdirectory watched
// together with its source, in either order, is unmounted: health names
// it, and what happens in the source, bound directory included, is still
// named, by the source's paths (the unmounted path shows nothing now, so
// no name may point into it). A new bind mount at the path is watched
// again.
func TestUnmountedBindWithSource(t *testing.T) {
	for _, first := range []bool{true, false} {
		t.Run(map[bool]string{true: "bind-first", false: "bind-last"}[first], func(t *testing.T) {
			src := tmpfs(t)
			sub, other := filepath.Join(src, "sub"), filepath.Join(src, "other")
			mkdirs(t, sub, other)
			at := mountDir(t, "fanaudit-umount-")
			run(t, "mount", "--bind", sub, at)
			paths := []string{at, src}
			if !first {
				paths = []string{src, at}
			}
			s := startSession(t, Options{Paths: paths})
			// While the bind mount is there, what is in sub is under both
			// watched paths, and named by either.
			canon := func(p string) string {
				if under(p, at) {
					return sub + p[len(at):]
				}
				return p
			}
			s.canon = canon
			checkOps(t, s, other)
			sh(t, at, "echo x > f && rm f") // names sub's handle, through either path
			s.mark(sub)
			s.take()
			s.canon = nil
			run(t, "umount", "-l", at)
			if why := waitHealth(t, s.c, false); !strings.Contains(why, at) {
				t.Errorf("health %q", why)
			}
			checkOps(t, s, sub)
			checkOps(t, s, other)
			run(t, "mount", "--bind", sub, at)
			waitHealth(t, s.c, true)
			s.canon = canon
			sh(t, at, "echo x > g")
			s.mark(sub)
			if evs := s.take(); !has(evs, ActionCloseWrite, filepath.Join(at, "g")) && !has(evs, ActionCloseWrite, filepath.Join(sub, "g")) {
				t.Errorf("no close_write g through the new bind mount")
			}
			checkOps(t, s, other)
		})
	}
}

// mkPreTree makes, in dir, the tree checkPreTree works on.
func mkPreTree(t *testing.T, dir string) {
	t.Helper()
	mkdirs(t, filepath.Join(dir, "pre", "a", "b"), filepath.Join(dir, "pre", "a", "c"))
	for _, f := range []string{"f", "g"} {
		if err := os.WriteFile(filepath.Join(dir, "pre", "a", "b", f), []byte("x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkPreTree writes, moves and deletes in mkPreTree's tree, which was on
// the filesystem before it was mounted at dir, and checks those records
// by their exact paths and that every event is named; it returns how many
// events it checked.
func checkPreTree(t *testing.T, s *session, dir string) int {
	t.Helper()
	sh(t, dir, `echo y >> pre/a/b/f; mv pre/a/b/g pre/a/c/g; rm pre/a/c/g pre/a/b/f; rmdir pre/a/b`)
	s.mark(dir)
	evs := s.take()
	requireNamed(t, s, evs)
	var got []string
	for i := range evs {
		switch evs[i].Action {
		case ActionCloseWrite, ActionRename, ActionDelete:
			got = append(got, line(&evs[i], dir))
		}
	}
	want := []string{"close_write ./pre/a/b/f", "rename ./pre/a/c/g <- ./pre/a/b/g", "delete ./pre/a/c/g",
		"delete ./pre/a/b/f", "delete ./pre/a/b (dir)"}
	// When the reader lags, events in b wait for b's delete to name them
	// and go out just before it (see names.go): compared as sets.
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("pre-existing tree after the new mount:\n got %q\nwant %q\n all %q", got, want, lines(evs, dir))
	}
	return len(evs)
}

// waitLogged waits until the capture has logged a line containing msg.
func waitLogged(t *testing.T, logs *syncBuffer, msg string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), msg) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line %q: %s", msg, logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// syncBuffer is a log sink tests read while the capture writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestRemountRefusedNoLeak: a new mount at an unmounted watched path that
// the capture cannot watch (a btrfs subvol= mount next to another watched
// filesystem: EXDEV) is retried at every later mount table change, and a
// retry that fails keeps nothing open: no mount fd piles up per change.
func TestRemountRefusedNoLeak(t *testing.T) {
	testutil.RequireRoot(t)
	other := tmpfs(t)
	dev := mountSource(t, btrfs(t))
	at := mountDir(t, "fanaudit-refused-")
	run(t, "mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", at)
	var logs syncBuffer
	c, err := New(Options{Paths: []string{other, at}}, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	attachSession(t, c)
	run(t, "umount", "-l", at)
	waitHealth(t, c, false)
	const refused = "cannot watch the new mount"
	attempts := func(n int) {
		t.Helper()
		deadline := time.Now().Add(waitBound)
		for strings.Count(logs.String(), refused) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d attempts to watch the new mount logged, want %d: %s", strings.Count(logs.String(), refused), n, logs.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	run(t, "mount", "-o", "subvol=sv", dev, at)
	attempts(1)
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	before := fds()
	scratch := mountDir(t, "fanaudit-scratch-")
	const changes = 6
	for i := range changes {
		// Each change of the mount table is a retry.
		run(t, "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", scratch)
		attempts(2 + 2*i)
		run(t, "umount", scratch)
		attempts(3 + 2*i)
	}
	if after := fds(); after > before+2 {
		t.Errorf("%d fds open after %d refused retries, %d before", after, 2*changes, before)
	}
	if ok, _ := c.Health(); ok {
		t.Error("healthy with the path unwatched")
	}
}

// TestUnmountedTreeReachedElsewhere: a watched bind mount of a
// subdirectory (inode marks) is unmounted while its source stays mounted,
// unwatched: work in the source, outside every watched path now, is not
// reported (neither named nor unnamed).
func TestUnmountedTreeReachedElsewhere(t *testing.T) {
	src, other := tmpfs(t), tmpfs(t)
	mkdirs(t, filepath.Join(src, "d", "e"))
	at := mountDir(t, "fanaudit-umount-")
	run(t, "mount", "--bind", filepath.Join(src, "d"), at)
	s := startSession(t, Options{Paths: []string{at, other}})
	if s.c.Stats().InodeMarks == 0 {
		t.Fatal("no inode marks on the bind mount")
	}
	checkOps(t, s, at)
	run(t, "umount", "-l", at)
	waitHealth(t, s.c, false)
	sh(t, src, "echo x > d/f && rm d/f && mkdir d/e/g && rmdir d/e/g && ls d/e >/dev/null")
	s.mark(other)
	if evs := s.take(); len(evs) > 0 {
		t.Errorf("events from the unmounted tree, reached through its source: %q", lines(evs, src))
	}
}

// TestRemountStaleTable: the mount table a change brings can predate the
// new mount at an unmounted watched path (another mount on the host came
// just before, and its table was read first). A filesystem's root mounted
// again still takes the filesystem mark, not inode marks.
func TestRemountStaleTable(t *testing.T) {
	at := mountDir(t, "fanaudit-stale-")
	run(t, "mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", at)
	c, err := New(Options{Paths: []string{at}}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.Stats().InodeMarks; got != 0 {
		t.Fatalf("%d inode marks on a filesystem root", got)
	}
	run(t, "umount", "-l", at)
	stale, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	c.checkRoot(&c.roots[0], stale) // what the reader does on the change
	if ok, _ := c.Health(); ok {
		t.Fatal("healthy after the unmount")
	}
	run(t, "mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", at)
	c.checkRoot(&c.roots[0], stale) // the table read before the mount
	if ok, why := c.Health(); !ok {
		t.Fatalf("unhealthy after the new mount: %s", why)
	}
	if got := c.Stats().InodeMarks; got != 0 {
		t.Errorf("%d inode marks on the new filesystem root, want its filesystem mark", got)
	}
}

// TestUnmountKeepsExecMark: a watched bind mount of a filesystem that
// also holds an exec path, unmounted while the filesystem stays mounted.
// The exec path took no mark of its own (the watched path's filesystem
// mark asked for execs) and no mount fd of its own (one per filesystem):
// removing the unmounted path's marks and fd must leave the exec mark and
// a fd to name execs through, or short-lived processes started from
// there lose their attribution.
func TestUnmountKeepsExecMark(t *testing.T) {
	src, other := tmpfs(t), tmpfs(t)
	copyTrue(t, src)
	at := mountDir(t, "fanaudit-umount-")
	run(t, "mount", "--bind", src, at)
	obs := &execObserver{}
	s := startSession(t, Options{Paths: []string{at, other}, ExecPaths: []string{src}, Observer: obs})
	run(t, "umount", "-l", at)
	waitHealth(t, s.c, false)
	bin := filepath.Join(src, "true")
	runHelper(t, "exec", bin)
	s.mark(other)
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(obs.execs, bin) {
		t.Fatalf("after the unmount the observer saw execs %q, want %s", obs.execs, bin)
	}
}

// TestUnmountedBeforeRun: a watched path unmounted after its marks were
// placed (New) and before Run armed the mount-table watch changes nothing
// after the arm; Run still finds it gone.
func TestUnmountedBeforeRun(t *testing.T) {
	at := mountDir(t, "fanaudit-early-")
	run(t, "mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", at)
	c, err := New(Options{Paths: []string{at}}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	run(t, "umount", "-l", at)
	out := make(chan []Event)
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- c.Run(ctx, out) }()
	defer func() {
		cancel()
		for {
			select {
			case <-out:
			case err := <-done:
				if err != nil {
					t.Error(err)
				}
				return
			}
		}
	}()
	waitHealth(t, c, false)
}
