package audit

import (
	"math/bits"
	"strings"
	"time"

	"github.com/fanaudit/fanaudit/internal/kernel"
)

// batch is one read's worth of output. Handles and stats the events point
// to live in per-batch slices, so a batch costs a few allocations rather
// than a few per event.
type batch struct {
	now   time.Time
	evs   []Event
	fids  []fileID // capacity fixed at the event count: pointers stay valid
	stats []kernel.Stat
	arena []byte    // handle bytes; a regrow leaves earlier slices intact
	mem   *batchMem // where fids and arena come from, see batchMem

	// The read's events and the one being converted, for lagged, with the
	// directory renames it found after it (see lag.go).
	raw             []kernel.RawEvent
	at              int
	scanned         bool
	lastMove, built int
	moves           []dirMove

	filtered, self, resolveFails, decodeErrs, overflows uint64
}

// process turns a read buffer into Events. With mayHold it may leave
// events at the end of buf unconverted (see holdFrom) and returns how many
// bytes they take; the caller puts them before the next read.
func (c *Capture) process(buf []byte, now time.Time, mayHold bool) ([]Event, int) {
	raw, derr := kernel.Decode(c.raw[:0], buf)
	c.raw = raw[:0]
	keep, full := 0, raw
	if mayHold && derr == nil {
		if i := c.holdFrom(raw); i < len(raw) {
			if k := len(buf) - raw[i].Off; k <= c.opts.ReadBuffer/4 {
				raw, keep = raw[:i], k
			}
		}
	}
	return c.convert(raw, full, derr, now), keep
}

// holdFrom returns the index of the first of the last few events that
// is a handle-only attrib or delete_self of a file whose delete record
// (which names it, see unlinkedName) is not in this read yet: the kernel
// queues them first and the reader can be fast enough to read them alone.
// Holding them back briefly lets the name arrive. len(raw) means none.
func (c *Capture) holdFrom(raw []kernel.RawEvent) int {
	if c.fdMode || !c.feat.TargetFID || c.mask&kernel.FanDelete == 0 {
		return len(raw)
	}
	for i := max(0, len(raw)-lookAhead); i < len(raw); i++ {
		r := &raw[i]
		if r.Err == nil && r.Mask&(kernel.FanRename|kernel.FanOnDir) == kernel.FanRename|kernel.FanOnDir && !otherRename(raw, i) {
			return i // the other half of a RENAME_EXCHANGE may follow
		}
		if r.Err != nil || r.Dir.Valid() || !r.FID.Valid() || r.Mask&kernel.FanOnDir != 0 ||
			r.Mask&(kernel.FanAttrib|kernel.FanDeleteSelf) == 0 {
			continue
		}
		if r.Mask&^(kernel.FanAttrib|kernel.FanOnDir) == 0 && c.fold.has(ActionAttrib) {
			continue // a folded echo needs no name
		}
		// A name in gone may be stale (another link unlinked earlier):
		// the delete that follows is the one to wait for.
		named := false
		for j := i + 1; j < len(raw) && !named; j++ {
			named = raw[j].Mask&kernel.FanDelete != 0 && string(raw[j].FID.Key) == string(r.FID.Key)
		}
		if !named {
			return i
		}
	}
	return len(raw)
}

// otherRename reports whether raw holds a rename record of raw[i]'s
// process other than raw[i].
func otherRename(raw []kernel.RawEvent, i int) bool {
	for j := range raw {
		if j != i && raw[j].Mask&kernel.FanRename != 0 && raw[j].Pid == raw[i].Pid {
			return true
		}
	}
	return false
}

