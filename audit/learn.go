package audit

import (
	"strings"

	"github.com/fanaudit/fanaudit/internal/kernel"
)

// DefaultOutOfScopeMarks bounds the ignore marks the capture puts on
// directories found out of scope under a filesystem mark (see learned).
// Each costs the kernel about 0.2 KiB and pins the directory's inode and
// dentry (about 1 KiB), so 4096 pin about 5 MiB, and they count against
// fs.fanotify.max_user_marks.
const DefaultOutOfScopeMarks = 4096

// learned keeps out-of-scope work out of user space under a filesystem
// mark. The first event read from a directory nothing in which can be in
// scope (scope.outside) puts an ignore mark on that directory
// (FAN_MARK_IGNORE with FAN_EVENT_ON_CHILD): from then on the kernel drops
// its files' events itself, before queueing them, as it never queues
// anything outside a subtree under inode marks. Unlike inode marks, this
// leaves nothing in scope unwatched: a directory made in the watched tree
// is covered by the filesystem mark from its first instant.
//
// Decisions:
//   - The ignore mask leaves out renames (a file moved out of an ignored
//     directory into scope must be seen: the kernel drops an event that
//     any of its marks ignores), directory events (FAN_ONDIR: a
//     directory made, removed or moved still comes, to keep the names and
//     this table right), and exec when enrichment observes it. So the
//     kernel still queues those, and renames and directory events of an
//     ignored directory are dropped by the cached verdicts (one decode,
//     one lookup). A file's link count attrib (no parent) still comes.
//   - A directory moved is unignored when its rename is read: every
//     ignore mark it or its subtree holds is removed. Work in it between
//     the move and that moment was never queued; when it lands in scope,
//     that is always announced (events_lost, reason unwatched_window,
//     naming it). No timestamp check decides it, as windowCheck does for
//     inode marks: opens and reads there, even an open for writing that
//     writes nothing, change no timestamp, and they would be lost
//     without a record. A move of an ignored directory into scope is
//     rare; a record that may report nothing lost is the price.
//   - dirs keeps the path each ignored directory was learned at. A
//     directory rename read drops the ignore marks under its old path
//     (see learnMoved); when its old side can't be named, or the kernel
//     queue overflowed (renames may be among what was lost), every
//     ignore mark goes.
//   - A directory move read between two out-of-scope places drops the
//     ignore marks under it, but the kernel ignored its subtree until
//     then, and a later move of it (or of a directory in it) into scope
//     may be queued already: mkdir, mv out/G out/H, mv out/H w/H, work in
//     w/H/D, all before the agent reads the first move. So where it went
//     is kept (moved) until the agent has read everything queued before
//     the marks went (the kernel queue ran empty, see settled), and a move
//     from there into scope is announced like one of an ignored
//     directory. Past max such places, every move into scope from out of
//     scope is, until then.
//   - Past max, an arbitrary ignore mark goes for the new one (a removed
//     directory's mark went with its inode; its entry stays until then).
//     A mark the kernel refuses (max_user_marks) stops the learning.
type learned struct {
	mask uint64
	max  int
	dirs map[string]string // handle key → escaped path of an ignored directory
	off  bool
	// moved: escaped paths, out of scope, where directories whose
	// subtrees held ignore marks moved, since the kernel queue last ran
	// empty; movedAll: more than max of them.
	moved    map[string]struct{}
	movedAll bool
}

// newLearned returns nil when the kernel lacks what the ignore marks need:
// FAN_MARK_IGNORE (6.0, which honours FAN_EVENT_ON_CHILD in an ignore
// mask) and FAN_RENAME (both sides of a move in one event).
func newLearned(mask uint64, max int, ft kernel.Features, observed bool) *learned {
	if max <= 0 || !ft.MarkIgnore || !ft.Rename || !ft.TargetFID {
		return nil
	}
	m := mask &^ (kernel.FanRename | kernel.FanMovedFrom | kernel.FanMovedTo | kernel.FanMoveSelf |
		kernel.FanDeleteSelf | kernel.FanOnDir)
	if observed {
		m &^= kernel.FanOpenExec
	}
	if m == 0 {
		return nil
	}
	return &learned{mask: m | kernel.FanEventOnChild, max: max, dirs: make(map[string]string), moved: make(map[string]struct{})}
}

// learnOut ignores, in the kernel, the directory h at p, found out of
// scope by its first event read.
func (c *Capture) learnOut(h *kernel.Handle, p string) {
	l := c.learn
	if l == nil || l.off || !c.fsMark[h.Fsid()] {
		return
	}
	if _, ok := l.dirs[string(h.Key)]; ok {
		return
	}
	m := c.mount(h.Fsid())
	if m == nil {
		return
	}
	if len(l.dirs) >= l.max {
		for k := range l.dirs {
			c.unignore(k)
			break
		}
	}
	if err := c.group.MarkHandle(kernel.MarkAdd|kernel.MarkIgnoreSurv, l.mask, m.f, h); err != nil {
		if kernel.IsStale(err) {
			return
		}
		l.off = true
		c.stats.markFails.Add(1)
		c.log.Warn().Err(err).Str("path", p).Int("ignore_marks", len(l.dirs)).
			Msg("ignore mark refused: out-of-scope directories are filtered in user space from now on")
		return
	}
	l.dirs[string(h.Key)] = p
	c.stats.ignoreMarks.Store(uint64(len(l.dirs)))
}

