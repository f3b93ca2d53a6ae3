package enrich

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/audit"
	"github.com/fanaudit/fanaudit/enrich/internal/ids"
	"github.com/fanaudit/fanaudit/enrich/internal/proc"
	"github.com/fanaudit/fanaudit/internal/record"
)

// unsetID is the kernel's "not set" login uid and session id.
const unsetID = 1<<32 - 1

// Missing-field bits, in the order of missingNames.
const (
	missProcess = 1 << iota
	missExe
	missName
	missCmdline
	missStart
	missPPid
	missCgroup
	missUser
	missGroup
	missAudit
	missFileStat
	missEffective
	missPath
	numMissBits = iota
)

var missingNames = [numMissBits]string{
	"process", "process.executable", "process.name", "process.command_line",
	"process.start", "process.parent.pid", "process.cgroup.path",
	"user.id", "group.id", "user.audit", "file.stat", "user.effective.id",
	"file.path",
}

// maxPendingBatches bounds the batches waiting for hashes before Run stops
// reading its input.
const maxPendingBatches = 64

// Stats are the enricher's counters.
type Stats struct {
	Events  uint64 // events converted into records
	Full    uint64 // records with fanaudit.enrichment "full"
	Partial uint64 // records with fanaudit.enrichment "partial"
	Lost    uint64 // events_lost records passed through

	CacheHits      uint64
	CacheMisses    uint64
	CacheEvictions uint64
	CacheEntries   int
	ProcGone       uint64 // process gone before /proc could be read, nothing cached
	ProcGoneHits   uint64 // process gone, cached identity used
	Execs          uint64 // exec events that set an executable
	LateReads      uint64 // /proc read in Run because no Observe saw the pid
	LineageHits    uint64 // creds from the proc connector for a process gone from /proc
	LineageLost    uint64 // proc connector overflows

	StatErrors uint64

	HashDone          uint64
	HashSkippedSize   uint64
	HashSkippedBudget uint64
	HashUnavailable   uint64
	HashErrors        uint64
}

// Enricher turns audit events into records. Observe and Run may run
// concurrently (reader and enricher goroutines); each must be called from
// one goroutine only.
type Enricher struct {
	opts  Options
	log   zerolog.Logger
	cache *proc.Cache
	ids   *ids.DB
	host  *record.Host

	lineage      *proc.Lineage // nil when the proc connector is off or unavailable
	closeOnce    sync.Once
	observed     atomic.Bool
	trackAudit   bool
	missingCache [1 << numMissBits][]string // Run's goroutine only
	slabSize     int                        // Run's goroutine only: records per arena
	// Run's goroutine only: the last Resolve answers of the batch being
	// converted, for the process and for its parent (see resolveMemo).
	procMemo, parentMemo resolveMemo

	recycle func([]audit.Event) // RecycleTo; set before Run

	tokens     float64 // hash I/O budget, Run's goroutine only
	tokensAt   time.Time
	tokenBurst float64

	events, full, partial, lost, statErrs                             atomic.Uint64
	hashDone, hashSize, hashBudget, hashUnavail, hashErrs, runStarted atomic.Uint64
}