// convert turns decoded events into Events; derr is Decode's error. full
// is raw and the events held back after it (see holdFrom), which only
// lagged looks at.
func (c *Capture) convert(raw, full []kernel.RawEvent, derr error, now time.Time) []Event {
	// One Event per action bit at most, plus a possible decode loss: one
	// exact-size allocation instead of regrowing.
	// Events dropped by their directory's scope verdict cost nothing more.
	b := batch{now: now, raw: full}
	drop := c.dropPass(&b, raw)
	nev, nraw := 1, 0
	for i := range raw {
		if drop == nil || !drop[i] {
			nraw++
			nev += max(1, bits.OnesCount64(raw[i].Mask&allActionBits))
		}
	}
	b.evs = c.events(nev)
	if c.fdMode {
		b.stats = make([]kernel.Stat, 0, nraw)
	} else if nraw > 0 {
		b.mem = c.takeMem(nraw)
		b.fids, b.arena = b.mem.fids, b.mem.arena
	}
	for i := 0; i < len(raw); i++ {
		if drop != nil && drop[i] {
			continue
		}
		b.at = i
		if c.event(&b, raw, i) {
			i++ // the next event was paired with this one
		}
	}
	c.lendMem(&b)
	unhide(b.evs)
	c.countUnnamed(b.evs)
	if derr != nil {
		b.decodeErrs++
		c.log.Warn().Err(derr).Msg("undecodable read buffer; the rest of it is lost")
		b.evs = append(b.evs, c.lostEvent(now, ReasonDecodeError))
	}
	if o := c.opts.Observer; o != nil {
		kept := b.evs[:0]
		for i := range b.evs {
			o.Observe(&b.evs[i])
			if !b.evs[i].observeOnly {
				kept = append(kept, b.evs[i])
			}
		}
		clear(b.evs[len(kept):])
		b.evs = kept
	}
	s := &c.stats
	s.kernel.Add(uint64(len(raw)))
	s.emitted.Add(uint64(len(b.evs)))
	if b.filtered > 0 {
		s.filtered.Add(b.filtered)
	}
	if b.self > 0 {
		s.self.Add(b.self)
	}
	if b.resolveFails > 0 {
		s.resolveFails.Add(b.resolveFails)
	}
	if b.decodeErrs > 0 {
		s.decodeErrs.Add(b.decodeErrs)
	}
	if b.overflows > 0 {
		s.overflows.Add(b.overflows)
	}
	return b.evs
}

// lendMem leaves b's batch memory with its events, for Recycle to give
// back, or takes it back at once when no event points into it (a read
// whose events were all dropped or held).
func (c *Capture) lendMem(b *batch) {
	m := b.mem
	if m == nil {
		return
	}
	// The arena may have grown: keep its last array, which is the one
	// that grew; handles in the earlier one keep that one alive.
	m.fids, m.arena = b.fids, b.arena
	for i := range b.evs {
		if f := b.evs[i].fid; f != nil && f.mem == m {
			return
		}
	}
	c.putMem(m)
}

func (c *Capture) lostEvent(now time.Time, reason string) Event {
	return Event{Time: now, Action: ActionEventsLost, LostReason: reason, PidFD: -1}
}

// event handles raw[i]; it reports whether it also consumed raw[i+1].
func (c *Capture) event(b *batch, raw []kernel.RawEvent, i int) bool {
	r := &raw[i]
	switch {
	case r.Err != nil:
		b.decodeErrs++
		c.log.Warn().Err(r.Err).Uint64("mask", r.Mask).Msg("malformed fanotify event")
		closeRes(r.FD, r.PidFD)
		b.evs = append(b.evs, c.lostEvent(b.now, ReasonDecodeError))
	case r.Mask&kernel.FanQOverflow != 0:
		b.overflows++
		// A rename lost here may have moved an ignored directory into
		// scope: nothing stays ignored on what the table says.
		c.unignoreAll()
		c.forgetNames()
		closeRes(r.FD, r.PidFD)
		b.evs = append(b.evs, c.lostEvent(b.now, ReasonKernelOverflow))
	case c.fdMode:
		c.fdEvent(b, r)
	default:
		return c.fidEvent(b, raw, i)
	}
	return false
}

func closeRes(fd, pidfd int32) {
	if fd >= 0 {
		kernel.CloseFD(fd)
	}
	if pidfd >= 0 {
		kernel.CloseFD(pidfd)
	}
}

