package audit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// TestNames checks that every event of the operations that used to lose
// or confuse names is named exactly, on tmpfs, ext4, xfs and btrfs, with
// trees that existed before the capture started. One image per
// filesystem serves every case, each in its own directory.
func TestNames(t *testing.T) {
	testutil.RequireRoot(t)
	for _, fs := range nameLayouts() {
		t.Run(fs.name, func(t *testing.T) {
			root := fs.mount(t)
			cases, events := 0, 0
			for _, tc := range nameCases() {
				// Raw echoes of files come only under a filesystem mark: an
				// inode mark on the parent reports a file's delete, not its
				// delete_self. Where the kernel refuses filesystem marks
				// (subvolumes, overlayfs) every scope is inode marks: the raw
				// cases lack the files' own echoes, and the fsOnly ones do
				// not hold (see fsOnly).
				scopes := []string{ScopeFilesystem, ScopeSubtree}
				if tc.raw || tc.fsOnly {
					scopes = scopes[:1]
				}
				if tc.inodeMarks {
					scopes = scopes[1:]
				}
				if fs.bind != "" && tc.paths != nil {
					continue // the case's own bind mounts
				}
				if fs.noFSMark {
					if tc.fsOnly {
						continue
					}
					tc.inodeOnly = tc.raw
					scopes = []string{ScopeSubtree}
				}
				for _, sc := range scopes {
					name := tc.name + " " + sc
					ok := t.Run(name, func(t *testing.T) {
						base := strings.NewReplacer(" ", "_", "/", "_").Replace(name)
						var dir string
						if fs.caseDir != nil {
							dir = fs.caseDir(t, root, base)
						} else {
							dir = filepath.Join(root, base)
							if err := os.Mkdir(dir, 0o755); err != nil {
								t.Fatal(err)
							}
						}
						var after func(*testing.T, string) string
						if fs.layer {
							after = overlayOver
						}
						if fs.bind != "" {
							// The case runs through a bind mount of its
							// directory, watched with it, in the layout's order;
							// an object is named under either (both true).
							var src string
							after = func(t *testing.T, d string) string {
								src = d
								return bindMount(t, d)
							}
							tc.paths = func(b string) []string {
								if fs.bind == "first" {
									return []string{b, src}
								}
								return []string{src, b}
							}
							tc.aliasOf = func() string { return src }
						}
						events += tc.check(t, dir, sc, after)
					})
					if ok {
						cases++
					}
				}
			}
			t.Logf("%s: %d cases passed, %d events checked", fs.name, cases, events)
		})
	}
}

// nameLayout is one filesystem or mount layout TestNames runs every case
// on: one image (or mount) per layout, one directory per case.
type nameLayout struct {
	name  string
	mount func(testing.TB) string
	// caseDir makes the watched directory of one case below root; by
	// default a plain directory.
	caseDir func(t *testing.T, root, name string) string
	// noFSMark: the kernel refuses filesystem marks on the watched
	// directories (EXDEV, EOPNOTSUPP); every scope is inode marks.
	noFSMark bool
	// layer: after a case's setup, the directory it made becomes the
	// lower layer of an overlayfs, and the case runs in the merged
	// directory (a container's image files).
	layer bool
	// bind: after a case's setup, its directory is bind-mounted, and the
	// case runs in the bind mount, watched together with its source:
	// "first" (paths = [bind, src]) or "last" (#12 case 7 for every case).
	bind string
}

func nameLayouts() []nameLayout {
	return []nameLayout{
		{name: "tmpfs", mount: tmpfs},
		{name: "ext4", mount: func(t testing.TB) string { return loopFS(t, "ext4", 64<<20) }},
		{name: "xfs", mount: func(t testing.TB) string { return loopFS(t, "xfs", 300<<20) }},
		{name: "btrfs", mount: func(t testing.TB) string { return loopFS(t, "btrfs", 128<<20) }},
		// Each case watches a subvolume of its own, directly.
		{
			name: "btrfs-subvolume", mount: func(t testing.TB) string { return loopFS(t, "btrfs", 128<<20) },
			caseDir: func(t *testing.T, root, name string) string {
				sv := filepath.Join(root, name)
				run(t, "btrfs", "-q", "subvolume", "create", sv)
				return sv
			},
			noFSMark: true,
		},
		// Each case watches a subvol= mount of a subvolume of its own.
		{
			name: "btrfs-subvol-mount", mount: func(t testing.TB) string { return loopFS(t, "btrfs", 128<<20) },
			caseDir: func(t *testing.T, root, name string) string {
				run(t, "btrfs", "-q", "subvolume", "create", filepath.Join(root, name))
				dir := mountDir(t, "fanaudit-subvol-")
				run(t, "mount", "-o", "subvol="+name, mountSource(t, root), dir)
				return dir
			},
			noFSMark: true,
		},
		// An overlayfs merged directory as containers use it (lower, upper
		// and work on one tmpfs); the cases' trees are made through the
		// merged directory before the capture starts, so they live in the
		// upper layer.
		{name: "overlayfs", mount: overlay, noFSMark: true},
		// The same with every pre-existing file in the lower layer: deletes
		// and renames there are whiteouts and copy-ups in the upper one.
		{name: "overlayfs-lower", mount: tmpfs, noFSMark: true, layer: true},
		// Every case through a bind mount watched with its source, in
		// either order.
		{name: "bind-first", mount: tmpfs, bind: "first"},
		{name: "bind-last", mount: tmpfs, bind: "last"},
	}
}

