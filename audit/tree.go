package audit

import (
	"fmt"
	"os"
	"strings"

	"github.com/fanaudit/fanaudit/internal/kernel"
)

// Scope modes (Options.Scope, the contract's [capture] scope).
const (
	ScopeAuto       = "auto"
	ScopeSubtree    = "subtree"
	ScopeFilesystem = "filesystem"
)

// DefaultSubtreeMaxDirs is how many directories auto scope marks one by
// one before it takes a filesystem mark instead. Each inode mark costs the
// kernel about 0.2 KiB (struct fsnotify_mark and its connector) and pins
// the directory's inode and dentry in memory (about 1 KiB on ext4/xfs), so
// 8192 marks pin about 10 MiB, and it counts against
// fs.fanotify.max_user_marks.
const DefaultSubtreeMaxDirs = 8192

// ReasonMarkFailed is events_lost's reason when a directory that appeared
// in a subtree could not be marked and no filesystem mark covers it:
// events in it are not seen from then on.
const ReasonMarkFailed = "mark_failed"

// ReasonUnwatchedWindow is events_lost's reason when a directory that
// appeared in a subtree under inode marks (made there, or moved in) may
// have seen work between its appearance and its mark, or one moved into
// scope from under an ignore mark (see learned) between its move and its
// unignoring, which the kernel never queued: file.path names the
// directory, and the count is unknown (see windowCheck).
const ReasonUnwatchedWindow = "unwatched_window"

// tree is subtree scope: inode marks (dirent events with FID,
// FAN_EVENT_ON_CHILD, FAN_ONDIR) on every directory of the roots that
// use them, following directories as they appear and go. Only the
// reader goroutine touches it.
//
// Decisions:
//   - A directory created in a marked one is marked when its create is
//     read, then scanned: whatever it already holds was made before the
//     mark and its events were never queued, so each entry gets a
//     synthesized create Event (Pid 0, Scanned set) and the scan recurses
//     into subdirectories. The kernel may still report a create the scan
//     already synthesized (made after the mark, before the scan); that
//     duplicate is dropped (synth remembers what was synthesized until its
//     create, delete or rename arrives). Write, close and the other events
//     of such an early entry that happened before its mark are lost: the
//     kernel never queued them. windowCheck announces them (events_lost,
//     reason unwatched_window, naming the directory) as far as the scan
//     and the timestamps can tell.
//   - A directory renamed into the tree is marked with its subtree (no
//     synthesized creates: the rename record covers it); renamed out of
//     it, its marks are removed; within it, the remembered paths move.
//   - A directory whose create or move in is read after it moved on
//     within the tree (mkdir d && mv d e, read after both) has nothing
//     marked at its old path: it is marked at its next rename in the
//     tree, where it went (see markNew); so is one renamed from an
//     excluded name to an included one.
//   - rmdir frees the kernel's mark with the inode; the delete (or the
//     directory's own delete_self) makes the tree forget it.
//   - The walk stays on the root's filesystem and skips directories the
//     scope ignores or excludes (no mark, so their events never come).
//   - In auto scope, when the marks would pass SubtreeMaxDirs at run
//     time, or at any time when the kernel refuses a mark (ENOSPC: the
//     max_user_marks limit), the root's filesystem gets a filesystem mark
//     and the tree stops following; the user-space scope filter keeps the
//     output the same. Where the kernel refuses a filesystem mark (btrfs
//     subvolume, overlayfs) the inode marks go on past the limit, and only
//     a directory that cannot be marked is a loss (events_lost, reason
//     mark_failed).
//   - Under inode marks the kernel reports delete_self and move_self only
//     for marked objects, the directories: a file's unlink is its parent's
//     delete, its rename the parent's rename.
type tree struct {
	mask  uint64
	auto  bool
	max   int
	roots []treeRoot
	dirs  map[string]string   // handle key → escaped path of a marked directory
	synth map[string]struct{} // escaped paths of synthesized creates
	// late: directories whose create (true) or move in (false) was read
	// after they had moved on (mkdir d && mv d e, read after both), so
	// nothing was marked at the path: handle key → made here. Their next
	// rename within the tree marks them where they went.
	late map[string]bool
}

