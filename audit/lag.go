package audit

import (
	"strings"

	"github.com/fanaudit/fanaudit/internal/kernel"
)

// A reader that lags behind.
//
// A handle is named by open_by_handle_at and readlink, which give the
// object's path now, not when the event happened. The handle→path cache
// follows directory renames in queue order, so a cached path is the one
// of the event being converted; a path read by handle, though, already
// has every rename that happened since, including the ones still queued
// after the event. `echo y >> d/f && mv d e`, read after both: the write
// named by d's handle read "e/f". So a path read by handle is taken back
// through the directory renames queued after the event in the same read,
// last first (lagged), before it is used or cached. Renames still in the
// kernel queue (a reader more than a read behind) are not seen: such an
// event can still be named by a later path.

// dirMove is a directory rename of the read being converted: the
// directory was at old just before record at, and at new just after it.
// old is "" when the kernel did not report it (under inode marks, a move
// out of a directory not marked) or its directory is gone by now: what
// was below new then is unknowable.
type dirMove struct {
	at       int
	old, new string
	// swap: this move and the next one in moves are the two halves of one
	// RENAME_EXCHANGE, which happen at once: one or the other applies.
	swap bool
}

// isDirMove reports whether r is a directory rename with a new side.
func isDirMove(r *kernel.RawEvent) bool {
	return r.Err == nil && r.Mask&(kernel.FanRename|kernel.FanOnDir) == kernel.FanRename|kernel.FanOnDir && r.NewDir.Valid()
}

// lagged returns where p, a path just read by handle, was at the event
// being converted (b.at).
func (c *Capture) lagged(b *batch, p string) string {
	if b.raw == nil || p == "" {
		return p
	}
	if !b.scanned {
		b.scanned = true
		b.lastMove, b.built = -1, 0
		for j := len(b.raw) - 1; j >= 0; j-- {
			if isDirMove(&b.raw[j]) {
				b.lastMove, b.built = j, j+1
				break
			}
		}
	}
	if b.lastMove <= b.at {
		return p // no directory moved after this event in this read
	}
	// The moves after b.at, last first; each one's sides are read now and
	// taken back through the moves after it.
	for ; b.built > b.at+1; b.built-- {
		j := b.built - 1
		r := &b.raw[j]
		if !isDirMove(r) {
			continue
		}
		nd, od := c.resolveNow(&r.NewDir), ""
		if nd == "" {
			continue
		}
		if r.OldDir.Valid() {
			// A gone old directory leaves old "": what was below the
			// moved directory then is unknowable now, never its later
			// path (the records that name the old directory, queued
			// later, may still name the events held for it).
			od = c.resolveNow(&r.OldDir)
		}
		m := dirMove{at: j, new: joinEscaped(backThrough(b.moves, j, nd), string(r.NewName))}
		if od != "" {
			m.old = joinEscaped(backThrough(b.moves, j, od), string(r.OldName))
		}
		if n := len(b.moves); n > 0 && b.moves[n-1].at == j+1 && exchanged(r, &b.raw[j+1]) {
			b.moves[n-1].swap = true
		}
		b.moves = append(b.moves, m)
	}
	if strings.HasPrefix(p, hidden) && movedOutOfView(b.moves, b.at, &c.scope) {
		return ""
	}
	return backThrough(b.moves, b.at, p)
}

// movedOutOfView reports whether a directory in scope moved, after record
// at, where no watched mount shows it (a bind mount watched alone, and
// out of it). A hidden path read now may then have been under it at the
// event: the kernel names every such directory "/", so where is
// unknowable, and the event is named "" (counted, never dropped as out of
// scope), not by the hidden path (rev6: the work in a directory moved out
// of the bind mount, read after the move, was all dropped unannounced).
func movedOutOfView(moves []dirMove, at int, sc *scope) bool {
	for k := 0; k < len(moves) && moves[k].at > at; k++ {
		m := &moves[k]
		if strings.HasPrefix(m.new, hidden) && m.old != "" && !strings.HasPrefix(m.old, hidden) && !sc.outside(m.old) {
			return true
		}
	}
	return false
}

// backThrough takes p back through the moves after record at (moves is
// last first).
func backThrough(moves []dirMove, at int, p string) string {
	for k := 0; k < len(moves) && moves[k].at > at; k++ {
		m := &moves[k]
		if under(p, m.new) {
			if m.old == "" {
				return "" // it came from where the kernel does not say
			}
			p = m.old + p[len(m.new):]
			if m.swap {
				k++ // its other half happened at the same time
			}
		}
	}
	return p
}

// exchanged reports whether r and n are the two records of one
// RENAME_EXCHANGE (see renameDir).
func exchanged(r, n *kernel.RawEvent) bool {
	return n.Mask&kernel.FanRename != 0 && n.Pid == r.Pid && n.OldDir.Valid() && n.NewDir.Valid() &&
		string(n.OldName) == string(r.NewName) && string(n.NewName) == string(r.OldName) &&
		string(n.OldDir.Key) == string(r.NewDir.Key) && string(n.NewDir.Key) == string(r.OldDir.Key)
}

// resolveNow names a directory handle as it is now ("" when it no longer
// opens), bypassing the cache, whose paths are those of the event being
// converted.
func (c *Capture) resolveNow(h *kernel.Handle) string {
	p, _, _ := c.resolveHandle(h)
	return p
}
