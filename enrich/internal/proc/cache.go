package proc

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fanaudit/fanaudit/internal/kernel"
)

// maxVersions bounds how many past identities of one pid stay reachable for
// events still in flight between Observe and Resolve.
const maxVersions = 4

// Entry is one identity of a process: what a pid was from Since on. An
// Entry never changes once published, so a Resolve caller may use it
// without a lock.
type Entry struct {
	Info
	Start       time.Time // from StartTicks and the boot time; zero if unknown
	EntityID    string    // "" when the start time is unknown
	ContainerID string
	Runtime     string
	// FromExec: Exe is the path of an exec event. Comm and Cmdline are
	// unknown then, because at that moment /proc may still show the old
	// image; the next event from the pid re-reads them.
	FromExec bool

	since time.Time
	prev  *Entry
}

type slot struct {
	pid         int32
	cur         *Entry
	checked     time.Time // when /proc last confirmed cur
	gone        bool      // /proc said the pid was gone at checked
	execPending bool      // cur came from an exec event
	stale       bool      // the proc connector saw a fork reuse the pid
	pidIno      uint64    // pidfs inode of the instance cur describes; 0 unknown
	newer       *slot     // LRU list, head is the most recent
	older       *slot
}

// Config configures a Cache.
type Config struct {
	Root       string        // proc root, "/proc"
	CmdlineMax int           // bytes
	Size       int           // pids kept
	TTL        time.Duration // how long a cached entry is trusted without re-reading /proc
	// Pidfds: pin each /proc read with a pidfd and take creds from
	// PIDFD_GET_INFO (see NewReader). Only for the real /proc.
	Pidfds bool
	// IDSeed makes entity ids unique across hosts and boots: machine id
	// and boot id.
	// Lineage, when set, supplies the real (and where certain, effective)
	// ids of processes gone before /proc could be read.
	Lineage    *Lineage
	IDSeed     string
	BootTime   time.Time // /proc/stat btime
	ClockTicks int       // USER_HZ
}

// Stats counts cache outcomes. Every Observe ends in exactly one of Hits,
// Misses or Gone; Execs count exec events on top of that.
type Stats struct {
	Hits        uint64 // served from the cache without reading /proc
	Misses      uint64 // /proc was read (new pid, TTL expired, exec, pid reuse)
	Gone        uint64 // the process was gone at read time and nothing was cached
	GoneHits    uint64 // the process was gone at read time; cached identity used (part of Hits)
	Evictions   uint64
	Execs       uint64
	LateReads   uint64 // Resolve read /proc because nothing observed the pid
	LineageHits uint64 // creds supplied by the proc connector
	Entries     int
}

// Cache maps pid to its current and recent identities, keyed by (pid,
// start time): a reused pid gets a new Entry, and so does an exec.
type Cache struct {
	cfg      Config
	obs      *Reader   // used only by Observe's goroutine
	lastSync time.Time // Observe's goroutine only
	late     *Reader   // used only by Resolve's goroutine

	mu         sync.Mutex
	m          map[int32]*slot
	head, tail *slot

	hits, misses, gone, goneHits, evictions, execs, lateReads, lineageHits atomic.Uint64
}

// NewCache returns an empty cache.
func NewCache(cfg Config) *Cache {
	if cfg.ClockTicks <= 0 {
		cfg.ClockTicks = 100
	}
	c := &Cache{
		cfg:  cfg,
		obs:  NewReader(cfg.Root, cfg.CmdlineMax, cfg.Pidfds),
		late: NewReader(cfg.Root, cfg.CmdlineMax, cfg.Pidfds),
		m:    make(map[int32]*slot, cfg.Size),
	}
	if cfg.Lineage != nil {
		cfg.Lineage.onExec = c.execSeen
		cfg.Lineage.onFork = c.forkSeen
	}
	return c
}

// forkSeen marks pid for a re-read: a new process has it now.
func (c *Cache) forkSeen(pid int32) {
	c.mu.Lock()
	if s := c.m[pid]; s != nil {
		s.stale = true
	}
	c.mu.Unlock()
}

// execSeen marks pid for a re-read: the proc connector saw it exec.
func (c *Cache) execSeen(pid int32) {
	c.mu.Lock()
	if s := c.m[pid]; s != nil {
		s.execPending = true
	}
	c.mu.Unlock()
}

// IsLoader reports whether an exec event's path is an ELF program
// interpreter. The kernel opens it with the exec flag right after the
// program itself, so its event must not replace the executable.
func IsLoader(path string) bool {
	base := path[strings.LastIndexByte(path, '/')+1:]
	return strings.HasPrefix(base, "ld-linux") || strings.HasPrefix(base, "ld-musl-") ||
		strings.HasPrefix(base, "ld.so") || strings.HasPrefix(base, "ld64.so")
}