// fdEvent names an fd-mode event by readlink of its fd. The fd is closed
// exactly once: here, or by Release when it became Event.File.
func (c *Capture) fdEvent(b *batch, r *kernel.RawEvent) {
	var path string
	var st *kernel.Stat
	if r.FD >= 0 {
		p, s, err := kernel.FDPath(r.FD)
		if err != nil {
			b.resolveFails++
		} else {
			path = escapeString(p)
			b.stats = append(b.stats, s)
			st = &b.stats[len(b.stats)-1]
		}
	}
	c.emit(b, r, path, "", nil, st, false)
}

// fidEvent names an FID event from its records and keeps the handle→path
// caches current.
func (c *Capture) fidEvent(b *batch, raw []kernel.RawEvent, i int) (paired bool) {
	r, next := &raw[i], raw[i+1:]
	if r.Mask&kernel.FanDeleteSelf != 0 && c.againDeleted(r) {
		r.Mask &^= kernel.FanDeleteSelf
		if r.Mask&allActionBits == 0 {
			b.filtered++
			closeRes(r.FD, r.PidFD)
			return false
		}
	}
	dir := r.Mask&kernel.FanOnDir != 0
	var path, oldPath string
	var w wait
	obj := &r.FID
	echo := false // only a handle: an attrib here echoes a link count change
	switch {
	case r.Mask&kernel.FanRename != 0 && (r.OldDir.Valid() || r.NewDir.Valid()):
		// Under inode marks the kernel names only the marked side: a
		// move into the subtree has no old name, a move out of it is
		// named where it went by its handle.
		var oldWait wait
		if r.OldDir.Valid() {
			od := c.resolveDir(b, &r.OldDir)
			oldPath = c.join(b, od, r.OldName)
			if od == "" && c.feat.TargetFID {
				// The old directory is gone by now: the record that names
				// it (its rename or delete, queued later) names this side.
				oldWait = wait{key: string(r.OldDir.Key), name: EscapePath(r.OldName), old: true}
			}
		}
		if obj.Valid() {
			// An earlier rename of this object held for its destination
			// (below) learns it now: where the object was before this move.
			c.namedBefore(b, obj.Key, oldPath)
		}
		if r.NewDir.Valid() {
			nd := c.resolveDir(b, &r.NewDir)
			if nd == "" {
				w = wait{key: string(r.NewDir.Key), name: EscapePath(r.NewName)}
				if dir && obj.Valid() {
					w.child = string(obj.Key)
				}
			}
			path = c.join(b, nd, r.NewName)
		} else if obj.Valid() {
			// Moved into a directory not marked yet: the kernel leaves the
			// new side out. The handle names where the object is now,
			// which is not where this move put it if it has moved again
			// since (mkdir tmp && mv d tmp/d && mv tmp/d e). So the record
			// waits: the object's next rename names, as its old side,
			// where this one put it; a record that names the object first
			// (its delete, say) names it there too. When the kernel queue
			// runs empty with no such record, the handle's path stands:
			// nothing moved it since.
			path = c.resolve(b, obj, dir)
			if path == "" && dir {
				// Its handle does not open (overlayfs never opens
				// them): the name cache is all there is, as for every
				// event in the directory. The scan of the directory it
				// moved into, marked since this move, found it there;
				// a name cached before the move is its old path, which
				// this record contradicts.
				if p, ok := c.dirs.get(obj.Key); ok && p != oldPath {
					path = p
				}
			}
			w = wait{key: string(obj.Key), fallback: path, before: true}
		}
		if dir && oldPath != "" && path != "" {
			c.renameDir(b, raw, i, obj, oldPath, path)
		} else if dir && oldPath != "" {
			// Moved where no name is known yet: the cached names below
			// the old path are wrong now; they are named afresh.
			c.dirs.dropPrefix(oldPath)
			if obj.Valid() {
				c.dirs.del(obj.Key)
			}
			c.learnMoved(b, oldPath, "")
		} else if dir {
			c.learnMoved(b, "", path)
		}
		if obj.Valid() {
			c.namedMoved(b, obj.Key, oldPath, path, oldWait)
		}
		if !w.waiting() && oldWait.waiting() {
			w = oldWait
		}
		c.lastRename.pid, c.lastRename.path = r.Pid, path
		c.lastRename.fid = append(c.lastRename.fid[:0], obj.Key...) // no allocation per rename
	case r.Dir.Valid():
		self := len(r.Name) == 0 || (len(r.Name) == 1 && r.Name[0] == '.')
		if self && !obj.Valid() {
			obj = &r.Dir
		}
		if self && dir && r.Mask&kernel.FanDeleteSelf != 0 {
			path, w = c.deletedDir(b, obj, next)
			break
		}
		d := c.resolveDir(b, &r.Dir)
		path = d
		if !self {
			path = c.join(b, d, r.Name)
		}
		if d == "" && c.feat.TargetFID {
			w = wait{key: string(r.Dir.Key)}
			if !self {
				w.name = EscapePath(r.Name)
				if dir && obj.Valid() {
					w.child = string(obj.Key)
				}
			}
		}
		// Before FAN_REPORT_TARGET_FID a directory entry event has no
		// handle of the child, so the caches learn nothing from it.
		if obj.Valid() && path != "" && !self && c.feat.TargetFID {
			c.dirChange(raw[:i], r, obj, path, dir)
			c.named(b, obj.Key, path)
		}
	case obj.Valid():
		echo = !dir
		if echo && c.fold.has(ActionAttrib) && r.Mask&^(kernel.FanAttrib|kernel.FanOnDir) == 0 {
			b.filtered++ // a folded echo alone: not worth naming
			closeRes(r.FD, r.PidFD)
			return false
		}
		path, w = c.handleName(b, raw, i, obj, dir)
	}
	if r.Mask&(kernel.FanMovedFrom|kernel.FanRename) == kernel.FanMovedFrom {
		// Before FAN_RENAME the two names come as separate events, queued
		// one after the other: pair them into one rename when the next
		// event is the moved_to of the same process. Otherwise report the
		// old name alone, as OldPath.
		oldPath, path, w = path, "", wait{}
		if len(next) > 0 {
			n := &next[0]
			if n.Mask&kernel.FanMovedTo != 0 && n.Pid == r.Pid && n.Err == nil && n.Dir.Valid() &&
				(n.Mask&^(kernel.FanMovedTo|kernel.FanOnDir)) == 0 {
				path = c.join(b, c.resolveDir(b, &n.Dir), n.Name)
				if dir && oldPath != "" && path != "" {
					// The subtree's cached names moved too.
					c.dirs.movePrefix(oldPath, path)
				}
				closeRes(n.FD, n.PidFD)
				paired = true
			}
		}
	}
	from := len(b.evs)
	c.emit(b, r, path, oldPath, c.fileID(b, obj), nil, echo)
	if w.before {
		// Only the rename's own record waits; what follow adds (a loss
		// record when a mark fails) goes out as it is.
		c.hold(b, from, w)
		c.follow(b, len(b.evs), r, obj, path, oldPath)
		return paired
	}
	c.follow(b, from, r, obj, path, oldPath)
	if w.waiting() {
		c.hold(b, from, w)
	}
	return paired
}

