package audit

import (
	"fmt"
	"math/bits"
	"path/filepath"
	"strings"

	"github.com/fanaudit/fanaudit/internal/kernel"
)

// scope decides in user space which paths are reported. Marks cover whole
// filesystems and ignore marks only cover objects that existed at start,
// so every event passes through here.
type scope struct {
	roots   []string // escaped, cleaned, symlinks resolved
	ignore  []string // IgnorePaths: the path and everything under it
	names   []glob   // IgnoreNames: the object itself, not what is below it
	include []glob
	exclude []glob
}

// glob is a compiled include or exclude pattern. lit is the literal text
// before the first wildcard of a pattern with a slash: a path, or any of
// its ancestors, can only match if it starts with lit, so most paths are
// turned away by one prefix check instead of a Match per ancestor (the
// agent's own output globs are checked against every event).
type glob struct {
	pat  string
	lit  string
	base bool // no slash: matched against single path elements
}

func compileGlobs(pats []string) []glob {
	gs := make([]glob, 0, len(pats))
	for _, p := range pats {
		g := glob{pat: p, base: !strings.Contains(p, "/")}
		if !g.base {
			g.lit = p
			if i := strings.IndexAny(p, `*?[\`); i >= 0 {
				g.lit = p[:i]
			}
		}
		gs = append(gs, g)
	}
	return gs
}

// under reports whether p is dir or inside it.
func under(p, dir string) bool {
	if dir == "/" {
		return strings.HasPrefix(p, "/")
	}
	return strings.HasPrefix(p, dir) && (len(p) == len(dir) || p[len(dir)] == '/')
}

func underAny(p string, dirs []string) bool {
	for _, d := range dirs {
		if under(p, d) {
			return true
		}
	}
	return false
}

// matchTree reports whether any glob matches p or one of its ancestors, so
// a glob naming a directory covers everything below it. Globs use
// path/filepath.Match syntax. A glob with a slash is matched against the
// absolute path; a glob without one (like "*.tmp") against the last
// element, as in .gitignore.
func matchTree(globs []glob, p string) bool {
	var candidates bool
	for _, g := range globs {
		if g.base || strings.HasPrefix(p, g.lit) {
			candidates = true
			break
		}
	}
	if !candidates {
		return false
	}
	for {
		if matchPath(globs, p) {
			return true
		}
		i := strings.LastIndexByte(p, '/')
		if i <= 0 {
			return false
		}
		p = p[:i]
	}
}

// matchPath reports whether any glob matches p itself (see matchTree for
// the syntax).
func matchPath(globs []glob, p string) bool {
	i := strings.LastIndexByte(p, '/')
	for _, g := range globs {
		subject := p
		if g.base {
			subject = p[i+1:]
		} else if !strings.HasPrefix(p, g.lit) {
			continue
		}
		if ok, _ := filepath.Match(g.pat, subject); ok {
			return true
		}
	}
	return false
}

// allowed reports whether an event on p is in scope. An empty p (the path
// could not be resolved) is let through: the event is real and nothing
// proves it is out of scope.
func (s *scope) allowed(p string) bool {
	if p == "" {
		return true
	}
	if !underAny(p, s.roots) || underAny(p, s.ignore) {
		return false
	}
	if len(s.names) > 0 && matchPath(s.names, p) {
		return false
	}
	if len(s.exclude) > 0 && matchTree(s.exclude, p) {
		return false
	}
	if len(s.include) > 0 && !matchTree(s.include, p) {
		return false
	}
	return true
}

// pruned reports whether nothing under the directory p can be in scope:
// it is ignored or an exclude glob matches it. Subtree scope puts no mark
// there.
func (s *scope) pruned(p string) bool {
	return underAny(p, s.ignore) || (len(s.exclude) > 0 && matchTree(s.exclude, p))
}

func checkGlobs(key string, globs []string) error {
	for _, g := range globs {
		if _, err := filepath.Match(g, "/"); err != nil {
			return fmt.Errorf("%w: %s glob %q: %w", ErrOptions, key, g, err)
		}
	}
	return nil
}

// outside reports whether nothing in directory p can be in scope: p is
// neither under a root nor an ancestor of one, or it is ignored.
func (s *scope) outside(p string) bool {
	if underAny(p, s.ignore) {
		return true
	}
	for _, r := range s.roots {
		if under(p, r) || under(r, p) {
			return false
		}
	}
	return true
}

// dropPass marks the events dropOutside drops, before the batch's slices
// are sized; nil when none is dropped (or in fd mode, where no event has
// a directory handle).
func (c *Capture) dropPass(b *batch, raw []kernel.RawEvent) []bool {
	if c.fdMode {
		return nil
	}
	var drop []bool
	for i := range raw {
		r := &raw[i]
		if r.Mask&(kernel.FanRename|kernel.FanMovedFrom|kernel.FanMovedTo) != 0 && r.Mask&kernel.FanOnDir != 0 {
			// A directory moved: the cached names are updated only when
			// the rename itself is converted, so the rest of this batch
			// takes the full path (and the verdicts start afresh).
			clear(c.verdicts)
			break
		}
		if r.Mask&kernel.FanQOverflow != 0 {
			// What follows may come after renames the kernel dropped.
			c.forgetNames()
			continue
		}
		b.at = i
		if r.Err != nil || !c.dropOutside(b, raw, i) {
			continue
		}
		if drop == nil {
			if cap(c.drop) < len(raw) {
				c.drop = make([]bool, len(raw))
			}
			drop = c.drop[:len(raw)]
			clear(drop)
		}
		drop[i] = true
	}
	return drop
}

// forgetNames drops the scope verdicts and the cached directory names
// after a kernel queue overflow: the renames lost with it may have moved
// a directory into scope (or out of it), and a stale verdict would drop
// its events from then on, silently, long after the overflow, until some
// directory rename is read.
func (c *Capture) forgetNames() {
	clear(c.verdicts)
	clear(c.dirs.m)
}

// settled is called when the kernel queue ran empty and everything read
// was processed: every move queued before what was read has been read.
func (c *Capture) settled() {
	if len(c.handleOut) > 0 || c.handleOutFull {
		clear(c.handleOut)
		c.handleOutFull = false
	}
	c.learnSettled()
}

// verdictCacheSize bounds the per-directory scope verdicts; when full, an
// arbitrary entry goes, which costs one lookup of a cached path later.
const verdictCacheSize = 1 << 14

// dropOutside drops raw[i] when its directory is known to be out of scope,
// before any path is built: under a filesystem mark most events of a busy
// filesystem are such, and each costs one decode and one map lookup. The
// verdict is per directory handle, computed once from the directory's
// path, and forgotten on every directory rename (a move can bring a
// directory into scope). A file renamed between two directories out of
// scope is dropped; other renames, exec events the Observer must see, and
// events without a directory handle take the full path.
func (c *Capture) dropOutside(b *batch, raw []kernel.RawEvent, i int) bool {
	r := &raw[i]
	if r.Mask&(kernel.FanRename|kernel.FanMovedFrom|kernel.FanMovedTo) != 0 {
		if r.Mask&kernel.FanOnDir != 0 {
			clear(c.verdicts)
			return false
		}
		// A file moved from one out-of-scope directory to another.
		if r.Mask&kernel.FanRename == 0 || !r.OldDir.Valid() || !r.NewDir.Valid() ||
			!c.outsideDir(b, &r.OldDir) || !c.outsideDir(b, &r.NewDir) {
			return false
		}
		closeRes(r.FD, r.PidFD)
		b.filtered += uint64(max(1, bits.OnesCount64(r.Mask&allActionBits)))
		c.stats.scopeDrops.Add(1)
		return true
	}
	if r.Mask&kernel.FanOpenExec != 0 && c.opts.Observer != nil {
		return false
	}
	dir := &r.Dir
	if dir.Valid() && r.Mask&(kernel.FanDeleteSelf|kernel.FanMoveSelf) != 0 {
		return false // a directory going: named from the caches, see fidEvent
	}
	if !dir.Valid() {
		// A handle-only attrib or delete_self of an unlinked file is
		// named by the delete record that follows: judge by its directory.
		if !r.FID.Valid() || r.Mask&(kernel.FanAttrib|kernel.FanDeleteSelf) == 0 || r.Mask&kernel.FanOnDir != 0 {
			return false
		}
		if r.Mask&^kernel.FanAttrib == 0 && c.fold.has(ActionAttrib) {
			// A link count echo alone, folded (fidEvent would drop it
			// too): the kernel still sends it from a directory it
			// ignores, since it names no parent.
			closeRes(r.FD, r.PidFD)
			b.filtered++
			return true
		}
		next := raw[i+1:]
		j := deleteOf(next[:min(len(next), lookAhead)], &r.FID)
		if j < 0 {
			return false
		}
		dir = &next[j].Dir
	}
	out := c.outsideDir(b, dir)
	if out {
		closeRes(r.FD, r.PidFD)
		b.filtered += uint64(max(1, bits.OnesCount64(r.Mask&allActionBits)))
		c.stats.scopeDrops.Add(1)
	}
	return out
}

// outsideDir reports whether nothing in directory dir can be in scope, by
// its cached verdict or, the first time, from its path; a directory found
// out of scope gets an ignore mark (see learned).
func (c *Capture) outsideDir(b *batch, dir *kernel.Handle) bool {
	out, ok := c.verdicts[string(dir.Key)]
	if !ok {
		fails := b.resolveFails
		_, named := c.dirs.get(dir.Key)
		p := c.resolveDir(b, dir)
		b.resolveFails = fails // the full path counts it, if it fails there too
		if p == "" {
			return false
		}
		out = c.scope.outside(p)
		if c.verdicts == nil {
			c.verdicts = make(map[string]bool)
		}
		if len(c.verdicts) >= verdictCacheSize {
			for k := range c.verdicts {
				delete(c.verdicts, k)
				break
			}
		}
		c.verdicts[string(dir.Key)] = out
		if out {
			c.learnOut(dir, p)
			if !named {
				c.noteHandleOut(dir.Key, p)
			}
		}
	}
	if out {
		if h := c.handleOut[string(dir.Key)]; h != nil {
			h.n++
		}
	}
	return out
}

// handleOut is a directory found out of scope by where its handle is
// now, not by a name the capture had followed: when the reader lags by
// more than one read, a directory that was in scope when its events were
// queued may have moved out since (mkdir w/d; work in it; mv w/d out/d),
// its move still queued behind them. Its drops are counted until the
// kernel queue runs empty (then every move queued before them was read),
// and a directory move read from scope to where it is announces them
// (events_lost, unwatched_window, the directory where the work was)
// instead of leaving them silent.
type handleOut struct {
	path string
	n    uint64
}

// noteHandleOut records the directory with handle key k, found out of
// scope at p by its handle.
func (c *Capture) noteHandleOut(k []byte, p string) {
	if c.handleOut == nil {
		c.handleOut = make(map[string]*handleOut)
	}
	if len(c.handleOut) >= verdictCacheSize {
		c.handleOutFull = true
		return
	}
	c.handleOut[string(k)] = &handleOut{path: p}
}

// movedOutOfScope announces the drops of directories found out of scope
// under path by their handles (see handleOut): the directory at oldPath,
// in scope, moved there, and the move was read only now.
func (c *Capture) movedOutOfScope(b *batch, oldPath, path string) {
	if len(c.handleOut) == 0 && !c.handleOutFull || c.scope.outside(oldPath) {
		return
	}
	if c.handleOutFull {
		c.announceWindow(b, oldPath, true)
		return
	}
	if strings.HasPrefix(path, hidden) {
		// Moved where no watched mount shows it (a bind mount watched
		// alone): the kernel names every directory there "/", so which
		// of the hidden directories' drops were under it is unknowable.
		// They are announced at oldPath, without a count (rev6: the work
		// in a directory moved out of the bind mount, read a read or more
		// after the move, was dropped without a record).
		found := false
		for k, h := range c.handleOut {
			if h.n > 0 && strings.HasPrefix(h.path, hidden) {
				delete(c.handleOut, k)
				found = true
			}
		}
		c.announceWindow(b, oldPath, found)
		return
	}
	for k, h := range c.handleOut {
		if h.n == 0 || !under(h.path, path) {
			continue
		}
		was := oldPath + h.path[len(path):]
		delete(c.handleOut, k)
		if c.scope.outside(was) {
			continue
		}
		ev := c.lostEvent(b.now, ReasonUnwatchedWindow)
		ev.Path, ev.Dir = was, true
		ev.Lost, ev.HasLost = h.n, true
		c.stats.windows.Add(1)
		b.evs = append(b.evs, ev)
	}
}