// New validates opts and reads the host identity and the user and group
// files. Unreadable host or id files are logged and leave those names
// unknown; they are not errors, since records stay correct without them.
func New(opts Options, log zerolog.Logger) (*Enricher, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	log = log.With().Str("component", "enrich").Logger()
	host, herrs := readHost(opts.ProcRoot, opts.EtcRoot)
	for _, err := range herrs {
		log.Warn().Err(err).Msg("host field unknown")
	}
	bt, err := bootTime(opts.ProcRoot)
	if err != nil {
		log.Warn().Err(err).Msg("process.start unknown for every record")
	}
	var lin *proc.Lineage
	if !opts.NoProcConnector && filepath.Clean(opts.ProcRoot) == "/proc" {
		if lin, err = proc.OpenLineage(opts.ProcRoot, opts.CacheSize*4, opts.CmdlineMax); err != nil {
			log.Warn().Err(err).Msg("proc connector unavailable: creds of processes gone before their first event stay unknown")
			lin = nil
		}
	}
	e := &Enricher{
		lineage: lin,
		opts:    opts,
		log:     log,
		host:    host,
		cache: proc.NewCache(proc.Config{
			Root:       opts.ProcRoot,
			CmdlineMax: opts.CmdlineMax,
			Size:       opts.CacheSize,
			TTL:        opts.CacheTTL,
			Pidfds:     !opts.NoPidfdReads && filepath.Clean(opts.ProcRoot) == "/proc",
			IDSeed:     host.ID + "|" + host.BootID,
			Lineage:    lin,
			BootTime:   bt,
			ClockTicks: opts.ClockTicks,
		}),
		ids:        ids.New(opts.PasswdPath, opts.GroupPath, opts.IDRefresh),
		tokens:     float64(max(opts.Hash.BytesPerSecond, opts.Hash.MaxSize)),
		tokenBurst: float64(max(opts.Hash.BytesPerSecond, opts.Hash.MaxSize)),
	}
	// Without audit support in the kernel there is no loginuid file for
	// any process; its absence is then not a per-record gap.
	for _, p := range []string{"self/loginuid", "1/loginuid"} {
		if _, err := os.Stat(filepath.Join(opts.ProcRoot, p)); err == nil {
			e.trackAudit = true
			break
		}
	}
	if perr, gerr := e.ids.LoadErrors(); perr != nil || gerr != nil {
		log.Warn().AnErr("passwd", perr).AnErr("group", gerr).Msg("user or group names unknown")
	}
	return e, nil
}

// RecycleTo makes Run hand every input batch to f once it is done with
// it: its events are released, its records emitted, and nothing refers to
// the slice any more (audit.Capture.Recycle). Call it before Run.
func (e *Enricher) RecycleTo(f func([]audit.Event)) { e.recycle = f }

// Close ends the proc connector subscription. Run's return does the same;
// Close is for an Enricher that never runs. It is idempotent.
func (e *Enricher) Close() error {
	var err error
	e.closeOnce.Do(func() {
		if e.lineage != nil {
			err = e.lineage.Close()
		}
	})
	return err
}

func (e *Enricher) lineageLost() uint64 {
	if e.lineage == nil {
		return 0
	}
	return e.lineage.Lost()
}

// Host returns the host fields every record shares.
func (e *Enricher) Host() *record.Host { return e.host }

// Observe implements audit.Observer. For a pid the cache can vouch for it
// costs a map lookup; otherwise it reads /proc at once.
func (e *Enricher) Observe(ev *audit.Event) {
	if ev.Action == audit.ActionEventsLost || ev.Pid <= 0 {
		return
	}
	if !e.observed.Load() {
		e.observed.Store(true)
	}
	t := ev.Time
	if t.IsZero() {
		t = time.Now()
	}
	e.cache.Observe(ev.Pid, t, ev.Action == audit.ActionExec, ev.Path, ev.PidFD)
}

// Stats returns the counters.
func (e *Enricher) Stats() Stats {
	cs := e.cache.Stats()
	return Stats{
		Events: e.events.Load(), Full: e.full.Load(), Partial: e.partial.Load(), Lost: e.lost.Load(),
		CacheHits: cs.Hits, CacheMisses: cs.Misses, CacheEvictions: cs.Evictions, CacheEntries: cs.Entries,
		ProcGone: cs.Gone, ProcGoneHits: cs.GoneHits, Execs: cs.Execs, LateReads: cs.LateReads, LineageHits: cs.LineageHits, LineageLost: e.lineageLost(), StatErrors: e.statErrs.Load(),
		HashDone: e.hashDone.Load(), HashSkippedSize: e.hashSize.Load(), HashSkippedBudget: e.hashBudget.Load(),
		HashUnavailable: e.hashUnavail.Load(), HashErrors: e.hashErrs.Load(),
	}
}

// pending is one input batch on its way out. n counts the hash jobs still
// running, plus one while Run is still filling the batch. Its records live
// in slab, one arena per batch; once emit has returned the batch is
// reused for a later one (see Run), so converting a batch allocates
// nothing once the first few have been made.
type pending struct {
	events []audit.Event
	slab   []record.Record
	recs   []*record.Record
	n      atomic.Int32
}

// maxFreeBatches bounds the batches Run keeps for reuse.
const maxFreeBatches = 4