// againDeleted reports whether r's delete_self repeats one already read:
// when the agent opens an unlinked directory by its handle (naming an
// event of it), the kernel can instantiate a second dentry for the inode
// and report delete_self again as the agent closes it, blamed on the
// agent. The handles of the delete_selfs read are remembered (bounded).
func (c *Capture) againDeleted(r *kernel.RawEvent) bool {
	h := &r.FID
	if !h.Valid() {
		h = &r.Dir
	}
	if !h.Valid() {
		return false
	}
	if r.Pid == c.self {
		if _, ok := c.deletedSelf[string(h.Key)]; ok {
			return true
		}
	}
	if c.deletedSelf == nil || len(c.deletedSelf) >= goneCacheSize {
		c.deletedSelf = make(map[string]struct{})
	}
	c.deletedSelf[string(h.Key)] = struct{}{}
	return false
}

// handleName names an object the event gives only a handle of: it is
// unlinked (attrib of the link count, delete_self), moved (move_self), or
// a live object. In order: the delete record that follows and names it
// (the kernel queues attrib and delete_self of an unlinked inode before
// the parent's delete, and by the time they are read the handle no longer
// opens; FAN_REPORT_TARGET_FID puts the child's handle in the delete);
// the name its delete gave when that came first (gone); the rename just
// before a move_self; the rename that replaced it; open_by_handle_at.
// Failing all, the event waits for a record naming the handle.
func (c *Capture) handleName(b *batch, raw []kernel.RawEvent, i int, obj *kernel.Handle, dir bool) (string, wait) {
	r, next := &raw[i], raw[i+1:]
	if dir && r.Mask&kernel.FanDeleteSelf != 0 {
		return c.deletedDir(b, obj, next)
	}
	if p, w, ok := c.unlinkedName(b, obj, next, lookAhead); ok {
		return p, w
	}
	if p, ok := c.gone.get(obj.Key); ok {
		return p, wait{}
	}
	if r.Mask&kernel.FanMoveSelf != 0 {
		if p := c.movedName(b, obj, raw[:i]); p != "" {
			return p, wait{}
		}
	}
	if r.Mask&(kernel.FanAttrib|kernel.FanDeleteSelf) != 0 {
		if p := c.replacedName(b, r, raw[:i]); p != "" {
			if r.Mask&kernel.FanDeleteSelf == 0 {
				c.gone.put(obj.Key, p) // for its delete_self
			}
			return p, wait{}
		}
	}
	var p string
	if dir {
		p = c.resolveDir(b, obj)
	} else {
		p = c.resolve(b, obj, false)
	}
	if p == "" && c.feat.TargetFID {
		return "", wait{key: string(obj.Key)}
	}
	return p, wait{}
}