// overlay mounts an overlayfs with lower, upper and work directories on
// a new tmpfs and returns the merged directory.
func overlay(t testing.TB) string {
	t.Helper()
	base := tmpfs(t)
	lower, upper, work := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work")
	mkdirs(t, lower, upper, work)
	merged := mountDir(t, "fanaudit-ovl-")
	run(t, "mount", "-t", "overlay", "overlay", "-o", "lowerdir="+lower+",upperdir="+upper+",workdir="+work, merged)
	return merged
}

// overlayOver mounts an overlayfs with lower as its lower layer (upper
// and work next to it) and returns the merged directory.
func overlayOver(t *testing.T, lower string) string {
	t.Helper()
	upper, work := lower+".upper", lower+".work"
	mkdirs(t, upper, work)
	merged := mountDir(t, "fanaudit-ovl-")
	run(t, "mount", "-t", "overlay", "overlay", "-o", "lowerdir="+lower+",upperdir="+upper+",workdir="+work+",redirect_dir=on", merged)
	return merged
}

// mountSource is the device mounted at dir, without a btrfs subvolume
// suffix.
func mountSource(t testing.TB, dir string) string {
	t.Helper()
	b, err := exec.Command("findmnt", "-no", "SOURCE", dir).Output()
	if err != nil {
		t.Fatalf("findmnt %s: %v", dir, err)
	}
	dev := strings.TrimSpace(string(b))
	if i := strings.IndexByte(dev, '['); i >= 0 {
		dev = dev[:i]
	}
	return dev
}

// nameCase is one operation checked in raw mode (every action asked for
// by name, so the kernel's echoes come as they are) or in the default
// (echoes folded).
type nameCase struct {
	name  string
	raw   bool
	setup func(t *testing.T, dir string) // before the capture starts
	// mounts, if set, runs after setup (and after the overlayfs is
	// mounted over the directory, see nameLayout.layer): bind mounts of
	// what the case watches.
	mounts func(t *testing.T, dir string)
	run    func(t *testing.T, s *session, dir string)
	only   []Action // actions compared; others are only checked for names
	want   func(dir string) []string
	// sorted compares as sets (the kernel merges queued events of one
	// object, so their order varies).
	sorted bool
	paths  func(dir string) []string // the capture's paths; default dir
	markIn string                    // where the end marker goes, below dir
	// fsOnly: under inode marks a directory moved into a new directory
	// that is not marked yet has no new name in the rename record, so
	// the exact intermediate names exist only under a filesystem mark.
	// (Seen on btrfs subvolumes and overlayfs, where there are inode
	// marks alone: that rename often comes with no new path, counted
	// unnamed; never with the directory's later path, see
	// TestRenameThroughUnmarkedDirectory.)
	fsOnly bool
	// inodeMarks: the case runs under inode marks only (subtree scope).
	inodeMarks bool
	// mayMiss: under inode marks these actions may go out unnamed, and
	// counted (their names are unknowable).
	mayMiss []Action
	// throughNew: a directory moves through a directory made the moment
	// before; under inode marks its first rename may go out without a new
	// path (counted), which requireNamed then allows for renames.
	throughNew bool
	// inodeOnly: a raw case under inode marks alone, where a file's own
	// delete_self and move_self and the attrib of a link-count change
	// never come (they go to the file's marks, and files carry none).
	inodeOnly bool
	// lagged: run happens after the marks are placed and before the
	// capture reads anything (run's session is nil): the reader finds
	// every record queued, and the objects already where run left them,
	// as a reader that lags behind a burst does.
	lagged bool
	// aliasOf, if set, returns a watched directory that shows the same
	// objects as the case's: names under it are rewritten to the case's.
	aliasOf func() string
	// accept maps each of several true names of one event to the one want
	// lists.
	accept func(dir string, got []string) []string
}