// unignore removes the ignore mark of the directory with handle key k.
func (c *Capture) unignore(k string) {
	l := c.learn
	delete(l.dirs, k)
	c.stats.ignoreMarks.Store(uint64(len(l.dirs)))
	h := kernel.Handle{Key: []byte(k)}
	m := c.mount(h.Fsid())
	if m == nil {
		return
	}
	if err := c.group.MarkHandle(kernel.MarkRemove|kernel.MarkIgnoreSurv, l.mask, m.f, &h); err != nil && !kernel.IsStale(err) {
		c.log.Debug().Err(err).Msg("removing an ignore mark failed")
	}
}

// unignoreAll removes every ignore mark the capture put.
func (c *Capture) unignoreAll() {
	if c.learn == nil {
		return
	}
	for k := range c.learn.dirs {
		c.unignore(k)
	}
}

// learnMoved keeps the ignore marks right after the directory at oldPath
// moved to path ("" for a side that could not be named): the ignore marks
// it and its subtree hold go (they are learned again where it went, if
// that is out of scope too), and when it ends up in scope, or its new
// place is unknown, the window in which its work went unqueued is
// announced. Marks are dropped rather than their paths moved, so that a
// path in the table is always the one the directory was learned at:
// renameat2(RENAME_EXCHANGE) split over two reads, say, can't leave an
// entry at the wrong path. A hidden old side (see hidden) names nothing
// either: the kernel names every directory a watched bind mount does not
// show "/" plus at most its own name, so the table's paths of such
// directories are no prefix of it (rev6: a directory moved into a bind
// mount watched alone kept the ignore marks of its subtree, learned
// while it was outside, and its events were never queued).
func (c *Capture) learnMoved(b *batch, oldPath, path string) {
	l := c.learn
	if l == nil || len(l.dirs) == 0 && len(l.moved) == 0 && !l.movedAll {
		return
	}
	if strings.HasPrefix(oldPath, hidden) {
		oldPath = ""
	}
	in := path == "" || !c.scope.outside(path)
	if oldPath == "" {
		// Which ignored directories moved is unknown (their old parent
		// is gone: mv out/x/d out/y/d; rmdir out/x), and the paths in
		// the table may be stale from now on, so that a later move into
		// scope would not find them: none stays ignored (each is learned
		// again at its first event where it is now).
		had := len(l.dirs) > 0
		c.unignoreAll()
		if !in {
			if had {
				l.wasIgnored(path)
			}
			return
		}
		if path != "" {
			c.announceWindow(b, path, true)
		}
		return
	}
	found := l.movedAll && c.scope.outside(oldPath)
	for k, v := range l.dirs {
		if under(v, oldPath) {
			found = true
			c.unignore(k)
		}
	}
	for p := range l.moved {
		if under(p, oldPath) || under(oldPath, p) {
			found = true
		}
	}
	switch {
	case !found:
	case !in:
		l.wasIgnored(path)
	case path == "":
		// Moved where no name is known yet: announced where it was.
		c.announceWindow(b, oldPath, true)
	default:
		c.announceWindow(b, path, true)
	}
}

// learnExchanged handles renameat2(RENAME_EXCHANGE) of the directories at
// a and b (each now at the other's path): an ignored directory on either
// side may have moved into scope, so both sides' marks go.
func (c *Capture) learnExchanged(bt *batch, a, b string) {
	l := c.learn
	if l == nil || len(l.dirs) == 0 {
		return
	}
	if strings.HasPrefix(a, hidden) || strings.HasPrefix(b, hidden) {
		// A side no watched mount shows: which ignored directories
		// moved is unknown (see learnMoved).
		c.unignoreAll()
		for _, p := range []string{a, b} {
			if !c.scope.outside(p) {
				c.announceWindow(bt, p, true)
			}
		}
		return
	}
	var inA, inB bool // ignored directories were under a (now at b), under b (now at a)
	for p := range l.moved {
		inA = inA || under(p, a) || under(a, p)
		inB = inB || under(p, b) || under(b, p)
	}
	if l.movedAll {
		inA, inB = inA || c.scope.outside(a), inB || c.scope.outside(b)
	}
	for k, v := range l.dirs {
		switch {
		case under(v, a):
			inA = true
		case under(v, b):
			inB = true
		default:
			continue
		}
		c.unignore(k)
	}
	if inA && !c.scope.outside(b) {
		c.announceWindow(bt, b, true)
	} else if inA {
		l.wasIgnored(b)
	}
	if inB && !c.scope.outside(a) {
		c.announceWindow(bt, a, true)
	} else if inB {
		l.wasIgnored(a)
	}
}

// wasIgnored notes that the directory now at p (out of scope) held
// ignore marks in its subtree until its move was read (see moved).
func (l *learned) wasIgnored(p string) {
	if len(l.moved) >= l.max {
		l.movedAll = true
		return
	}
	l.moved[p] = struct{}{}
}

// learnSettled: see settled. Every move queued while an ignore mark that
// is gone now was in place has been read.
func (c *Capture) learnSettled() {
	if l := c.learn; l != nil && (len(l.moved) > 0 || l.movedAll) {
		clear(l.moved)
		l.movedAll = false
	}
}