// deletedDir names a directory's delete_self. The kernel merges it into
// an earlier queued event for the directory (rm -rf's opendir, a
// move_self), so the cache may still hold an old name and the directory's
// children may still come: its delete record, which follows, has the
// final name. The cache entry goes with that delete (dirChange).
func (c *Capture) deletedDir(b *batch, obj *kernel.Handle, next []kernel.RawEvent) (string, wait) {
	if p, w, ok := c.unlinkedName(b, obj, next, len(next)); ok {
		return p, w
	}
	if p, ok := c.gone.take(obj.Key); ok {
		return p, wait{} // its delete came first
	}
	p, _ := c.dirs.get(obj.Key)
	if !c.feat.TargetFID {
		return p, wait{}
	}
	return "", wait{key: string(obj.Key), fallback: p}
}

// unlinkedName looks in the next n events for the delete record that names
// obj. ok reports whether one was found; its directory may still be
// unknown, and then the wait says so.
func (c *Capture) unlinkedName(b *batch, obj *kernel.Handle, next []kernel.RawEvent, n int) (string, wait, bool) {
	i := deleteOf(next[:min(len(next), n)], obj)
	if i < 0 {
		return "", wait{}, false
	}
	e := &next[i]
	d := c.resolveDir(b, &e.Dir)
	if d == "" {
		return "", wait{key: string(e.Dir.Key), name: EscapePath(e.Name)}, true
	}
	return c.join(b, d, e.Name), wait{}, true
}

// deleteOf returns the index of the first delete record in evs that names
// obj (with its directory's handle), or -1.
func deleteOf(evs []kernel.RawEvent, obj *kernel.Handle) int {
	for i := range evs {
		e := &evs[i]
		if e.Mask&kernel.FanDelete != 0 && e.FID.Valid() && e.Dir.Valid() && string(e.FID.Key) == string(obj.Key) {
			return i
		}
	}
	return -1
}

