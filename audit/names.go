package audit

import (
	"slices"
)

// wait says that an event's path is not known yet: it is the path of the
// object whose handle is key (a directory, or the event's object itself),
// followed by name. The record that names key comes later in the queue:
//
//   - rm -rf of a tree the capture has not seen: the children's deletes
//     carry their directory's handle, which no longer opens by the time
//     they are read; the directory's own delete, queued after them, names
//     it (FAN_REPORT_TARGET_FID puts its handle in the record).
//   - a directory's delete_self that the kernel merged into an earlier
//     event for it: its final name is in its delete record.
//
// Such events are held (see pendingNames) until that record is read, and
// go out just before it. When the kernel queue runs empty first, nothing
// can name them any more: they go out with fallback, or unnamed (counted
// in Stats.Unnamed; enrichment marks fanaudit.missing file.path).
type wait struct {
	key      string // handle key (copied out of the read buffer)
	name     string // escaped name below key's path; "" = key's object itself
	child    string // the event's own object when it is a directory: naming the event names it
	fallback string // the path to report if key is never named
	// before: the event waits for where key's object was just before its
	// next move (the old side of its next rename), not for where it went;
	// see the rename case of fidEvent.
	before bool
	// old: the name is the event's OldPath (a rename whose old directory
	// was gone by the time it was read), not its Path.
	old bool
}

func (w *wait) waiting() bool { return w.key != "" }

// pendingItem is one held kernel event's Events.
type pendingItem struct {
	seq uint64
	w   wait
	evs []Event
}

// pendingNames holds events waiting for a record that names a handle. It
// is bounded by maxPending events; past that everything held goes out as
// it is. Its zero value is ready to use.
type pendingNames struct {
	byKey map[string][]*pendingItem
	n     int
	seq   uint64
}

// maxPending bounds the events held for a name: the kernel's default
// queue length, so that one rm -rf of a directory as large as the queue is
// still named. Read-ahead lets the agent lag by more than the queue: the
// bound grows by one event per minEventBytes of Options.ReadAhead (see
// pendLimit).
const maxPending = 16384

// minEventBytes is about the smallest file event the group reports (the
// metadata and a DFID_NAME record with a short handle and name).
const minEventBytes = 64

// pendLimit is the bound on held events for readAhead bytes of read-ahead:
// as many events as the agent can be behind by, so that what it lags
// behind a removed directory by is still named. With the default 16 MiB
// that is about 280,000 events instead of 16384: a held event (the Event
// and its own copy of its file id) takes a few hundred bytes, so tens of
// MB at worst, taken only while that many wait for one name.
func pendLimit(readAhead int) int { return maxPending + readAhead/minEventBytes }

func (p *pendingNames) add(w wait, evs []Event) {
	if p.byKey == nil {
		p.byKey = make(map[string][]*pendingItem)
	}
	p.seq++
	held := slices.Clone(evs)
	ownFileIDs(held)
	p.byKey[w.key] = append(p.byKey[w.key], &pendingItem{seq: p.seq, w: w, evs: held})
	p.n += len(evs)
}

// ownFileIDs gives held events copies of their file ids and handles: the
// batch memory they point into is reused once the batch they were read in
// has gone out (see batchMem), and they go out with a later one. The
// actions split from one kernel event keep sharing one fileID.
func ownFileIDs(evs []Event) {
	var from, to *fileID
	for i := range evs {
		f := evs[i].fid
		if f == nil || f.mem == nil {
			continue
		}
		if f != from {
			c := *f
			c.handle = slices.Clone(f.handle)
			c.mem = nil
			from, to = f, &c
		}
		evs[i].fid = to
	}
}

// hold moves the Events emitted from b.evs[start:] into the pending set.
func (c *Capture) hold(b *batch, start int, w wait) {
	if len(b.evs) == start {
		return
	}
	c.pend.add(w, b.evs[start:])
	clear(b.evs[start:])
	b.evs = b.evs[:start]
	if c.pend.n > pendLimit(c.opts.ReadAhead) {
		b.evs = c.flushPending(b.evs, &b.filtered)
	}
}

// named releases, into b, the events waiting for key, now known to be
// path, before the event that named it. A held event that names a
// directory of its own releases that directory's waiters first: they were
// queued before it.
func (c *Capture) named(b *batch, key []byte, path string) {
	if len(c.pend.byKey) == 0 || path == "" {
		return
	}
	items, ok := c.pend.byKey[string(key)]
	if !ok {
		return
	}
	delete(c.pend.byKey, string(key))
	for _, it := range items {
		c.releaseAt(b, it, path)
	}
}