// check runs the case and returns how many events it checked. after,
// if set, turns the directory the setup filled into the one the case
// watches and runs in.
func (tc *nameCase) check(t *testing.T, dir, scope string, after func(*testing.T, string) string) int {
	if tc.setup != nil {
		tc.setup(t, dir)
	}
	if after != nil {
		dir = after(t, dir)
	}
	if tc.mounts != nil {
		tc.mounts(t, dir)
	}
	opts := Options{Paths: []string{dir}, Scope: scope}
	if tc.paths != nil {
		opts.Paths = tc.paths(dir)
	}
	if tc.raw {
		opts.Actions = FileActions()
	}
	var canon func(string) string
	if tc.aliasOf != nil {
		a := tc.aliasOf()
		canon = func(p string) string {
			if under(p, a) {
				return dir + p[len(a):]
			}
			return p
		}
	}
	var s *session
	if tc.lagged {
		c, err := New(opts, testLogger(t))
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		tc.run(t, nil, dir)
		s = attachSession(t, c)
		s.canon = canon
	} else {
		s = startSession(t, opts)
		s.canon = canon
		tc.run(t, s, dir)
	}
	s.mark(filepath.Join(dir, tc.markIn))
	evs := s.take()
	if s.canon != nil {
		for i := range evs {
			evs[i].Path, evs[i].OldPath = s.canon(evs[i].Path), s.canon(evs[i].OldPath)
		}
	}
	if tc.mayMiss != nil && scope == ScopeSubtree {
		requireCounted(t, s, evs, tc.mayMiss...)
	} else if tc.throughNew && scope == ScopeSubtree {
		// The new side of the move into the directory not marked yet is
		// unknowable: the rename's path, and its move_self's (raw).
		requireCounted(t, s, evs, ActionRename, ActionMoveSelf)
	} else {
		requireNamed(t, s, evs)
	}
	var got []string
	for i := range evs {
		if slices.Contains(tc.only, evs[i].Action) {
			got = append(got, line(&evs[i], dir))
		}
	}
	want := tc.want(dir)
	if tc.inodeOnly {
		want = slices.DeleteFunc(want, func(w string) bool {
			a, _, _ := strings.Cut(w, " ")
			return (a == "delete_self" || a == "move_self" || a == "attrib") && !strings.HasSuffix(w, " (dir)")
		})
	}
	if tc.accept != nil {
		got = tc.accept(dir, got)
	}
	if tc.sorted {
		slices.Sort(got)
		slices.Sort(want)
	}
	if !slices.Equal(got, want) {
		t.Errorf("events:\n got %q\nwant %q\n all %q", got, want, lines(evs, dir))
	}
	return len(evs)
}

// requireNamed: no file event goes without a path unless the capture
// counted it as unnamed (enrichment then marks fanaudit.missing); in these
// cases every name is knowable, so none may be missing at all.
func requireNamed(t testing.TB, s *session, evs []Event) {
	t.Helper()
	requireCounted(t, s, evs)
}

// requireCounted: events of the actions may lack a path when the
// capture counted them as unnamed; every other file event is named.
func requireCounted(t testing.TB, s *session, evs []Event, mayMiss ...Action) {
	t.Helper()
	n := 0
	for i := range evs {
		if evs[i].Action == ActionEventsLost || evs[i].Path != "" {
			continue
		}
		n++
		if !slices.Contains(mayMiss, evs[i].Action) {
			t.Errorf("unnamed: %s mask=%#x pid %d (%s)", evs[i].Action, evs[i].Mask, evs[i].Pid, comm(evs[i].Pid))
		}
	}
	if st := s.c.Stats(); st.Unnamed < uint64(n) {
		t.Errorf("%d events without a path, but Stats.Unnamed = %d", n, st.Unnamed)
	}
}