// replacedName names the inode a rename replaced (mv -f t.tmp t): the
// kernel queues the rename record, then the victim's attrib (its link
// count) and, later, its delete_self, both with only a handle. The victim
// had the rename's new name. The rename may have gone out with the
// previous read (see holdFrom), so the last one is remembered.
func (c *Capture) replacedName(b *batch, r *kernel.RawEvent, prev []kernel.RawEvent) string {
	for i := len(prev) - 1; i >= 0 && i >= len(prev)-3; i-- {
		p := &prev[i]
		if p.Mask&kernel.FanRename != 0 && p.Pid == r.Pid && p.NewDir.Valid() &&
			(!p.FID.Valid() || string(p.FID.Key) != string(r.FID.Key)) {
			return c.join(b, c.resolveDir(b, &p.NewDir), p.NewName)
		}
	}
	if l := &c.lastRename; l.pid == r.Pid && l.path != "" && string(l.fid) != string(r.FID.Key) {
		p := l.path
		l.pid, l.path = 0, ""
		return p
	}
	return ""
}

// renameNote is the last rename record read: who, its new path, the
// moved object's handle.
type renameNote struct {
	pid  int32
	path string
	fid  []byte
}

// movedName names a move_self from the object's rename record, which the
// kernel queues just before it; without it every rename would cost an
// open_by_handle_at and a readlink.
func (c *Capture) movedName(b *batch, obj *kernel.Handle, prev []kernel.RawEvent) string {
	for i := len(prev) - 1; i >= 0 && i >= len(prev)-lookAhead; i-- {
		p := &prev[i]
		if p.Mask&kernel.FanRename != 0 && p.NewDir.Valid() && p.FID.Valid() && string(p.FID.Key) == string(obj.Key) {
			return c.join(b, c.resolveDir(b, &p.NewDir), p.NewName)
		}
	}
	return ""
}

// renameDir moves a renamed directory's cached subtree. renameat2
// RENAME_EXCHANGE queues two rename records, one per side: the first
// forgets both subtrees, the second has nothing left to do.
func (c *Capture) renameDir(b *batch, raw []kernel.RawEvent, i int, obj *kernel.Handle, oldPath, path string) {
	r := &raw[i]
	if c.swapped != "" && obj.Valid() && string(obj.Key) == c.swapped {
		c.swapped = ""
		return
	}
	moved := false
	for j := i + 1; j < len(raw) && j <= i+3 && !moved; j++ {
		p := &raw[j]
		if exchanged(r, p) {
			// The two subtrees traded places. Forget both rather than swap
			// them: a directory resolved by handle after the exchange
			// (the reader lags) is already right, and a swap would undo
			// it; what is forgotten is resolved again. Where handles never
			// open (overlayfs), nothing is resolved by handle, so nothing
			// forgotten could be named again: swap.
			if obj.Valid() && !c.decodes(obj) {
				c.dirs.swapPrefix(oldPath, path)
			} else {
				c.dirs.dropPrefix(oldPath)
				c.dirs.dropPrefix(path)
			}
			if p.Mask&kernel.FanOnDir != 0 && p.FID.Valid() {
				c.swapped = string(p.FID.Key)
			}
			c.learnExchanged(b, oldPath, path)
			moved = true
		}
	}
	if !moved {
		c.dirs.movePrefix(oldPath, path)
		c.learnMoved(b, oldPath, path)
		c.movedOutOfScope(b, oldPath, path)
	}
	// After the move: the swap must not move this entry back.
	if obj.Valid() && c.feat.TargetFID {
		c.dirs.put(obj.Key, path)
	}
}

// decodes reports whether h's filesystem opens handles (one syscall: only
// asked on a directory exchange).
func (c *Capture) decodes(h *kernel.Handle) bool {
	m := c.mount(h.Fsid())
	return m == nil || kernel.DecodesHandles(m.f)
}

