package proc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fanaudit/fanaudit/internal/kernel"
)

// lineEntry is what the proc connector told us about one process's ids.
type lineEntry struct {
	pid            int32
	hasUID, hasGID bool
	creds          Creds
	// execd: an exec happened since the effective ids were last known
	// for sure; a setuid or setgid program changes them without any
	// event, so they are uncertain until the next uid or gid event.
	execdU, execdG bool
	// effBefore: the effective ids were certain just before the last
	// exec, so they still are if that exec was not of a set-id program.
	effBefore bool
	// exe as read right after the last exec (or inherited at fork);
	// "" unknown.
	exe string
	// img is /proc as read right after the last exec (command line, comm,
	// start, parent, login, cgroup; Has* say what was read), or inherited
	// at fork without the start. A process gone before any file event of
	// it was read still gets them.
	img Info
}

// LineInfo is what the proc connector's lineage knows about a process.
type LineInfo struct {
	HasCreds    bool
	Creds       Creds
	NoEffective bool // only the real ids in Creds are certain
	Exe         string
	// Image holds the /proc fields read when the process last exec'd
	// (Has* false: unknown); never the creds.
	Image Info
}

// Lineage follows process creation and id changes through the kernel's
// proc connector. A process that has exited before its first event was
// read leaves nothing in /proc, but its real uid and gid are those it
// inherited at fork or set since, and the connector queued both before
// the file event. It is safe for concurrent use.
type Lineage struct {
	conn   *kernel.ProcConnector
	reader *Reader // parents that existed before we listened

	mu   sync.Mutex
	m    map[int32]*lineEntry
	ring []*lineEntry // insertion order, for the bound
	head int
	evs  []kernel.ProcEvent
	// onExec is told of every exec, and onFork of every new process,
	// under mu, so the cache re-reads the pid: an exec changes exe and
	// command line while the pid stays, and a fork may reuse a pid.
	onExec, onFork func(pid int32)
	lost           atomic.Uint64
}

// OpenLineage subscribes to the proc connector. size bounds the processes
// remembered (oldest forgotten first).
func OpenLineage(procRoot string, size, cmdlineMax int) (*Lineage, error) {
	conn, err := kernel.OpenProcConnector(8 << 20)
	if err != nil {
		return nil, fmt.Errorf("lineage: %w", err)
	}
	return &Lineage{
		conn:   conn,
		reader: NewReader(procRoot, max(cmdlineMax, 64), true),
		m:      make(map[int32]*lineEntry, size),
		ring:   make([]*lineEntry, size),
	}, nil
}

// Close unsubscribes. The capture may still call Sync and Info while it
// drains after enrichment stopped; with conn gone they answer from what is
// known instead of reading an fd number that may since belong to another
// file.
func (l *Lineage) Close() error {
	l.mu.Lock()
	c := l.conn
	l.conn = nil
	l.mu.Unlock()
	if c == nil {
		return nil
	}
	return c.Close()
}

// Lost counts connector overflows; after one, lineage may miss processes
// (they stay unknown, never wrong: a fork we missed leaves no entry).
func (l *Lineage) Lost() uint64 { return l.lost.Load() }