func nameCases() []nameCase {
	tree := func(t *testing.T, dir string) { mkTree(t, filepath.Join(dir, "t"), 3) }
	treeWant := func(actions ...string) func(dir string) []string {
		return func(dir string) []string {
			var out []string
			for _, p := range treePaths(filepath.Join(dir, "t"), 3) {
				for _, a := range actions {
					out = append(out, a+" "+p)
				}
			}
			return out
		}
	}
	rmrf := func(t *testing.T, s *session, dir string) { sh(t, dir, "rm -rf t") }
	return []nameCase{
		{
			name: "rm -rf of a pre-existing tree", setup: tree, run: rmrf,
			only: []Action{ActionDelete, ActionDeleteSelf, ActionAttrib},
			want: treeWant("delete"), sorted: true,
		},
		{
			name: "rm -rf of a pre-existing tree raw", raw: true, setup: tree, run: rmrf,
			only: []Action{ActionDelete, ActionDeleteSelf},
			want: treeWant("delete", "delete_self"), sorted: true,
		},
		{
			// The directories are cached (find opens each one), and rm -rf's
			// own opendir events take the directories' delete_self.
			name: "rm -rf of a cached tree raw", raw: true, setup: tree,
			run: func(t *testing.T, s *session, dir string) {
				sh(t, dir, "find t >/dev/null")
				s.mark(dir)
				s.take()
				sh(t, dir, "rm -rf t")
			},
			only: []Action{ActionDelete, ActionDeleteSelf},
			want: treeWant("delete", "delete_self"), sorted: true,
		},
		{
			name: "rename over a file", setup: files("t"),
			run:  func(t *testing.T, s *session, dir string) { sh(t, dir, "echo new > t.tmp && mv -f t.tmp t") },
			only: []Action{ActionRename, ActionAttrib, ActionDeleteSelf, ActionMoveSelf, ActionDelete},
			want: func(string) []string { return []string{"rename ./t <- ./t.tmp"} },
		},
		{
			name: "rename over a file raw", raw: true, setup: files("t"),
			run:  func(t *testing.T, s *session, dir string) { sh(t, dir, "echo new > t.tmp && mv -f t.tmp t") },
			only: []Action{ActionRename, ActionAttrib, ActionDeleteSelf, ActionMoveSelf, ActionDelete},
			want: func(string) []string {
				return []string{"attrib ./t", "delete_self ./t", "move_self ./t", "rename ./t <- ./t.tmp"}
			},
			sorted: true,
		},
		{
			name: "hardlinks", setup: files("a"),
			run:  func(t *testing.T, s *session, dir string) { sh(t, dir, "ln a b && rm b && rm a") },
			only: []Action{ActionCreate, ActionDelete, ActionDeleteSelf, ActionAttrib},
			want: func(string) []string { return []string{"create ./b", "delete ./b", "delete ./a"} },
		},
		{
			name: "hardlinks raw", raw: true, setup: files("a"),
			run:  func(t *testing.T, s *session, dir string) { sh(t, dir, "ln a b && rm b && rm a") },
			only: []Action{ActionCreate, ActionDelete, ActionDeleteSelf},
			want: func(string) []string { return []string{"create ./b", "delete ./b", "delete_self ./a", "delete ./a"} },
		},
		{
			name: "exchange of two directories", setup: files("x/", "x/sub/", "y/", "y/sub/"),
			run: func(t *testing.T, s *session, dir string) {
				sh(t, dir, "touch x/sub/f1 y/sub/f1") // the capture caches both
				s.mark(dir)
				runHelper(t, "exchange", filepath.Join(dir, "x"), filepath.Join(dir, "y"))
				sh(t, dir, "touch x/sub/f2 y/sub/f3")
			},
			only: []Action{ActionCreate, ActionRename},
			want: func(string) []string {
				return []string{"create ./x/sub/f1", "create ./y/sub/f1", "rename ./y <- ./x (dir)", "rename ./x <- ./y (dir)",
					"create ./x/sub/f2", "create ./y/sub/f3"}
			},
		},
		{
			name: "directory moved through a temporary directory then removed", setup: files("d/", "d/f"), fsOnly: true,
			run: func(t *testing.T, s *session, dir string) {
				sh(t, dir, "mkdir tmp && mv d tmp/d && mv tmp/d e && rm -r e")
			},
			only: []Action{ActionDelete, ActionDeleteSelf, ActionMoveSelf, ActionRename},
			want: func(string) []string {
				return []string{"rename ./tmp/d <- ./d (dir)", "rename ./e <- ./tmp/d (dir)", "delete ./e/f", "delete ./e (dir)"}
			},
		},
		{
			// Under inode marks the kernel reports a rename's side only where
			// the directory is marked: the move into tmp, made before the
			// capture read tmp's create and marked it, has no new side, and
			// the move out of it no old side unless tmp was marked by then.
			// Those are unknowable (the handle names where d is when read,
			// later) and go out counted; every side the kernel reports is
			// named exactly.
			name: "directory moved through a temporary directory then removed under inode marks", setup: files("d/", "d/f"),
			inodeMarks: true, throughNew: true,
			run: func(t *testing.T, s *session, dir string) {
				sh(t, dir, "mkdir tmp && mv d tmp/d && mv tmp/d e && rm -r e")
			},
			only: []Action{ActionDelete, ActionDeleteSelf, ActionMoveSelf, ActionRename},
			want: func(string) []string {
				return []string{"rename ./tmp/d <- ./d (dir)", "rename ./e <- ./tmp/d (dir)", "delete ./e/f", "delete ./e (dir)"}
			},
			accept: func(dir string, got []string) []string {
				for i, g := range got {
					switch g {
					case "rename ? <- ./d (dir)":
						got[i] = "rename ./tmp/d <- ./d (dir)"
					case "rename ./e (dir)":
						got[i] = "rename ./e <- ./tmp/d (dir)"
					}
				}
				return got
			},
		},
		// Case 5 under inode marks, each state of the race above made
		// certain. What the kernel reports (fanotify_alloc_event: a
		// FAN_RENAME carries OLD_DFID_NAME only when the old directory's
		// inode mark (or a filesystem mark) matched, NEW_DFID_NAME only
		// when the new directory's did; the moved directory's own mark
		// gets a move_self with its own handle and no parent), checked on
		// 6.18 with inode marks on the case directory and d:
		//   mv d tmp/d, tmp not marked: OLD_DFID_NAME(dir, "d") + FID(d),
		//     no new side; moved_from only, no moved_to;
		//   mv tmp/d e, tmp not marked: NEW_DFID_NAME(dir, "e") + FID(d),
		//     no old side; moved_to only.
		// No record carries tmp's handle with the name d, so where the
		// first move put d is in no event; d's handle names where d is
		// when the agent reads the move.
		{
			// tmp is marked before the moves (the capture has read its
			// create): both renames carry both sides, every name exact.
			name: "directory moved through a temporary directory marked first then removed under inode marks", setup: files("d/", "d/f"),
			inodeMarks: true,
			run: func(t *testing.T, s *session, dir string) {
				sh(t, dir, "mkdir tmp")
				s.waitFor("create tmp", func(e *Event) bool {
					return e.Action == ActionCreate && s.canonical(e.Path) == filepath.Join(dir, "tmp")
				})
				sh(t, dir, "mv d tmp/d && mv tmp/d e && rm -r e")
			},
			only: []Action{ActionDelete, ActionDeleteSelf, ActionMoveSelf, ActionRename},
			want: func(string) []string {
				return []string{"rename ./tmp/d <- ./d (dir)", "rename ./e <- ./tmp/d (dir)", "delete ./e/f", "delete ./e (dir)"}
			},
		},
		{
			// tmp is marked after the first move and before the second: the
			// first rename has no new side and the capture reads it while
			// d is still in tmp, so d's handle names it exactly; the second
			// carries both sides.
			name: "directory moved into a temporary directory before its mark then on and removed under inode marks", setup: files("d/", "d/f"),
			inodeMarks: true,
			run: func(t *testing.T, s *session, dir string) {
				s.pause()
				sh(t, dir, "mkdir tmp && mv d tmp/d")
				s.resume()
				s.waitFor("rename tmp/d", func(e *Event) bool { return e.Action == ActionRename && e.Dir })
				sh(t, dir, "mv tmp/d e && rm -r e")
			},
			only: []Action{ActionDelete, ActionDeleteSelf, ActionMoveSelf, ActionRename},
			want: func(string) []string {
				return []string{"rename ./tmp/d <- ./d (dir)", "rename ./e <- ./tmp/d (dir)", "delete ./e/f", "delete ./e (dir)"}
			},
		},
		{
			// tmp is never marked in time (the capture reads everything
			// after the moves): the first rename's new side is in no
			// record and d's handle names nothing (d is gone), so it goes
			// out unnamed and counted; the second has no old side (the
			// kernel gives none). Exactly those two sides are missing,
			// every other name is exact (the deletes in d are named by
			// d's delete).
			name: "directory moved through a temporary directory then removed under inode marks read after all", setup: files("d/", "d/f"),
			inodeMarks: true, lagged: true, mayMiss: []Action{ActionRename},
			run: func(t *testing.T, s *session, dir string) {
				sh(t, dir, "mkdir tmp && mv d tmp/d && mv tmp/d e && rm -r e")
			},
			only: []Action{ActionDelete, ActionDeleteSelf, ActionMoveSelf, ActionRename},
			want: func(string) []string {
				return []string{"rename ? <- ./d (dir)", "rename ./e (dir)", "delete ./e/f", "delete ./e (dir)"}
			},
		},
		{
			// The same with a write inside d while it is in tmp, and a
			// reader that reads it all afterwards: tmp is never marked in
			// time, so the kernel reports neither the move's new side nor
			// the next one's old side, and where d was during the write is
			// unknowable. Its handle names where d went (e): the write goes
			// out unnamed and counted, never as e/f.
			name: "write in a directory moved through a temporary directory under inode marks", setup: files("d/"),
			inodeMarks: true, lagged: true, mayMiss: []Action{ActionRename, ActionCreate, ActionOpen, ActionModify, ActionCloseWrite},
			run: func(t *testing.T, s *session, dir string) {
				sh(t, dir, "mkdir tmp && mv d tmp/d && echo x > tmp/d/f && mv tmp/d e")
			},
			only: []Action{ActionCloseWrite, ActionRename},
			want: func(string) []string {
				return []string{"rename ? <- ./d (dir)", "close_write ?", "rename ./e (dir)"}
			},
			sorted: true,
		},
		{
			// The same through a temporary directory that existed before: its
			// name is known under inode marks too, so this one holds in every
			// scope and on every layout (subvolumes and overlayfs, which
			// refuse filesystem marks, included).
			name: "directory moved through an existing temporary directory then removed", setup: files("d/", "d/f", "tmp/"),
			run: func(t *testing.T, s *session, dir string) {
				sh(t, dir, "mv d tmp/d && mv tmp/d e && rm -r e")
			},
			only: []Action{ActionDelete, ActionDeleteSelf, ActionMoveSelf, ActionRename},
			want: func(string) []string {
				return []string{"rename ./tmp/d <- ./d (dir)", "rename ./e <- ./tmp/d (dir)", "delete ./e/f", "delete ./e (dir)"}
			},
		},
		{
			name: "directory moved through a temporary directory then removed raw", raw: true, setup: files("d/", "d/f"), throughNew: true,
			run: func(t *testing.T, s *session, dir string) {
				sh(t, dir, "mkdir tmp && mv d tmp/d && mv tmp/d e && rm -r e")
			},
			only: []Action{ActionDelete, ActionDeleteSelf},
			want: func(string) []string {
				return []string{"delete ./e/f", "delete_self ./e/f", "delete_self ./e (dir)", "delete ./e (dir)"}
			},
			sorted: true,
		},
		{
			// One operation, one record: the echoes are folded by default.
			name: "unlink rename rmdir folded", setup: files("f", "a", "d/"),
			run:  func(t *testing.T, s *session, dir string) { sh(t, dir, "rm f && mv a b && rmdir d") },
			only: FileActions(),
			want: func(string) []string { return []string{"delete ./f", "rename ./b <- ./a", "delete ./d (dir)"} },
		},
		{
			// The reader lags: by the time it reads the write, the
			// directory's handle names where it went, or nothing (it is
			// gone). The events in it name where it was.
			name: "events in a pre-existing directory then it is renamed and removed", lagged: true,
			setup: files("d/", "d/f", "d/g", "c/"),
			run: func(t *testing.T, s *session, dir string) {
				sh(t, dir, "echo y >> d/f && mv d/g c/g && mv d e && rm e/f && rmdir e")
			},
			only: []Action{ActionCloseWrite, ActionRename, ActionDelete},
			want: func(string) []string {
				return []string{"close_write ./d/f", "rename ./c/g <- ./d/g", "rename ./e <- ./d (dir)", "delete ./e/f", "delete ./e (dir)"}
			},
			sorted: true,
		},
		{
			name: "events in a pre-existing directory then its parent is renamed", lagged: true,
			setup: files("p/", "p/d/", "p/d/f", "p/d/g", "p/c/"),
			run: func(t *testing.T, s *session, dir string) {
				sh(t, dir, "echo y >> p/d/f && mv p/d/g p/c/g && mv p q && echo z > q/d/h")
			},
			only: []Action{ActionCloseWrite, ActionRename, ActionDelete},
			want: func(string) []string {
				return []string{"close_write ./p/d/f", "rename ./p/c/g <- ./p/d/g", "rename ./q <- ./p (dir)", "close_write ./q/d/h"}
			},
			sorted: true,
		},
		{
			// The reader lags, and the directory the write happened in has
			// moved out of a directory that is gone by the time the reader
			// gets there: the write was in s/d, never in e (the handle's
			// path now). Unknowable when read: unnamed and counted, never e/f.
			name: "events in a pre-existing directory then it moves out of its parent and that is removed", lagged: true,
			setup: files("s/", "s/d/", "s/d/f"),
			run: func(t *testing.T, s *session, dir string) {
				sh(t, dir, "echo y >> s/d/f && mv s/d e && rmdir s")
			},
			mayMiss: []Action{ActionOpen, ActionModify, ActionCloseWrite},
			only:    []Action{ActionCloseWrite, ActionRename, ActionDelete},
			want: func(string) []string {
				return []string{"close_write ./s/d/f", "rename ./e <- ./s/d (dir)", "delete ./s (dir)"}
			},
			accept: func(dir string, got []string) []string {
				for i, g := range got {
					if g == "close_write ?" {
						got[i] = "close_write ./s/d/f"
					}
				}
				return got
			},
			sorted: true,
		},
		bindCase("bind mount listed first", true),
		bindCase("bind mount listed last", false),
		bindMoveCase("bind mount listed first moves out and back", true),
		bindMoveCase("bind mount listed last moves out and back", false),
	}
}

