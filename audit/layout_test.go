package audit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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
// with exact paths.
func checkOps(t *testing.T, s *session, dir string) {
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
			t.Errorf("no path: %s", line(&e, dir))
		}
		if e.Action == ActionEventsLost {
			t.Errorf("events_lost %s", e.LostReason)
		}
	}
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
// logged and reflected in Health; a new mount at the path is watched. A
// filesystem's root (tmpfs, and ext4, xfs and btrfs loop images, mounted
// again from the same image) takes the filesystem mark; a bind mount of a
// subdirectory the inode marks.
func TestUnmountedRoot(t *testing.T) {
	testutil.RequireRoot(t)
	for _, kind := range []string{"tmpfs", "bind-subdir", "ext4", "xfs", "btrfs"} {
		t.Run(kind, func(t *testing.T) {
			bind := kind == "bind-subdir"
			path := mountDir(t, "fanaudit-umount-")
			var src string
			mountIt := func(i int) {
				switch kind {
				case "tmpfs":
					run(t, "mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", path)
				case "bind-subdir":
					d := filepath.Join(src, fmt.Sprint(i))
					mkdirs(t, d)
					run(t, "mount", "--bind", d, path)
				default:
					run(t, "mount", "-o", "loop", src, path)
					os.Remove(filepath.Join(path, "lost+found"))
				}
			}
			switch kind {
			case "bind-subdir":
				src = tmpfs(t)
			case "ext4", "btrfs":
				src = loopImage(t, kind, 128<<20)
			case "xfs":
				src = loopImage(t, kind, 300<<20)
			}
			mountIt(1)
			var logs syncBuffer
			c, err := New(Options{Paths: []string{path}}, zerolog.New(&logs))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Stats().InodeMarks; (got > 0) != bind {
				t.Errorf("%d inode marks", got)
			}
			s := attachSession(t, c)
			checkOps(t, s, path)
			if ok, why := c.Health(); !ok {
				t.Fatalf("unhealthy at start: %s", why)
			}
			run(t, "umount", "-l", path)
			why := waitHealth(t, c, false)
			if !strings.Contains(why, path) {
				t.Errorf("health %q", why)
			}
			// Health changes just before the line that announces it.
			waitLogged(t, &logs, "watched filesystem unmounted")
			mountIt(2)
			waitHealth(t, c, true)
			waitLogged(t, &logs, "watched again")
			checkOps(t, s, path)
		})
	}
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