// dirChange keeps the caches current for directory entry events whose
// record names the child (FAN_REPORT_TARGET_FID).
func (c *Capture) dirChange(prev []kernel.RawEvent, r *kernel.RawEvent, obj *kernel.Handle, path string, dir bool) {
	m := r.Mask
	if !dir && m&kernel.FanDelete != 0 && c.want.has(ActionDeleteSelf) {
		if deleteSelfBefore(prev, obj) {
			c.gone.del(obj.Key) // a name an earlier unlink of another link left
		} else {
			// Usually delete_self came just before. When it didn't, the
			// inode has other links, or something still holds it (a
			// reader, or the agent's hashing file) and delete_self comes
			// when that reference drops, when the handle no longer opens:
			// remember the name it was last unlinked as.
			c.gone.put(obj.Key, path)
		}
	}
	if dir && m&(kernel.FanCreate|kernel.FanMovedTo) != 0 {
		c.dirs.put(obj.Key, path)
	}
	if dir && m&kernel.FanDelete != 0 {
		c.dirs.del(obj.Key)
		if c.want.has(ActionDeleteSelf) && !deleteSelfBefore(prev, obj) {
			// Its delete_self may come later still (btrfs evicts the
			// inode after the rmdir returns).
			c.gone.put(obj.Key, path)
		}
	}
}

// lookAhead bounds unlinkedName's search; the delete record normally
// follows directly.
const lookAhead = 16

// deleteSelfBefore reports whether one of the last two events was obj's
// delete_self.
func deleteSelfBefore(prev []kernel.RawEvent, obj *kernel.Handle) bool {
	for i := len(prev) - 1; i >= 0 && i >= len(prev)-2; i-- {
		p := &prev[i]
		if p.Mask&kernel.FanDeleteSelf != 0 && string(p.FID.Key) == string(obj.Key) {
			return true
		}
	}
	return false
}

func (c *Capture) fileID(b *batch, h *kernel.Handle) *fileID {
	if !h.Valid() {
		return nil
	}
	m := c.mount(h.Fsid())
	if m == nil {
		return nil
	}
	start := len(b.arena)
	b.arena = append(b.arena, h.Bytes()...)
	b.fids = append(b.fids, fileID{mount: m.f, htype: h.Type(), handle: b.arena[start:len(b.arena):len(b.arena)], mem: b.mem})
	return &b.fids[len(b.fids)-1]
}

// resolveDir names a directory handle: cache first, else by handle.
func (c *Capture) resolveDir(b *batch, h *kernel.Handle) string {
	if p, ok := c.dirs.get(h.Key); ok {
		return p
	}
	return c.resolve(b, h, true)
}

// resolve names a handle by open_by_handle_at(O_PATH) and readlink, as
// it was at the event being converted (see lagged). Live directories are
// cached; the " (deleted)" suffix never appears.
func (c *Capture) resolve(b *batch, h *kernel.Handle, cache bool) string {
	p, st, found := c.resolveHandle(h)
	if !found {
		b.resolveFails++
		return ""
	}
	p = c.lagged(b, p)
	if cache && p != "" && st.Nlink > 0 && st.Mode&kernel.ModeType == kernel.ModeDir {
		c.dirs.put(h.Key, p)
	}
	return p
}

// resolveHandle names a handle as it is now. With several watched mounts
// of one filesystem (a bind mount of a subdirectory and its source), a
// handle is named through the first mount that shows it under a watched
// root: through a bind mount, an object outside the bound directory has no
// path under it. Through such a mount the kernel names an object outside
// the part it shows "/" plus the names below it (mv src/sub/d out/d read
// "rename /d"): that answer is taken only when no other mount names the
// object at all.
func (c *Capture) resolveHandle(h *kernel.Handle) (string, kernel.Stat, bool) {
	fsid := h.Fsid()
	var p string
	var st kernel.Stat
	found, escaped := false, false
	for i := range c.mounts {
		m := &c.mounts[i]
		if m.fsid != fsid {
			continue
		}
		q, s, err := kernel.ResolveHandle(m.f, h.Type(), h.Bytes())
		if err != nil {
			if kernel.IsStale(err) {
				break // gone: no other mount shows it either
			}
			continue
		}
		q = escapeString(q)
		if m.part != "" && !under(q, m.part) {
			if !found {
				p, st, found, escaped = q, s, true, true
			}
			continue
		}
		under := underAny(q, c.scope.roots)
		if !found || escaped || under {
			p, st, found, escaped = q, s, true, false
		}
		if under {
			break
		}
	}
	if escaped {
		p = hidden + p
	}
	return p, st, found
}