type hashJob struct {
	ev  *audit.Event
	rec *record.Record
	p   *pending
}

// ErrRunning is returned by a second concurrent Run.
var ErrRunning = errors.New("enrich: Run already running")

// Run converts every batch from in into records and hands them to emit,
// in order, in its own goroutine. It releases every event exactly once,
// and returns nil once in is closed and everything read from it has been
// emitted. It keeps reading in after ctx ends, because the capture drains
// the kernel queue into in and then closes it. emit must be done with the
// records when it returns: Run reuses them for a later batch. An error
// from emit (the chain is aborting) ends Run with that error, as does
// ctx's end while Run waits for hashes.
func (e *Enricher) Run(ctx context.Context, in <-chan []audit.Event, emit func([]*record.Record) error) error {
	if e.runStarted.Add(1) != 1 {
		e.runStarted.Add(^uint64(0))
		return ErrRunning
	}
	defer e.runStarted.Add(^uint64(0))

	var jobs chan hashJob
	wake := make(chan struct{}, 1)
	var wg sync.WaitGroup
	if e.lineage != nil {
		// The connector must be drained even while no file event asks,
		// or its buffer overflows.
		lctx, stop := context.WithCancel(ctx)
		var lwg sync.WaitGroup
		lwg.Go(func() {
			if err := e.lineage.Run(lctx); err != nil {
				e.log.Warn().Err(err).Msg("proc connector stopped")
			}
		})
		defer func() {
			stop()
			lwg.Wait()
			e.Close()
		}()
	}
	if e.opts.Hash.Enabled {
		jobs = make(chan hashJob, e.opts.Hash.Workers*64)
		for range e.opts.Hash.Workers {
			wg.Go(func() { e.hashWorker(ctx, jobs, wake) })
		}
	}
	var fifo, free []*pending
	defer func() {
		if jobs != nil {
			close(jobs)
		}
		wg.Wait()
		// Only reached with records unsent when ctx ended; their events
		// were released when the records were built or hashed.
	}()

	send := func() error {
		for len(fifo) > 0 && fifo[0].n.Load() == 0 {
			p := fifo[0]
			if err := emit(p.recs); err != nil {
				return err
			}
			// Shift rather than reslice, so that appending to fifo
			// reuses its array instead of growing a new one per batch.
			n := copy(fifo, fifo[1:])
			fifo[n] = nil
			fifo = fifo[:n]
			if e.recycle != nil {
				// Every event was released when its record was built or
				// hashed, and hash jobs are done (n reached 0).
				e.recycle(p.events)
			}
			if len(free) < maxFreeBatches {
				// emit is done with the records: clear them for reuse
				// (fill sets only what it knows) and drop the events.
				clear(p.slab)
				p.events = nil
				free = append(free, p)
			}
		}
		return nil
	}
	for {
		if len(fifo) >= maxPendingBatches {
			select {
			case <-wake:
			case <-ctx.Done():
				return ctx.Err()
			}
			if err := send(); err != nil {
				return err
			}
			continue
		}
		var batch []audit.Event
		var ok bool
		select {
		case batch, ok = <-in:
		case <-wake:
			if err := send(); err != nil {
				return err
			}
			continue
		}
		if !ok {
			for len(fifo) > 0 {
				if err := send(); err != nil {
					return err
				}
				if len(fifo) > 0 {
					select {
					case <-wake:
					case <-ctx.Done():
						return ctx.Err()
					}
				}
			}
			return nil
		}
		if len(batch) == 0 {
			continue
		}
		var reuse *pending
		if n := len(free); n > 0 {
			reuse, free = free[n-1], free[:n-1]
		}
		p := e.convert(ctx, batch, jobs, reuse)
		fifo = append(fifo, p)
		if err := send(); err != nil {
			return err
		}
	}
}