// Observe records what the kernel event at time t says about pid and, when
// the cache cannot vouch for pid, reads /proc right away, while a
// short-lived process may still exist. exec marks an exec event whose path
// is the new executable. pidfd is the event's pidfd or -1. Observe must be
// called from one goroutine only.
func (c *Cache) Observe(pid int32, t time.Time, exec bool, execPath string, pidfd int) {
	if pid <= 0 {
		return
	}
	if exec {
		if IsLoader(execPath) {
			return
		}
		c.execs.Add(1)
	}
	// Once per read batch (events of one read share t), apply the proc
	// connector's queue: any exec that happened before these events were
	// read is in it, so a cached pid that exec'd is re-read.
	if l := c.cfg.Lineage; l != nil && !t.Equal(c.lastSync) {
		c.lastSync = t
		l.Sync()
	}
	// The pidfs inode names the process instance behind the event's pidfd:
	// a cached pid whose inode differs was reused, TTL or not.
	var ino uint64
	if pidfd >= 0 {
		if v, err := kernel.PidfdInode(pidfd); err == nil {
			ino = v
		}
	}
	c.mu.Lock()
	s := c.m[pid]
	// A gone process is trusted for a TTL like a live one: re-reading
	// /proc for each of its queued events (a drain after a burst holds
	// millions) only finds it gone again, and a reused pid is caught by
	// the same TTL or pidfs inode check as for a live one.
	if s != nil && !exec && !s.execPending && !s.stale && t.Sub(s.checked) < c.cfg.TTL && (ino == 0 || ino == s.pidIno) {
		c.touch(s)
		c.mu.Unlock()
		c.hits.Add(1)
		return
	}
	// Read under the lock: the lineage goroutine sets execPending.
	execPending := s != nil && s.execPending
	c.mu.Unlock()

	c.misses.Add(1)
	// Read what can have changed first and only that: at an exec event
	// the executable is the event's path and the command line is not yet
	// the new one, so they wait for the next event; after an exec, login,
	// session and cgroup are the ones read at the exec.
	what := ReadAll
	switch {
	case exec:
		what = ReadCreds | ReadStat | ReadLogin | ReadCgroup
	case execPending:
		what = ReadCreds | ReadStat | ReadExe | ReadCmdline
	}
	var info Info
	_, err := c.obs.read(pid, pidfd, ino, what, &info)
	var lin LineInfo // from the proc connector
	if l := c.cfg.Lineage; l != nil && (err != nil || !info.HasCreds || (!info.HasExe && what&ReadExe != 0) ||
		(!info.HasCmdline && what&ReadCmdline != 0) || (!info.HasStart && what&ReadStat != 0)) {
		path, setID := "", false
		if exec {
			path, setID = execPath, isSetID(execPath)
		}
		lin = l.Info(pid, path, setID)
		if lin.HasCreds || lin.Exe != "" {
			c.lineageHits.Add(1)
		}
	}
	if err != nil && (lin.HasCreds || lin.Exe != "") {
		info, err = Info{Pid: pid}, nil
		if !exec {
			// Only what the connector knows; any earlier snapshot of the
			// same instance fills the rest below.
			what = 0
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	s = c.m[pid]
	switch {
	case err == nil && what == 0 && s != nil && !s.stale:
		// Gone; the connector completes the cached identity.
		cp := *s.cur
		if s.execPending && !cp.FromExec {
			// The connector saw an exec after this snapshot: its image
			// fields are the old program's.
			cp.HasExe, cp.Exe, cp.HasComm, cp.Comm, cp.HasCmdline, cp.Cmdline, cp.Argv = false, "", false, "", false, "", ""
		}
		if !cp.HasCreds && lin.HasCreds {
			cp.HasCreds, cp.Creds, cp.NoEffective = true, lin.Creds, lin.NoEffective
		}
		if !cp.HasExe && lin.Exe != "" {
			cp.HasExe, cp.Exe = true, lin.Exe
		}
		if fillImage(&cp.Info, &lin.Image) {
			cp.Start, cp.EntityID = c.startOf(&cp.Info)
		}
		c.publish(s, pid, &cp, t, false, ino)
		s.gone = true
		c.goneHits.Add(1)
	case err == nil:
		if !info.HasCreds {
			info.HasCreds, info.Creds, info.NoEffective = lin.HasCreds, lin.Creds, lin.NoEffective
		}
		if !info.HasExe && lin.Exe != "" && !exec {
			info.HasExe, info.Exe = true, lin.Exe
		}
		if !exec {
			fillImage(&info, &lin.Image)
		}
		e := c.newEntry(&info)
		if exec {
			e.markExec(execPath)
		} else if s != nil && sameInstance(s, e, ino) {
			c.fillFrom(e, s.cur)
		}
		c.publish(s, pid, e, t, exec, ino)
	case exec:
		e := &Entry{Info: Info{Pid: pid}}
		e.HasCreds, e.Creds, e.NoEffective = lin.HasCreds, lin.Creds, lin.NoEffective
		e.markExec(execPath)
		c.publish(s, pid, e, t, exec, ino)
		c.m[pid].gone = true
	case s != nil && s.stale:
		// A new process took the pid and is gone already: the cached
		// identity is the old process's and says nothing about this one.
		c.publish(s, pid, &Entry{Info: Info{Pid: pid}}, t, false, ino)
		s.gone = true
		c.gone.Add(1)
	case s != nil:
		s.gone, s.checked = true, t
		c.touch(s)
		c.goneHits.Add(1)
	default:
		c.gone.Add(1)
	}
}

// sameInstance: e was read from the process that s describes, proven by
// the start time or by the pidfs inode.
func sameInstance(s *slot, e *Entry, ino uint64) bool {
	if e.PidfsIno != 0 && s.cur.PidfsIno != 0 {
		return e.PidfsIno == s.cur.PidfsIno
	}
	if e.HasStart && s.cur.HasStart {
		return e.StartTicks == s.cur.StartTicks
	}
	return ino != 0 && ino == s.pidIno
}

// fillFrom completes e, a snapshot of a process that vanished mid-read,
// with what an earlier snapshot of the same instance knew.
func (c *Cache) fillFrom(e, old *Entry) {
	if !e.HasExe && old.HasExe {
		e.HasExe, e.Exe, e.FromExec = true, old.Exe, old.FromExec
	}
	fillCommon(&e.Info, &old.Info)
	if e.PidfsIno == 0 {
		e.PidfsIno = old.PidfsIno
	}
	if !e.HasStart && old.HasStart {
		e.HasStart, e.StartTicks, e.Start, e.EntityID = true, old.StartTicks, old.Start, old.EntityID
	}
	if !e.HasCreds && old.HasCreds {
		e.HasCreds, e.Creds = true, old.Creds
	}
	if !e.HasCgroup && old.HasCgroup {
		e.HasCgroup, e.CgroupPath, e.ContainerID, e.Runtime = true, old.CgroupPath, old.ContainerID, old.Runtime
	}
}

func (e *Entry) markExec(path string) {
	e.HasExe, e.Exe = true, path
	e.HasComm, e.Comm = false, ""
	e.HasCmdline, e.Cmdline, e.Argv = false, "", ""
	e.FromExec = true
}

// fillCommon completes dst's comm, command line, parent, login uid and
// session with src's, for fillFrom and fillImage.
func fillCommon(dst, src *Info) {
	if !dst.HasComm && src.HasComm {
		dst.HasComm, dst.Comm = true, src.Comm
	}
	if !dst.HasCmdline && src.HasCmdline {
		dst.HasCmdline, dst.Cmdline, dst.Argv = true, src.Cmdline, src.Argv
	}
	if !dst.HasPPid && src.HasPPid {
		dst.HasPPid, dst.PPid = true, src.PPid
	}
	if !dst.HasLoginUID && src.HasLoginUID {
		dst.HasLoginUID, dst.LoginUID = true, src.LoginUID
	}
	if !dst.HasSession && src.HasSession {
		dst.HasSession, dst.Session = true, src.Session
	}
}

// fillImage completes info's image fields (command line, comm, start,
// parent, login, cgroup) from what the proc connector's lineage read at
// the process's last exec, unless the two disagree on the start time
// (another process with the same pid). It reports whether it filled the
// start.
func fillImage(info, img *Info) bool {
	if info.HasStart && img.HasStart && info.StartTicks != img.StartTicks {
		return false
	}
	fillCommon(info, img)
	if !info.HasCgroup && img.HasCgroup {
		info.HasCgroup, info.CgroupPath = true, img.CgroupPath
	}
	if !info.HasStart && img.HasStart {
		info.HasStart, info.StartTicks = true, img.StartTicks
		if info.PidfsIno == 0 {
			info.PidfsIno = img.PidfsIno
		}
		return true
	}
	return false
}

// startOf returns process.start and process.entity_id for info.
func (c *Cache) startOf(info *Info) (time.Time, string) {
	if !info.HasStart {
		return time.Time{}, ""
	}
	var start time.Time
	ticks := int64(info.StartTicks)
	hz := int64(c.cfg.ClockTicks)
	if !c.cfg.BootTime.IsZero() {
		start = c.cfg.BootTime.Add(time.Duration(ticks/hz)*time.Second + time.Duration(ticks%hz)*time.Second/time.Duration(hz))
	}
	return start, EntityID(c.cfg.IDSeed, info.Pid, info.StartTicks, info.PidfsIno)
}

func (c *Cache) newEntry(info *Info) *Entry {
	e := &Entry{Info: *info}
	e.Start, e.EntityID = c.startOf(info)
	if info.HasCgroup {
		e.ContainerID, e.Runtime = ContainerFromCgroup(info.CgroupPath)
	}
	return e
}

// EntityID is process.entity_id: the first 16 bytes, in hex, of
// sha256(seed "/" pid "/" start ticks ["/" pidfs inode]), where seed is
// the machine id and boot id. Start ticks count from boot, so the boot id
// makes the triple unique for a host, and the machine id across hosts.
// The pidfs inode, where known (pidfd reads, the default on the real
// /proc), separates a pid reused within one clock tick; it is stable for
// the process's life, so the id stays stable across agent restarts.
func EntityID(seed string, pid int32, startTicks, pidfsIno uint64) string {
	var buf [160]byte
	b := append(buf[:0], seed...)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(pid), 10)
	b = append(b, '/')
	b = strconv.AppendUint(b, startTicks, 10)
	if pidfsIno != 0 {
		b = append(b, '/')
		b = strconv.AppendUint(b, pidfsIno, 10)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// publish makes e the current identity of pid from t on. Callers hold mu.
func (c *Cache) publish(s *slot, pid int32, e *Entry, t time.Time, exec bool, ino uint64) {
	if ino == 0 {
		ino = e.PidfsIno
	}
	if s == nil {
		s = &slot{pid: pid, cur: e}
		c.m[pid] = s
		c.pushFront(s)
		for len(c.m) > c.cfg.Size && c.tail != nil && c.tail != s {
			old := c.tail
			c.unlink(old)
			delete(c.m, old.pid)
			c.evictions.Add(1)
		}
	} else {
		c.touch(s)
		if !exec && !s.execPending && sameIdentity(s.cur, e) {
			s.checked, s.gone, s.stale = t, false, false
			if ino != 0 {
				s.pidIno = ino
			}
			return
		}
		e.since, e.prev = t, s.cur
		n := 1
		for p := e; p != nil; p = p.prev {
			if n == maxVersions {
				p.prev = nil
				break
			}
			n++
		}
		s.cur = e
	}
	s.checked, s.gone, s.execPending, s.stale, s.pidIno = t, false, exec, false, ino
}

func sameIdentity(a, b *Entry) bool {
	return a.Info == b.Info
}

// Resolve returns the identity pid had at time t: the newest version whose
// start is not after t. Events that share a timestamp with an exec see the
// new image. With late set, a pid nobody observed is read from /proc now
// (the only option when no Observe runs). Resolve must be called from one
// goroutine only. nil means unknown.
func (c *Cache) Resolve(pid int32, t time.Time, late bool) *Entry {
	if pid <= 0 {
		return nil
	}
	c.mu.Lock()
	s := c.m[pid]
	if s != nil {
		e := s.cur
		for e != nil && t.Before(e.since) {
			e = e.prev
		}
		c.mu.Unlock()
		return e
	}
	c.mu.Unlock()
	if !late {
		return nil
	}
	c.lateReads.Add(1)
	var info Info
	if _, err := c.late.Read(pid, -1, ReadAll, &info); err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.m[pid]; s != nil {
		return s.cur
	}
	e := c.newEntry(&info)
	c.publish(nil, pid, e, t, false, 0)
	return e
}

// Stats returns the counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	n := len(c.m)
	c.mu.Unlock()
	return Stats{
		Hits: c.hits.Load(), Misses: c.misses.Load(), Gone: c.gone.Load(), GoneHits: c.goneHits.Load(),
		Evictions: c.evictions.Load(), Execs: c.execs.Load(), LateReads: c.lateReads.Load(), LineageHits: c.lineageHits.Load(), Entries: n,
	}
}

func (c *Cache) pushFront(s *slot) {
	s.older, s.newer = c.head, nil
	if c.head != nil {
		c.head.newer = s
	}
	c.head = s
	if c.tail == nil {
		c.tail = s
	}
}

func (c *Cache) unlink(s *slot) {
	if s.newer != nil {
		s.newer.older = s.older
	} else {
		c.head = s.older
	}
	if s.older != nil {
		s.older.newer = s.newer
	} else {
		c.tail = s.newer
	}
	s.newer, s.older = nil, nil
}

func (c *Cache) touch(s *slot) {
	if c.head == s {
		return
	}
	c.unlink(s)
	c.pushFront(s)
}

// isSetID reports whether path is a set-user-id or set-group-id file; when
// it cannot tell, it says yes, the answer that claims nothing.
func isSetID(path string) bool {
	fi, err := os.Stat(path)
	if err != nil {
		return true
	}
	return fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0
}