// hidden starts the path of an object that no watched mount shows (only
// a bind mount of a subdirectory was watched, and the object is outside
// it): the kernel's answer is no path ("/" for every directory there,
// read by handle; "/" plus a name when joined with one), and never a
// name to cache (see pathCache.put). It still decides scope (it is under
// no watched root, so the object is out of scope, which it is), but no
// record carries it: unhide makes it unknown (the rename out of a
// watched bind mount then has no new path, counted in Stats.Unnamed, the
// move in no old one). A NUL is in no escaped path.
const hidden = "\x00"

// unhide drops the hidden paths of events on their way out.
func unhide(evs []Event) {
	for i := range evs {
		e := &evs[i]
		if strings.HasPrefix(e.Path, hidden) {
			e.Path = ""
		}
		if strings.HasPrefix(e.OldPath, hidden) {
			e.OldPath = ""
		}
	}
}

// partOf is mountRef.part for the mount that holds root (escaped).
func partOf(mountinfo []byte, root string) string {
	if mp := kernel.PartialMount(mountinfo, realPath(root)); mp != "" {
		return escapeString(mp)
	}
	return ""
}

// join builds dir/name with name escaped, in one allocation.
func (c *Capture) join(b *batch, dir string, name []byte) string {
	if dir == "" {
		return ""
	}
	s := append(c.scratch[:0], dir...)
	if len(s) == 0 || s[len(s)-1] != '/' {
		s = append(s, '/')
	}
	s = appendEscaped(s, name)
	c.scratch = s
	return string(s)
}

// emit splits r's mask into one Event per wanted, in-scope action. echo:
// the event has only the object's handle, so its attrib is the link count
// change of a link, unlink or rename over it, folded into that record
// unless attrib was asked for by name.
func (c *Capture) emit(b *batch, r *kernel.RawEvent, path, oldPath string, fid *fileID, st *kernel.Stat, echo bool) {
	dir := r.Mask&kernel.FanOnDir != 0
	self := r.Pid == c.self
	pidfd, fd := r.PidFD, r.FD
	inScope := c.scope.allowed(path) || (oldPath != "" && c.scope.allowed(oldPath))
	for _, ab := range actionBits {
		if r.Mask&ab.bits == 0 {
			continue
		}
		a := ab.action
		if a == ActionOpen && r.Mask&kernel.FanOpenExec != 0 && c.want.has(ActionExec) {
			continue // exec implies the open
		}
		if a == ActionExec && (!inScope || !c.want.has(a)) && c.opts.Observer != nil && !self {
			// Observed in order with the batch's other events, then
			// dropped: see Options.Observer.
			b.evs = append(b.evs, Event{Time: b.now, Action: a, Mask: r.Mask, Pid: r.Pid, Path: path, Dir: dir, PidFD: -1, observeOnly: true})
			b.filtered++
			continue
		}
		if !inScope || !c.want.has(a) || (echo && a == ActionAttrib && c.fold.has(a)) {
			b.filtered++
			continue
		}
		pid := r.Pid
		if self {
			if a != ActionDeleteSelf {
				b.self++
				continue
			}
			pid = 0 // the agent only dropped the last reference
		}
		ev := Event{Time: b.now, Action: a, Mask: r.Mask, Pid: pid, Path: path, Dir: dir, PidFD: -1, fid: fid, st: st}
		if a == ActionRename {
			ev.OldPath = oldPath
		}
		if pidfd >= 0 && !self {
			ev.PidFD, ev.ownsPidFD, pidfd = int(pidfd), true, -1
		}
		if a == ActionCloseWrite && c.opts.OpenForHash && !dir {
			switch {
			case fd >= 0:
				ev.File, fd = kernel.NewFile(fd, path), -1
			case fid != nil:
				if f, err := kernel.OpenHandle(fid.mount, fid.htype, fid.handle, kernel.OpenReadOnly); err == nil {
					ev.File = f
				} else {
					c.log.Debug().Err(err).Str("path", path).Msg("open for hash failed")
				}
			}
		}
		b.evs = append(b.evs, ev)
	}
	closeRes(fd, pidfd)
}