// Run keeps the connector drained so that its buffer never overflows,
// until ctx ends. It must end before Close.
func (l *Lineage) Run(ctx context.Context) error {
	l.mu.Lock()
	conn := l.conn
	l.mu.Unlock()
	if conn == nil {
		return nil
	}
	for ctx.Err() == nil {
		if err := conn.Wait(100 * time.Millisecond); err != nil {
			return fmt.Errorf("lineage: %w", err)
		}
		l.mu.Lock()
		err := l.drain()
		l.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// drain applies every queued event. Callers hold mu.
func (l *Lineage) drain() error {
	if l.conn == nil { // tests feed apply directly
		return nil
	}
	for {
		evs, err := l.conn.Read(l.evs[:0])
		l.evs = evs
		for i := range evs {
			l.apply(&evs[i])
		}
		switch {
		case errors.Is(err, kernel.ErrProcConnectorOverflow):
			l.lost.Add(1)
			continue
		case err != nil:
			return fmt.Errorf("lineage: %w", err)
		}
		return nil
	}
}

func (l *Lineage) apply(ev *kernel.ProcEvent) {
	switch ev.What {
	case kernel.ProcEventFork:
		if l.onFork != nil {
			l.onFork(ev.Tgid)
		}
		p := l.m[ev.ParentTgid]
		if p == nil {
			p = l.readParent(ev.ParentTgid)
		}
		if p == nil {
			delete(l.m, ev.Tgid) // a reused pid must not keep the old ids
			return
		}
		c := *p
		c.pid = ev.Tgid
		// The child shares its parent's image until it execs, but not
		// its start or parent.
		c.img.HasStart, c.img.StartTicks, c.img.PidfsIno = false, 0, 0
		c.img.HasPPid, c.img.PPid = true, ev.ParentTgid
		l.put(&c)
	case kernel.ProcEventExec:
		if l.onExec != nil {
			l.onExec(ev.Tgid)
		}
		// Re-read the ids right away: the process is usually still there,
		// and then they are certain again.
		e := l.m[ev.Tgid]
		var info Info
		_, err := l.reader.Read(ev.Tgid, -1, ReadAll, &info)
		if err == nil && (info.HasCreds || info.HasExe) && e == nil {
			e = &lineEntry{pid: ev.Tgid}
			l.put(e)
		}
		if e == nil {
			return
		}
		e.exe = "" // the old image's path is wrong from now on
		// An exec keeps the start, parent, login and cgroup; only the
		// image's own fields (comm, command line) are wrong now.
		e.img.HasComm, e.img.Comm, e.img.HasCmdline, e.img.Cmdline, e.img.Argv = false, "", false, "", ""
		if err == nil && info.HasExe {
			e.exe = info.Exe
		}
		if err == nil {
			keep := e.img
			e.img = info
			fillImage(&e.img, &keep)
			e.img.HasCreds, e.img.Creds, e.img.HasExe, e.img.Exe = false, Creds{}, false, ""
		}
		if err == nil && info.HasCreds {
			e.hasUID, e.hasGID, e.creds = true, true, info.Creds
			e.execdU, e.execdG, e.effBefore = false, false, false
		} else {
			e.effBefore = !e.execdU && !e.execdG
			e.execdU, e.execdG = true, true
		}
	case kernel.ProcEventUID:
		e := l.get(ev.Tgid)
		e.hasUID, e.creds.RUID, e.creds.EUID, e.execdU = true, ev.Real, ev.Effective, false
	case kernel.ProcEventGID:
		e := l.get(ev.Tgid)
		e.hasGID, e.creds.RGID, e.creds.EGID, e.execdG = true, ev.Real, ev.Effective, false
	}
}

func (l *Lineage) readParent(pid int32) *lineEntry {
	var info Info
	if _, err := l.reader.Read(pid, -1, ReadCreds|ReadExe, &info); err != nil || !info.HasCreds {
		return nil
	}
	e := &lineEntry{pid: pid, hasUID: true, hasGID: true, creds: info.Creds, exe: info.Exe}
	l.put(e)
	return e
}

func (l *Lineage) get(pid int32) *lineEntry {
	if e := l.m[pid]; e != nil {
		return e
	}
	e := &lineEntry{pid: pid}
	l.put(e)
	return e
}

func (l *Lineage) put(e *lineEntry) {
	if old := l.ring[l.head]; old != nil && l.m[old.pid] == old {
		delete(l.m, old.pid)
	}
	l.ring[l.head] = e
	l.head = (l.head + 1) % len(l.ring)
	l.m[e.pid] = e
}

// Sync applies everything queued so far.
func (l *Lineage) Sync() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.drain()
}

// Info returns what the lineage knows about pid, after applying
// everything queued so far. The effective ids count as certain when no
// exec happened since they were last known or, when the caller knows the
// last exec's program (execPath) is not set-id, none before that one.
func (l *Lineage) Info(pid int32, execPath string, setIDExec bool) LineInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.drain(); err != nil {
		return LineInfo{}
	}
	e := l.m[pid]
	if e == nil {
		return LineInfo{}
	}
	li := LineInfo{Exe: e.exe, Image: e.img}
	if e.hasUID && e.hasGID {
		eff := !e.execdU && !e.execdG
		if execPath != "" {
			if !eff {
				eff = e.effBefore
			}
			eff = eff && !setIDExec
		}
		li.HasCreds, li.Creds, li.NoEffective = true, e.creds, !eff
		if !eff {
			li.Creds.EUID, li.Creds.EGID = 0, 0
		}
	}
	return li
}