// releaseAt releases it into b, its key now known to be at path: its
// directory's own waiters first (see named), then its events.
func (c *Capture) releaseAt(b *batch, it *pendingItem, path string) {
	p := path
	if it.w.name != "" {
		p = joinName(path, it.w.name)
	}
	if it.w.child != "" {
		c.named(b, []byte(it.w.child), p)
	}
	b.evs = c.releaseHeld(b.evs, it, p, &b.filtered)
}

// namedMoved releases, into b, the events waiting for key, the object a
// rename record moves to path. They were queued before the move, so they
// name where the object was: oldPath. When the old directory is gone by
// now (oldWait), they wait for the record that names it instead. When the
// kernel did not report the old side (the object came from a directory
// not marked, under inode marks), where they happened is unknowable: they
// go out unnamed and counted, never with the later path. A delete_self is
// the exception: the kernel merges it into an earlier queued event of the
// object, ahead of the moves before it, and it takes path.
func (c *Capture) namedMoved(b *batch, key []byte, oldPath, path string, oldWait wait) {
	items, ok := c.pend.byKey[string(key)]
	if !ok {
		return
	}
	delete(c.pend.byKey, string(key))
	for _, it := range items {
		p := oldPath
		switch {
		case path != "" && slices.ContainsFunc(it.evs, func(e Event) bool { return e.Action == ActionDeleteSelf }):
			p = path
		case p == "" && oldWait.waiting():
			it.w.key = oldWait.key
			if it.w.name == "" {
				it.w.name = oldWait.name
			} else {
				it.w.name = oldWait.name + "/" + it.w.name
			}
			c.pend.byKey[it.w.key] = append(c.pend.byKey[it.w.key], it)
			continue
		}
		c.releaseAt(b, it, p)
	}
}

// namedBefore releases, into b, the events waiting for where key's object
// was before the move being converted: oldPath, its old side ("" when the
// kernel did not give it, which leaves them unnamed, and counted). Other
// waiters on key stay for named.
func (c *Capture) namedBefore(b *batch, key []byte, oldPath string) {
	items, ok := c.pend.byKey[string(key)]
	if !ok {
		return
	}
	keep := items[:0]
	for _, it := range items {
		if !it.w.before {
			keep = append(keep, it)
			continue
		}
		b.evs = c.releaseHeld(b.evs, it, oldPath, &b.filtered)
	}
	if len(keep) == 0 {
		delete(c.pend.byKey, string(key))
		return
	}
	c.pend.byKey[string(key)] = keep
}

// releaseHeld appends it's events named p (scope decides now), and forgets it.
func (c *Capture) releaseHeld(out []Event, it *pendingItem, p string, filtered *uint64) []Event {
	c.pend.n -= len(it.evs)
	for i := range it.evs {
		ev := it.evs[i]
		if it.w.old {
			ev.OldPath = p
		} else {
			ev.Path = p
		}
		if ev.Path != "" && !c.scope.allowed(ev.Path) && (ev.OldPath == "" || !c.scope.allowed(ev.OldPath)) {
			ev.Release()
			*filtered++
			continue
		}
		out = append(out, ev)
	}
	it.evs = nil
	return out
}

// flushPending appends every held event, oldest first, with its fallback
// path (often none): nothing will name them any more.
func (c *Capture) flushPending(out []Event, filtered *uint64) []Event {
	if c.pend.n == 0 && len(c.pend.byKey) == 0 {
		return out
	}
	var items []*pendingItem
	for _, its := range c.pend.byKey {
		items = append(items, its...)
	}
	clear(c.pend.byKey)
	slices.SortFunc(items, func(a, b *pendingItem) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	for _, it := range items {
		out = c.releaseHeld(out, it, it.w.fallback, filtered)
	}
	c.pend.n = 0
	return out
}

// flushHeld returns the events still waiting for a name, with what is
// known of their paths. Run calls it when the kernel queue is empty: every
// record that could have named them has been read.
func (c *Capture) flushHeld() []Event {
	var filtered uint64
	evs := c.flushPending(nil, &filtered)
	if filtered > 0 {
		c.stats.filtered.Add(filtered)
	}
	if o := c.opts.Observer; o != nil {
		for i := range evs {
			o.Observe(&evs[i])
		}
	}
	unhide(evs)
	c.countUnnamed(evs)
	c.stats.emitted.Add(uint64(len(evs)))
	return evs
}

// countUnnamed counts file events that go out without a path.
func (c *Capture) countUnnamed(evs []Event) {
	var n uint64
	for i := range evs {
		if evs[i].Path == "" && evs[i].Action != ActionEventsLost {
			n++
		}
	}
	if n > 0 {
		c.stats.unnamed.Add(n)
	}
}

// joinName builds dir/name from an already escaped name.
func joinName(dir, name string) string {
	if dir == "" {
		return ""
	}
	if dir[len(dir)-1] == '/' {
		return dir + name
	}
	return dir + "/" + name
}