// bindMoveCase watches a bind mount of src/sub together with src, in
// either order, and moves directories between the bound directory and
// one outside both paths (out). The side in out is named by its real
// path, through src's mount: through the bind mount, which does not show
// out, the kernel names it "/" (user6: "rename /d <- src/sub/d").
func bindMoveCase(name string, bindFirst bool) nameCase {
	var bind string
	mounts, paths := bindSub(&bind, bindFirst)
	return nameCase{
		name:   name,
		setup:  files("src/", "src/sub/", "src/sub/d/", "src/sub/d/f", "out/", "out/e/", "out/e/g"),
		mounts: mounts,
		paths:  paths,
		run: func(t *testing.T, s *session, dir string) {
			sh(t, dir, "mv src/sub/d out/d && mv out/e src/sub/e")
		},
		markIn: "src",
		only:   []Action{ActionRename},
		sorted: true,
		// Under inode marks the move out is held until the kernel queue
		// runs empty, which may come after the end marker: filesystem
		// marks only, where the kernel names both sides.
		fsOnly: true,
		want: func(string) []string {
			return []string{"rename ./out/d <- ./src/sub/d (dir)", "rename ./src/sub/e <- ./out/e (dir)"}
		},
		accept: func(dir string, got []string) []string {
			for i, g := range got {
				got[i] = strings.ReplaceAll(g, "."+bind+"/", "./src/sub/")
			}
			return got
		},
	}
}

