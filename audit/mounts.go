package audit

import (
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fanaudit/fanaudit/internal/kernel"
)

// Unmounted watched filesystems.
//
// fanotify says nothing when a marked filesystem goes away (a lazy
// unmount leaves the superblock alive while anyone holds it, and the
// marks then simply never fire), so the capture watches the mount table:
// /proc/self/mountinfo signals POLLPRI on every mount and unmount, which
// costs nothing between changes. On a change the reader goroutine checks
// each watched path: when it no longer is the directory that was marked
// (another device or inode, or gone), the path is "unmounted": logged at
// error level, reported by Health, the marks and the mount fd that kept
// the old filesystem alive let go. When a directory on another device than
// the one left behind appears at the path (something was mounted there),
// it is marked like at start and Health recovers.

// rootState is what a watched path was when it was marked.
type rootState struct {
	path     string // escaped
	dev, ino uint64
	fsid     uint64
	gone     bool
	leftDev  uint64 // the device at the path once it was gone (0: nothing there)
}

// mountWatch runs the mount table watcher for one Run.
type mountWatch struct {
	w       *kernel.MountWatch
	changed atomic.Pointer[[]byte] // the new table, set by the watcher
	wg      sync.WaitGroup
}

// startMountWatch watches the mount table until stop; a change wakes the
// reader through the group's read deadline.
func (c *Capture) startMountWatch() (stop func()) {
	if c.fdMode || len(c.roots) == 0 {
		return func() {}
	}
	w, err := kernel.OpenMountWatch()
	if err != nil {
		c.log.Warn().Err(err).Msg("cannot watch the mount table: unmounts of watched filesystems go unnoticed")
		return func() {}
	}
	mw := &mountWatch{w: w}
	// Reading arms the watch. The table it gives is checked once like a
	// change: an unmount between the marking and this arm changed nothing
	// after it, and went unnoticed until the next change on the host.
	if tbl, err := w.Read(); err != nil {
		c.log.Warn().Err(err).Msg("cannot read the mount table")
	} else {
		mw.changed.Store(&tbl)
	}
	c.mw = mw
	mw.wg.Add(1)
	go func() {
		defer mw.wg.Done()
		for {
			changed, err := w.Wait()
			if err != nil {
				c.log.Warn().Err(err).Msg("mount table watch ended")
				return
			}
			if !changed {
				return
			}
			tbl, err := w.Read()
			if err != nil {
				continue
			}
			mw.changed.Store(&tbl)
			c.group.SetReadDeadline(time.Now()) // wake the reader
		}
	}()
	return func() {
		w.Close()
		mw.wg.Wait()
		w.Release()
		c.mw = nil
	}
}

// mountsChanged runs in the reader goroutine: it applies a pending mount
// table change, if any.
func (c *Capture) mountsChanged() {
	if c.mw == nil {
		return
	}
	tbl := c.mw.changed.Swap(nil)
	if tbl == nil {
		return
	}
	for i := range c.roots {
		c.checkRoot(&c.roots[i], *tbl)
	}
}

func (c *Capture) checkRoot(r *rootState, mountinfo []byte) {
	dev, ino, isDir, err := kernel.StatDir(realPath(r.path))
	if !r.gone {
		if err == nil && dev == r.dev && ino == r.ino {
			return
		}
		r.gone, r.leftDev = true, 0
		if err == nil && isDir {
			r.leftDev = dev
		}
		why := "watched filesystem unmounted: " + r.path
		c.health.Store(&why) // before the log line, as below
		c.log.Error().Str("path", r.path).Msg("watched filesystem unmounted: nothing there is seen until something is mounted at the path again")
		c.unmark(r)
		c.release(r)
		return
	}
	if err != nil || !isDir || dev == r.leftDev {
		return
	}
	f, fsid, err := kernel.OpenMount(realPath(r.path))
	if err != nil {
		c.log.Warn().Err(err).Str("path", r.path).Msg("cannot open the new mount")
		return
	}
	// The table this change brought may predate the new mount (another
	// change on the host came just before it, and its table was read
	// first): the stat above found the mount, so a table read now shows
	// it. With a stale one, a filesystem's root looked like a plain
	// directory and got inode marks instead of its filesystem mark.
	if fresh, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		mountinfo = fresh
	}
	c.mounts = append(c.mounts, mountRef{fsid: fsid, f: f, root: r.path, part: partOf(mountinfo, r.path)})
	if err := c.markRoot(r.path, fsid, mountinfo); err != nil {
		c.log.Error().Err(err).Str("path", r.path).Msg("cannot watch the new mount")
		// Let go of what this attempt opened and remembered (the mount
		// fd, the tree root): the next mount table change tries again.
		c.release(r)
		return
	}
	r.gone, r.dev, r.ino, r.fsid = false, dev, ino, fsid
	clear(c.verdicts)
	// Health first, then the log line: whoever acts on the line (an
	// operator, the e2e test) must find /healthz already recovered.
	if !c.anyGone() {
		c.health.Store(nil)
	}
	c.log.Warn().Str("path", r.path).Msg("a filesystem was mounted at a watched path: watched again")
}