// convert builds the batch's records, in p's arena when p is not nil (a
// cleared batch that was emitted before). Events without hash work are
// released here; the others by the hash worker.
func (e *Enricher) convert(ctx context.Context, batch []audit.Event, jobs chan<- hashJob, p *pending) *pending {
	if p == nil {
		p = &pending{}
	}
	if cap(p.slab) < len(batch) {
		// Arenas grow to the largest batch seen, so any one serves the next.
		e.slabSize = max(e.slabSize, len(batch))
		p.slab = make([]record.Record, e.slabSize)
		p.recs = make([]*record.Record, e.slabSize)
	}
	p.events, p.slab, p.recs = batch, p.slab[:len(batch)], p.recs[:len(batch)]
	slab := p.slab
	p.n.Store(1)
	now := time.Now()
	e.ids.Refresh(now)
	late := !e.observed.Load()
	e.procMemo, e.parentMemo = resolveMemo{}, resolveMemo{}
	var hashes []int
	for i := range batch {
		ev := &batch[i]
		r := &slab[i]
		p.recs[i] = r
		e.fill(r, ev, late)
		if jobs != nil && ev.Action == audit.ActionCloseWrite && e.hashDecision(r, ev, now) {
			hashes = append(hashes, i)
			continue
		}
		ev.Release()
	}
	p.n.Add(int32(len(hashes)))
	for _, i := range hashes {
		j := hashJob{ev: &batch[i], rec: p.recs[i], p: p}
		select {
		case jobs <- j:
		case <-ctx.Done():
			// Shutting down with the queue full: give up on this hash.
			j.rec.File.HashStatus = HashUnavailable
			e.hashUnavail.Add(1)
			j.ev.Release()
			p.n.Add(-1)
		}
	}
	p.n.Add(-1)
	return p
}

// fill converts one event. It runs once per event and must stay cheap for
// a cached pid: no allocation but the shared missing-names slice.
func (e *Enricher) fill(r *record.Record, ev *audit.Event, late bool) {
	e.events.Add(1)
	r.Timestamp = ev.Time
	r.Action = RecordAction(ev.Action)
	r.Host = e.host
	if ev.Action == audit.ActionEventsLost {
		r.Fanaudit.Lost = record.Lost{Reason: ev.LostReason, HasCount: ev.HasLost, Count: ev.Lost}
		// A loss in one place (unwatched_window: a directory) names it.
		r.File.Path = ev.Path
		if ev.Dir {
			r.File.Type = "dir"
		}
		e.lost.Add(1)
		return
	}
	r.File.Path = ev.Path
	r.File.OriginalPath = ev.OldPath
	if ev.Dir {
		r.File.Type = "dir"
	}
	var miss uint32
	if ev.Path == "" {
		// The capture could not name it (it counts these); say so
		// rather than leave the reader to guess.
		miss |= missPath
	}
	if e.opts.FileStat {
		if st, err := ev.Stat(); err == nil {
			f := &r.File
			f.HasStat, f.Inode, f.Mode, f.Size, f.UID, f.GID = true, st.Ino, st.Mode, st.Size, st.UID, st.GID
			if st.Type != "" {
				f.Type = st.Type
			}
		} else {
			e.statErrs.Add(1)
			// A deleted file has no stat to take; that is not a gap in
			// enrichment.
			if ev.Action != audit.ActionDelete && ev.Action != audit.ActionDeleteSelf {
				miss |= missFileStat
			}
		}
	}
	r.Process.Pid = ev.Pid
	t := ev.Time
	if t.IsZero() {
		t = time.Now()
	}
	var p *proc.Entry
	if ev.Time.IsZero() {
		p = e.cache.Resolve(ev.Pid, t, late)
	} else {
		p = e.resolve(&e.procMemo, ev.Pid, t, late)
	}
	if p == nil {
		miss |= missProcess | missExe | missName | missCmdline | missStart | missPPid | missCgroup | missUser | missGroup
		if e.trackAudit {
			miss |= missAudit
		}
	} else {
		miss |= e.fillProcess(r, p, t)
	}
	if miss == 0 {
		r.Fanaudit.Enrichment = "full"
		e.full.Add(1)
		return
	}
	r.Fanaudit.Enrichment = "partial"
	r.Fanaudit.Missing = e.missing(miss)
	e.partial.Add(1)
}