// bindSub gives a case's mounts and paths: a bind mount of src/sub (its
// path in *bind) watched together with src, listed first or last.
func bindSub(bind *string, bindFirst bool) (func(*testing.T, string), func(string) []string) {
	mounts := func(t *testing.T, dir string) {
		*bind = bindMount(t, filepath.Join(dir, "src", "sub"))
	}
	paths := func(dir string) []string {
		if bindFirst {
			return []string{*bind, filepath.Join(dir, "src")}
		}
		return []string{filepath.Join(dir, "src"), *bind}
	}
	return mounts, paths
}

// bindCase watches a bind mount of src/sub together with src, in either
// order: events in src outside sub are named through src's mount, never
// through the bind mount, which does not show them.
func bindCase(name string, bindFirst bool) nameCase {
	var bind string
	mounts, paths := bindSub(&bind, bindFirst)
	return nameCase{
		name:   name,
		setup:  files("src/", "src/sub/", "src/other/", "src/other/deep/"),
		mounts: mounts,
		paths:  paths,
		run: func(t *testing.T, s *session, dir string) {
			sh(t, dir, "touch src/other/x src/other/deep/y src/sub/z")
		},
		markIn: "src",
		only:   []Action{ActionCreate},
		want: func(string) []string {
			return []string{"create ./src/other/x", "create ./src/other/deep/y", "create ./src/sub/z"}
		},
		// Inside the bound directory both names are true: the object is
		// under both watched roots.
		accept: func(dir string, got []string) []string {
			for i, g := range got {
				if g == "create ."+bind+"/z" {
					got[i] = "create ./src/sub/z"
				}
			}
			return got
		},
	}
}