func (c *Capture) anyGone() bool {
	for i := range c.roots {
		if c.roots[i].gone {
			return true
		}
	}
	return false
}

// unmark removes the group's marks on what the unmounted path r showed,
// when no other watched path is on that filesystem: its filesystem mark,
// and the inode marks of the directories below r. The kernel frees them
// with the superblock, but the superblock outlives the unmount while
// anything else holds it (the source of a bind mount, a btrfs subvolume
// mounted elsewhere, an open file): until then they reported work outside
// every watched path, which nothing could name (unnamed records). And the
// agent's mount fd, closed by release, queued a close of the root that
// the kernel blames on whichever process holds the file last: a child
// forked meanwhile, between its fork and its exec.
func (c *Capture) unmark(r *rootState) {
	if c.watchedOn(r.fsid) {
		return
	}
	var f *os.File
	for _, m := range c.mounts {
		if m.root == r.path {
			f = m.f
			break
		}
	}
	if f == nil {
		return
	}
	var fsMask, inodeMask uint64
	if c.fsMark[r.fsid] {
		fsMask = c.mask | kernel.FanOpenExec
		if _, ok := c.execFS[r.fsid]; ok {
			// An exec path on this filesystem relied on this mark's exec
			// bit (it took no mark of its own): execs there still name
			// short-lived processes.
			fsMask &^= kernel.FanOpenExec
		}
	}
	var rels []string
	if t := c.tree; t != nil {
		inodeMask = t.mask
		root := realPath(r.path)
		for _, v := range t.dirs {
			if under(v, r.path) {
				rels = append(rels, strings.TrimPrefix(realPath(v), root))
			}
		}
	}
	c.group.UnmarkBelow(f, fsMask, inodeMask, rels)
}

// release lets go of what kept an unmounted filesystem alive: the tree's
// memory of its directories (the kernel frees the inode marks with the
// superblock) and the path's mount fd, and forgets every name under the
// path: it shows nothing now. Another watched path on the same filesystem
// (the source of a bound directory) keeps its own mount fd, its names and
// the filesystem mark; the objects the path showed are named through it.
func (c *Capture) release(r *rootState) {
	c.dirs.dropPrefix(r.path)
	c.gone.dropPrefix(r.path)
	// Names of the filesystem outside every watched path may have come
	// through the path's mount after it was detached and before the
	// agent read the mount table: the kernel then answers from the
	// detached mount's root ("/true" for a file at its top).
	stray := func(key, p string) bool {
		return (&kernel.Handle{Key: []byte(key)}).Fsid() == r.fsid && !underAny(p, c.scope.roots)
	}
	c.dirs.dropIf(stray)
	c.gone.dropIf(stray)
	clear(c.verdicts)
	mounts := c.mounts[:0]
	for _, m := range c.mounts {
		if m.root == r.path {
			m.f.Close()
			continue
		}
		mounts = append(mounts, m)
	}
	clear(c.mounts[len(mounts):])
	c.mounts = mounts
	if p, ok := c.execFS[r.fsid]; ok && c.mount(r.fsid) == nil {
		// The exec path's mount fd was the watched path's (one per
		// filesystem): execs there are named through a fd of its own now.
		if f, fsid, err := kernel.OpenMount(p); err != nil || fsid != r.fsid {
			if err == nil {
				f.Close()
			}
			c.log.Warn().Err(err).Str("exec_path", p).Msg("cannot open the exec path again after an unmount: its execs go unnamed")
		} else {
			c.mounts = append(c.mounts, mountRef{fsid: fsid, f: f})
		}
	}
	if t := c.tree; t != nil {
		roots := t.roots[:0]
		for _, rt := range t.roots {
			if rt.path != r.path {
				roots = append(roots, rt)
			}
		}
		t.roots = roots
		for k, v := range t.dirs {
			if under(v, r.path) {
				delete(t.dirs, k)
			}
		}
		c.stats.inodeMarks.Store(uint64(len(t.dirs)))
	}
	if !c.watchedOn(r.fsid) {
		delete(c.fsMark, r.fsid)
	}
}

// watchedOn reports whether a watched path still shows filesystem fsid.
func (c *Capture) watchedOn(fsid uint64) bool {
	for i := range c.roots {
		if !c.roots[i].gone && c.roots[i].fsid == fsid {
			return true
		}
	}
	return false
}

// Health reports whether every watched path is watched, and why not.
func (c *Capture) Health() (ok bool, reason string) {
	if p := c.health.Load(); p != nil {
		return false, *p
	}
	return true, ""
}

// recordRoots remembers what each watched path is, after setup.
func (c *Capture) recordRoots() {
	for _, p := range c.scope.roots {
		dev, ino, _, err := kernel.StatDir(realPath(p))
		if err != nil {
			continue
		}
		var fsid uint64
		if f, id, err := kernel.OpenMount(realPath(p)); err == nil {
			f.Close()
			fsid = id
		}
		c.roots = append(c.roots, rootState{path: p, dev: dev, ino: ino, fsid: fsid})
	}
}