type treeRoot struct {
	path   string // escaped
	dev    uint64
	frozen bool // a filesystem mark took over: no more following
	noFS   bool // the kernel refuses a filesystem mark here: no limit, no fallback
}

const synthMax = 4096

func newTree(mask uint64, auto bool, max int) *tree {
	return &tree{mask: mask, auto: auto, max: max, dirs: make(map[string]string), synth: make(map[string]struct{}), late: make(map[string]bool)}
}

// realPath turns an escaped path back into the bytes the kernel knows.
func realPath(p string) string {
	if !strings.Contains(p, `\`) {
		return p
	}
	b, err := UnescapePath(p)
	if err != nil {
		return p
	}
	return string(b)
}

func (t *tree) root(p string) *treeRoot {
	for i := range t.roots {
		if under(p, t.roots[i].path) {
			return &t.roots[i]
		}
	}
	return nil
}

// countDirs counts the directories markTree would mark under root,
// stopping past limit.
func (c *Capture) countDirs(root string, dev uint64, limit int) int {
	n := 0
	stack := []string{root}
	for len(stack) > 0 && n <= limit {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if p != root && c.scope.pruned(p) {
			continue
		}
		if d, _, isDir, err := kernel.StatDir(realPath(p)); err != nil || !isDir || d != dev {
			continue
		}
		n++
		ents, _ := os.ReadDir(realPath(p))
		for _, e := range ents {
			if e.IsDir() {
				stack = append(stack, joinEscaped(p, e.Name()))
			}
		}
	}
	return n
}

func joinEscaped(dir, name string) string {
	s := make([]byte, 0, len(dir)+1+len(name))
	s = append(s, dir...)
	if len(s) == 0 || s[len(s)-1] != '/' {
		s = append(s, '/')
	}
	return string(appendEscaped(s, []byte(name)))
}

// markTree marks dir and every directory below it on the root's
// filesystem. With synth (a new directory), the entries found get
// synthesized create Events in b (see tree). It returns ok false when a
// mark failed for another reason than the directory going away (failed)
// or auto scope passed SubtreeMaxDirs; the caller falls back. With b not
// nil (a directory that appeared at run time), window says whether
// anything may have happened in it before its marks (see windowCheck).
func (c *Capture) markTree(b *batch, rt *treeRoot, dir string, synth bool) (ok, failed, window bool) {
	t := c.tree
	type item struct {
		path   string
		parent int // index in w of the parent directory; -1 for dir
	}
	stack := []item{{dir, -1}}
	var w *windowCheck
	if b != nil {
		w = &windowCheck{created: synth}
	}
	for len(stack) > 0 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		p := it.path
		if p != rt.path && c.scope.pruned(p) {
			continue
		}
		rp := realPath(p)
		// The statx before the mark also marks the directory's ctime as
		// queried, so a change from here on gets a timestamp of its own.
		st, err := kernel.StatTimes(rp)
		if err != nil || !st.IsDir() || st.Dev != rt.dev {
			continue // gone, replaced, or another filesystem mounted here
		}
		if w != nil && !synth && it.parent < 0 {
			w.ref = c.movedAt(p, st.Ctime)
		}
		id, err := c.group.MarkDir(kernel.MarkAdd, t.mask, rp)
		if err != nil {
			if kernel.NotExist(err) {
				continue
			}
			c.log.Warn().Err(err).Str("path", p).Msg("inode mark failed")
			c.stats.markFails.Add(1)
			c.markErr = err
			return false, true, w.lost()
		}
		if id.Key != "" {
			t.dirs[id.Key] = p
			c.dirs.put([]byte(id.Key), p)
		}
		ents, _ := os.ReadDir(rp)
		idx := w.dir(it.parent, st)
		for _, e := range ents {
			cp := joinEscaped(p, e.Name())
			if synth && b != nil && c.want.has(ActionCreate) && c.scope.allowed(cp) {
				c.synthCreate(b, cp, e.IsDir())
			}
			if e.IsDir() {
				stack = append(stack, item{cp, idx})
			} else if w != nil && !w.suspect && c.scope.allowed(cp) {
				w.entry(cp)
			}
		}
		if w != nil {
			// After the scan: a change made before the mark and undone
			// since (a file made and removed) shows only here.
			post, err := kernel.StatTimes(rp)
			if err != nil {
				post = st
			}
			w.scanned(idx, post)
		}
	}
	c.stats.inodeMarks.Store(uint64(len(t.dirs)))
	if t.auto && !rt.noFS && len(t.dirs) > t.max {
		c.log.Warn().Int("dirs", len(t.dirs)).Int("subtree_max_dirs", t.max).Str("root", rt.path).
			Msg("subtree grew past subtree_max_dirs: switching to a filesystem mark")
		return false, false, w.lost()
	}
	return true, false, w.lost()
}

// windowCheck decides, for a directory that appeared in a marked one
// (made there, or moved in), whether anything may have happened inside it
// between its appearance and its mark: the kernel queued nothing for that
// moment, so it is announced (events_lost, reason unwatched_window). It
// works from what the scan finds and from the timestamps (statx) of the
// directories and files:
//
//   - A new directory: a file found in it was made before the mark (its
//     open, writes and close were not seen; only its create is
//     synthesized); a directory whose mtime is later than its own birth
//     and its subdirectories' births had an entry made and removed (or
//     moved out). A directory found is covered by its synthesized create
//     and checked in turn.
//   - A directory moved in: anything in its subtree, directory or file,
//     whose mtime or ctime is not older than the move (the moved
//     directory's ctime, or its new parent's, whichever is older) changed
//     after the move, or in the same clock tick just before it.
//
// What stays unseen: changes in a new directory that leave it as it was
// (entries made and removed again) within the clock tick of its creation
// and before the agent's first statx of it (Linux stamps them with the
// coarse time, the very one the directory was born with; the statx marks
// the inode so that later changes get fine-grained stamps), and reads
// (open, access, close_nowrite) in a directory moved in, which change no
// timestamp. Without btime (a filesystem that does not keep it) every new
// directory counts as a window: nothing tells its changes from its birth.
type windowCheck struct {
	created bool  // made here, not moved in
	ref     int64 // moved in: when (ns); 0 when unknown
	suspect bool
	dirs    []windowDir
}

type windowDir struct {
	st     kernel.Times // before the mark
	mtime  int64        // after the scan
	ctime  int64
	childB int64 // latest birth of a subdirectory found
}

// movedAt is when the directory at p, whose ctime is ctime, was moved
// in: the older ctime of it and of its new parent (a rename sets both;
// later changes move only one of them, mostly the parent's).
func (c *Capture) movedAt(p string, ctime int64) int64 {
	ref := ctime
	if i := strings.LastIndexByte(p, '/'); i > 0 {
		if pst, err := kernel.StatTimes(realPath(p[:i])); err == nil && pst.Ctime < ref {
			ref = pst.Ctime
		}
	}
	return ref
}

// dir records a directory marked and about to be scanned; it returns its
// index for its subdirectories, -1 without a check.
func (w *windowCheck) dir(parent int, st kernel.Times) int {
	if w == nil {
		return -1
	}
	if parent >= 0 && st.Btime > w.dirs[parent].childB {
		w.dirs[parent].childB = st.Btime
	}
	w.dirs = append(w.dirs, windowDir{st: st, mtime: st.Mtime, ctime: st.Ctime})
	return len(w.dirs) - 1
}

// entry checks a file found by the scan.
func (w *windowCheck) entry(p string) {
	if w.created {
		w.suspect = true // made before the mark (or in the instant after it)
		return
	}
	if w.ref == 0 {
		w.suspect = true
		return
	}
	if st, err := kernel.StatTimes(realPath(p)); err == nil && (st.Mtime >= w.ref || st.Ctime >= w.ref) {
		w.suspect = true
	}
}

func (w *windowCheck) scanned(i int, post kernel.Times) {
	w.dirs[i].mtime, w.dirs[i].ctime = post.Mtime, post.Ctime
}

// lost reports whether the check found a window; false without one.
func (w *windowCheck) lost() bool {
	if w == nil {
		return false
	}
	if w.suspect {
		return true
	}
	for i, d := range w.dirs {
		switch {
		case w.created && !d.st.HasBtime:
			return true // nothing to compare the changes with
		case w.created:
			if d.mtime > max(d.st.Btime, d.childB) {
				return true
			}
		case w.ref == 0:
			return true
		default:
			// The moved directory's own ctime is the move's.
			if d.mtime >= w.ref || i > 0 && d.ctime >= w.ref {
				return true
			}
		}
	}
	return false
}

// announceWindow sends the events_lost record (reason unwatched_window,
// file.path the directory) for a directory that appeared in the tree and
// may have seen work before its mark (see windowCheck).
func (c *Capture) announceWindow(b *batch, dir string, window bool) {
	if !window {
		return
	}
	c.stats.windows.Add(1)
	c.log.Debug().Str("path", dir).Msg("work in a new directory before its mark was not seen")
	ev := c.lostEvent(b.now, ReasonUnwatchedWindow)
	ev.Path, ev.Dir = dir, true
	b.evs = append(b.evs, ev)
}

func (c *Capture) synthCreate(b *batch, p string, dir bool) {
	t := c.tree
	if len(t.synth) >= synthMax {
		clear(t.synth) // at worst a duplicate create later
	}
	t.synth[p] = struct{}{}
	ev := Event{Time: b.now, Action: ActionCreate, Path: p, Dir: dir, PidFD: -1, Scanned: true}
	// The scan's stat is handed over: the entry may be gone by the time
	// enrichment looks.
	if st, err := kernel.Lstat(realPath(p)); err == nil {
		ev.st = &st
	}
	b.evs = append(b.evs, ev)
}

// fallback covers rt's filesystem with a filesystem mark after the tree
// could not follow (a mark failed, or auto scope passed SubtreeMaxDirs).
// Where the kernel refuses filesystem marks there (btrfs subvolume,
// overlayfs), inode marks go on past the limit; only a failed mark is then
// a loss, announced as events_lost.
func (c *Capture) fallback(b *batch, rt *treeRoot, markFailed bool) {
	if rt.frozen {
		return
	}
	if !rt.noFS {
		err := c.group.Mark(kernel.MarkAdd|kernel.MarkFilesystem, c.mask, realPath(rt.path))
		if err == nil {
			rt.frozen = true
			c.log.Warn().Str("root", rt.path).Msg("subtree scope now uses a filesystem mark")
			return
		}
		if !kernel.MarkUnsupported(err) {
			c.log.Error().Err(err).Str("root", rt.path).Msg("no filesystem mark possible")
		}
		rt.noFS = true
	}
	if !markFailed {
		return
	}
	c.log.Error().Str("root", rt.path).Msg("a new directory could not be marked: events in it are lost")
	if b != nil {
		b.evs = append(b.evs, c.lostEvent(b.now, ReasonMarkFailed))
	}
}

// follow keeps the tree's marks in step with the directory event r, after
// emit appended its Events at b.evs[from:].
func (c *Capture) follow(b *batch, from int, r *kernel.RawEvent, obj *kernel.Handle, path, oldPath string) {
	t := c.tree
	if t == nil {
		return
	}
	m := r.Mask
	if len(t.synth) > 0 {
		if m&kernel.FanCreate != 0 && path != "" {
			if _, ok := t.synth[path]; ok {
				delete(t.synth, path)
				kept := b.evs[:from]
				for _, e := range b.evs[from:] {
					if e.Action == ActionCreate && e.Path == path {
						b.filtered++
						continue
					}
					kept = append(kept, e)
				}
				clear(b.evs[len(kept):])
				b.evs = kept
			}
		} else if m&(kernel.FanDelete|kernel.FanRename|kernel.FanMovedFrom) != 0 {
			delete(t.synth, path)
			delete(t.synth, oldPath)
		}
	}
	if m&kernel.FanOnDir == 0 {
		return
	}
	defer func() { c.stats.inodeMarks.Store(uint64(len(t.dirs))) }()
	switch {
	case m&kernel.FanCreate != 0 && path != "":
		if obj.Valid() {
			if _, ok := t.dirs[string(obj.Key)]; ok {
				return // marked by a scan already
			}
		}
		if rt := t.root(path); rt != nil && !rt.frozen {
			c.markNew(b, rt, obj, path, true, false)
		}
	case m&(kernel.FanRename|kernel.FanMovedFrom|kernel.FanMovedTo) != 0:
		oldIn := oldPath != "" && t.root(oldPath) != nil
		newRt := (*treeRoot)(nil)
		if path != "" {
			newRt = t.root(path)
		}
		unmarked := false // a directory moving within the tree with no mark
		if obj.Valid() {
			_, marked := t.dirs[string(obj.Key)]
			unmarked = !marked
		}
		switch {
		case oldIn && newRt != nil && unmarked && !newRt.frozen:
			// Its create or move in was read after it had moved on, or
			// its old name was out of scope: it is marked where it went.
			created, late := t.late[string(obj.Key)]
			c.markNew(b, newRt, obj, path, created, late)
		case oldIn && newRt != nil:
			t.move(oldPath, path)
		case oldIn:
			t.unmark(c, oldPath, path)
			if obj.Valid() {
				delete(t.late, string(obj.Key))
			}
		case newRt != nil && !newRt.frozen:
			c.markNew(b, newRt, obj, path, false, false)
		}
	case m&(kernel.FanDelete|kernel.FanDeleteSelf) != 0:
		// rmdir: the kernel drops the mark with the inode.
		if obj.Valid() {
			delete(t.dirs, string(obj.Key))
			delete(t.late, string(obj.Key))
		}
	}
}

// markNew marks a directory that appeared in the tree at path (made
// there, or moved in), announces its window and falls back when marking
// failed. When what it marked at path is not the event's directory obj
// (obj has moved on since: mkdir d && mv d e, read after both), obj is
// remembered as late and marked at its next rename within the tree.
// late says this is that rename: a directory moved in that moved on
// before its mark has no time to compare its changes with, so its window
// is announced.
func (c *Capture) markNew(b *batch, rt *treeRoot, obj *kernel.Handle, path string, created, late bool) {
	t := c.tree
	ok, failed, window := c.markTree(b, rt, path, created)
	marked := true
	if obj.Valid() {
		_, marked = t.dirs[string(obj.Key)]
		if marked {
			delete(t.late, string(obj.Key))
		} else if ok {
			if len(t.late) >= synthMax {
				clear(t.late) // at worst a directory found late is marked as moved in
			}
			t.late[string(obj.Key)] = created
		}
	}
	if late && !created && marked {
		window = true
	}
	c.announceWindow(b, path, window)
	if !ok {
		c.fallback(b, rt, failed)
	}
}

// move rewrites the remembered paths of a directory renamed within the
// tree and of everything below it.
func (t *tree) move(oldDir, newDir string) {
	for k, v := range t.dirs {
		if under(v, oldDir) {
			t.dirs[k] = newDir + v[len(oldDir):]
		}
	}
}

// unmark removes the marks of a directory renamed out of the tree, now at
// newDir ("" when unknown: the marks stay and the scope filter drops what
// they report).
func (t *tree) unmark(c *Capture, oldDir, newDir string) {
	for k, v := range t.dirs {
		if !under(v, oldDir) {
			continue
		}
		delete(t.dirs, k)
		if newDir == "" {
			continue
		}
		p := realPath(newDir + v[len(oldDir):])
		if err := c.group.Mark(kernel.MarkRemove, t.mask, p); err != nil {
			c.log.Debug().Err(err).Str("path", p).Msg("removing an inode mark failed")
		}
	}
}

// markRoot marks one watched root in FID mode: with a filesystem mark
// (scope filesystem, a filesystem's root, or auto above SubtreeMaxDirs),
// else with inode marks on its subtree. Where the kernel refuses a
// filesystem mark (EXDEV on a btrfs subvolume, EOPNOTSUPP on overlayfs)
// the subtree's inode marks stand in for it.
func (c *Capture) markRoot(root string, fsid uint64, mountinfo []byte) error {
	o := &c.opts
	rp := realPath(root)
	dev, _, _, err := kernel.StatDir(rp)
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	noFS := false
	useFS := o.Scope == ScopeFilesystem || kernel.MountRoot(mountinfo, rp)
	if !useFS && o.Scope == ScopeAuto {
		if n := c.countDirs(root, dev, o.SubtreeMaxDirs); n > o.SubtreeMaxDirs {
			c.log.Info().Str("path", root).Int("subtree_max_dirs", o.SubtreeMaxDirs).
				Msg("more directories than subtree_max_dirs: using a filesystem mark")
			useFS = true
		}
	}
	if useFS {
		if c.fsMark[fsid] {
			return nil // one filesystem mark covers every root on it
		}
		err := c.group.Mark(kernel.MarkAdd|kernel.MarkFilesystem, c.mask, rp)
		if err == nil {
			c.fsMark[fsid] = true
			return nil
		}
		if !kernel.MarkUnsupported(err) {
			return fmt.Errorf("capture: mark %s: %w", root, err)
		}
		c.log.Warn().Err(err).Str("path", root).
			Msg("no filesystem mark possible here (a btrfs subvolume, overlayfs): marking every directory of the subtree instead")
		noFS = true
	}
	if c.opts.Observer != nil && !c.fsMark[fsid] {
		// Enrichment names processes by their execs wherever the binary
		// is; an exec-only filesystem mark keeps those coming (execs are
		// rare, so it costs little).
		if err := c.group.Mark(kernel.MarkAdd|kernel.MarkFilesystem, kernel.FanOpenExec, rp); err != nil {
			c.log.Debug().Err(err).Str("path", root).Msg("no exec mark on the subtree's filesystem")
		}
	}
	if c.tree == nil {
		c.tree = newTree(c.treeMask(), o.Scope == ScopeAuto, o.SubtreeMaxDirs)
	}
	t := c.tree
	t.roots = append(t.roots, treeRoot{path: root, dev: dev, noFS: noFS})
	rt := &t.roots[len(t.roots)-1]
	c.markErr = nil
	ok, failed, _ := c.markTree(nil, rt, root, false)
	switch {
	case ok:
	case failed && kernel.MarkUnsupported(c.markErr):
		// Not the mark limit: the inode marks of a btrfs subvolume carry
		// its own fsid, and one group takes no mix of those with marks
		// on other filesystems or other subvolumes.
		return fmt.Errorf("capture: mark %s: %w: the kernel does not let one fanotify group watch a btrfs subvolume together with paths on other filesystems or subvolumes; run one agent per subvolume", root, c.markErr)
	case noFS && failed:
		return fmt.Errorf("capture: mark %s: an inode mark failed (see fs.fanotify.max_user_marks) and the kernel allows no filesystem mark here", root)
	case noFS: // only past subtree_max_dirs: inode marks are all there is
	default:
		err := c.group.Mark(kernel.MarkAdd|kernel.MarkFilesystem, c.mask, rp)
		switch {
		case err == nil:
			rt.frozen = true
			c.fsMark[fsid] = true
		case !failed && kernel.MarkUnsupported(err):
			rt.noFS = true // past the limit, but inode marks are all there is
		default:
			return fmt.Errorf("capture: mark %s: inode marks failed (see fs.fanotify.max_user_marks) and a filesystem mark too: %w", root, err)
		}
	}
	return nil
}

// treeMask is the inode marks' mask: the filesystem mask, children's
// events, and the directory entry events the tree follows directories by.
func (c *Capture) treeMask() uint64 {
	m := c.mask | kernel.FanEventOnChild | kernel.FanOnDir | kernel.FanCreate | kernel.FanDelete | kernel.FanDeleteSelf
	if c.feat.Rename {
		m |= kernel.FanRename
	} else {
		m |= kernel.FanMovedFrom | kernel.FanMovedTo
	}
	return m
}