// resolveMemo is one Resolve answer kept for the rest of a batch. The
// events of one read share their time and mostly their pid, so they ask
// the cache the same question; each Resolve takes the cache's lock, which
// the capture goroutine's Observe takes for every event too, and the
// lock's cache line bouncing between the cores was 3-6 % of a drain's CPU
// (two Resolves a record). The capture observed the whole batch before
// sending it, so the first answer for a pid at the batch's time holds for
// the rest of it; a later change (an eviction, a late /proc read) is not
// more right about that time.
type resolveMemo struct {
	pid  int32
	t    time.Time
	late bool
	ok   bool
	e    *proc.Entry
}

// resolve is cache.Resolve through m.
func (e *Enricher) resolve(m *resolveMemo, pid int32, t time.Time, late bool) *proc.Entry {
	if m.ok && m.pid == pid && m.late == late && m.t.Equal(t) {
		return m.e
	}
	p := e.cache.Resolve(pid, t, late)
	*m = resolveMemo{pid: pid, t: t, late: late, ok: true, e: p}
	return p
}

func (e *Enricher) fillProcess(r *record.Record, p *proc.Entry, t time.Time) (miss uint32) {
	pr := &r.Process
	if p.HasPPid {
		pr.PPid = p.PPid
		// The parent's identity, from the cache (or /proc once per
		// parent); not knowing it does not make the record partial.
		if pp := e.resolve(&e.parentMemo, p.PPid, t, true); pp != nil {
			if pp.HasExe {
				pr.ParentExecutable = pp.Exe
			}
			pr.ParentEntityID = pp.EntityID
		}
	} else {
		miss |= missPPid
	}
	if p.HasExe {
		pr.Executable = p.Exe
	} else {
		miss |= missExe
	}
	switch {
	case p.HasComm:
		pr.Name = p.Comm
	case p.HasExe && p.Exe != "":
		// comm is gone with the process; the kernel set it from the
		// executable's base name at exec.
		pr.Name = filepath.Base(p.Exe)
	default:
		miss |= missName
	}
	if p.HasCmdline && p.Cmdline != "" {
		pr.CommandLine, pr.Args = p.Cmdline, p.Argv
	} else {
		miss |= missCmdline
	}
	if p.HasStart && !p.Start.IsZero() {
		pr.Start = p.Start
		pr.EntityID = p.EntityID
	} else {
		miss |= missStart
	}
	if p.HasCgroup {
		pr.CgroupPath = p.CgroupPath
		r.Container.ID, r.Container.Runtime = p.ContainerID, p.Runtime
	} else {
		miss |= missCgroup
	}
	u := &r.User
	if p.HasCreds {
		c := p.Creds
		u.HasID, u.ID, u.Name = true, c.RUID, e.ids.User(c.RUID)
		if p.NoEffective {
			miss |= missEffective
		} else if c.EUID != c.RUID {
			u.HasEID, u.EID = true, c.EUID
		}
		u.HasGID, u.GID, u.Group = true, c.RGID, e.ids.Group(c.RGID)
	} else {
		miss |= missUser | missGroup
	}
	if p.HasLoginUID {
		if p.LoginUID != unsetID {
			u.HasAUID, u.AUID, u.AName = true, p.LoginUID, e.ids.User(p.LoginUID)
		}
		if p.HasSession && p.Session != unsetID {
			u.HasSess, u.Session = true, p.Session
		}
	} else if e.trackAudit {
		miss |= missAudit
	}
	return miss
}

// CheckNamed returns an error for a file event record that has no
// file.path and does not say so in fanaudit.missing: the contract promises
// that every file event is named or marked. Tests assert it on every
// record they read.
func CheckNamed(r *record.Record) error {
	if r.Action == record.ActionEventsLost || r.File.Path != "" {
		return nil
	}
	for _, m := range r.Fanaudit.Missing {
		if m == "file.path" {
			return nil
		}
	}
	return fmt.Errorf("%s record without file.path and without fanaudit.missing file.path", r.Action)
}

// missing returns the shared, read-only names for a set of missing bits.
func (e *Enricher) missing(bits uint32) []string {
	if s := e.missingCache[bits]; s != nil {
		return s
	}
	var s []string
	for i := range numMissBits {
		if bits&(1<<i) != 0 {
			s = append(s, missingNames[i])
		}
	}
	s = s[:len(s):len(s)]
	e.missingCache[bits] = s
	return s
}