// bindMount bind-mounts src on a new directory, undone when the test ends.
func bindMount(t *testing.T, src string) string {
	t.Helper()
	dst, err := os.MkdirTemp("", "fanaudit-bind-")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "--bind", src, dst).CombinedOutput(); err != nil {
		os.Remove(dst)
		t.Fatalf("mount --bind: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dst).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dst, err, out)
		}
		os.Remove(dst)
	})
	return dst
}

// mkTree makes a tree of the given depth: each directory holds three
// files and, above the last level, two subdirectories.
func mkTree(t *testing.T, root string, depth int) {
	t.Helper()
	base := filepath.Dir(root)
	for _, p := range treePaths(root, depth) {
		p = filepath.Join(base, p)
		if strings.HasSuffix(p, " (dir)") {
			if err := os.MkdirAll(strings.TrimSuffix(p, " (dir)"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, p := range treePaths(root, depth) {
		p = filepath.Join(base, p)
		if !strings.HasSuffix(p, " (dir)") {
			if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// treePaths lists mkTree's paths, directories with a " (dir)" suffix;
// relative to the case directory when root's parent is it ("./t/...").
func treePaths(root string, depth int) []string {
	base := filepath.Dir(root)
	var out []string
	var walk func(d string, level int)
	walk = func(d string, level int) {
		out = append(out, "."+strings.TrimPrefix(d, base)+" (dir)")
		for i := range 3 {
			out = append(out, "."+strings.TrimPrefix(filepath.Join(d, fmt.Sprintf("f%d", i)), base))
		}
		if level < depth {
			for i := range 2 {
				walk(filepath.Join(d, fmt.Sprintf("d%d", i)), level+1)
			}
		}
	}
	walk(root, 1)
	return out
}

// loopFS makes a filesystem image of the given type and size under the
// test's temp dir and loop-mounts it on a new directory; both go when the
// test ends.
func loopFS(t testing.TB, fstype string, size int64) string {
	t.Helper()
	img := testutil.LoopImage(t, fstype, size)
	dir, err := os.MkdirTemp("", "fanaudit-"+fstype+"-")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		os.Remove(dir)
		t.Fatalf("loop mount %s: %v: %s", fstype, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
		os.Remove(dir)
	})
	// lost+found is there from mkfs.ext4; tests expect an empty root.
	os.Remove(filepath.Join(dir, "lost+found"))
	return dir
}

// TestRenameThroughUnmarkedDirectory: under inode marks, a directory moved
// into a directory the capture has not marked yet comes with no new side
// in its rename record; when it moves on before the record is read, the
// handle names its later place. The record must then name where that move
// put it (the old side of the next rename) or go out unnamed and counted,
// never the later path (mkdir t && mv d t/d && mv t/d e once read
// "rename e <- d"). The moves run in one helper process, far faster than
// the reader, so most happen before the capture marks t. On overlayfs,
// where handles never open, the name comes from the scan of t, when the
// capture marked t before d moved on.
func TestRenameThroughUnmarkedDirectory(t *testing.T) {
	for _, fs := range []struct {
		name  string
		mount func(testing.TB) string
	}{{"tmpfs", tmpfs}, {"overlayfs", overlay}} {
		t.Run(fs.name, func(t *testing.T) { renameThroughUnmarked(t, fs.mount(t)) })
	}
}

func renameThroughUnmarked(t *testing.T, root string) {
	dir := filepath.Join(root, "w")
	const n = 40
	for i := range n {
		mkdirs(t, filepath.Join(dir, fmt.Sprintf("d%d", i)))
	}
	s := startSession(t, Options{Paths: []string{dir}, Scope: ScopeSubtree})
	runHelper(t, "through", dir, fmt.Sprint(n))
	s.mark(dir)
	evs := s.take()
	var named, unnamed int
	for i := range evs {
		ev := &evs[i]
		if ev.Action != ActionRename {
			continue
		}
		var k int
		if _, err := fmt.Sscanf(filepath.Base(ev.OldPath), "d%d", &k); err == nil && filepath.Dir(ev.OldPath) == dir {
			// The first move: d<k> -> t<k>/d<k>.
			switch want := filepath.Join(dir, fmt.Sprintf("t%d", k), fmt.Sprintf("d%d", k)); ev.Path {
			case want:
				named++
			case "":
				unnamed++
			default:
				t.Errorf("%s: want %q or unnamed", line(ev, dir), "."+strings.TrimPrefix(want, dir))
			}
			continue
		}
		// The second move: t<k>/d<k> (or unknown) -> e<k>.
		if !strings.HasPrefix(filepath.Base(ev.Path), "e") || filepath.Dir(ev.Path) != dir {
			t.Errorf("unexpected rename %s", line(ev, dir))
		}
	}
	if named+unnamed != n {
		t.Errorf("%d first moves reported, want %d", named+unnamed, n)
	}
	if st := s.c.Stats(); st.Unnamed < uint64(unnamed) {
		t.Errorf("%d renames without a path, Stats.Unnamed = %d", unnamed, st.Unnamed)
	}
	t.Logf("first moves: %d named, %d unnamed and counted", named, unnamed)
}

// TestLaggedUnknowableNotCached: a directory whose path at a lagging
// event is unknowable (it moved out of a directory that is gone by the
// time the reader gets there) is not cached as nameless: what happens in
// it afterwards is named where it is.
func TestLaggedUnknowableNotCached(t *testing.T) {
	for _, scope := range []string{ScopeFilesystem, ScopeSubtree} {
		t.Run(scope, func(t *testing.T) {
			dir := tmpfs(t)
			files("s/", "s/d/", "s/d/f")(t, dir)
			c, err := New(Options{Paths: []string{dir}, Scope: scope}, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			sh(t, dir, "echo y >> s/d/f && mv s/d e && rmdir s")
			s := attachSession(t, c)
			s.mark(dir)
			s.take()
			runHelper(t, "touch", filepath.Join(dir, "e", "g"))
			s.mark(dir)
			if evs := s.take(); !has(evs, ActionCloseWrite, filepath.Join(dir, "e", "g")) {
				t.Errorf("no close_write ./e/g: %q", lines(evs, dir))
			}
		})
	}
}

// TestBindAloneNamesNothingOutside: only a bind mount of src/sub is
// watched. A directory moved from it to out (which the bind mount does
// not show) and one moved from out into it: the kernel names out, through
// the bind mount, "/" (user6: "rename /d", original "/e"). The side in
// out is unknown, so the records have no new path (counted) and no
// original path respectively, never a wrong one.
func TestBindAloneNamesNothingOutside(t *testing.T) {
	dir := tmpfs(t)
	files("src/", "src/sub/", "src/sub/d/", "src/sub/d/f", "out/", "out/e/", "out/e/g")(t, dir)
	bind := bindMount(t, filepath.Join(dir, "src", "sub"))
	s := startSession(t, Options{Paths: []string{bind}, Scope: ScopeFilesystem})
	sh(t, dir, "mv src/sub/d out/d && mv out/e src/sub/e")
	s.mark(bind)
	var got []string
	for _, e := range s.take() {
		if e.Action == ActionRename {
			got = append(got, e.Path+" <- "+e.OldPath)
		}
	}
	slices.Sort(got)
	want := []string{" <- " + bind + "/d", bind + "/e <- "}
	if !slices.Equal(got, want) {
		t.Errorf("renames %q, want %q", got, want)
	}
	if st := s.c.Stats(); st.Unnamed < 1 {
		t.Errorf("Stats.Unnamed = %d, want the rename out counted", st.Unnamed)
	}
}

// comm names a process for a failure message, if it still runs.
func comm(pid int32) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return "gone"
	}
	return strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
}
