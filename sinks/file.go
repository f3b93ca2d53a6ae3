package sinks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/internal/pipeline/queue"
	"github.com/fanaudit/fanaudit/internal/record"
	"github.com/fanaudit/fanaudit/internal/safefile"
)

// The file sink has its own small rotator rather than natefinch/lumberjack:
// lumberjack rotates by size only (its MaxAge prunes, it never triggers a
// rotation), passes a failed write through with a partial line left in the
// file, cannot reopen a path that logrotate moved away (its Rotate renames
// the file itself), and compresses in a goroutine of its own outside any
// Run(ctx). Every one of those is a requirement here.

const (
	retryMin = 100 * time.Millisecond
	retryMax = 5 * time.Second
	// tailChunk is how far back one read looks for the last newline when
	// repairing a file a crash left with a partial final line.
	tailChunk = 64 << 10
	// backupLayout sorts lexically in time order and has a fixed width.
	backupLayout = "20060102T150405.000000000Z"
	// pathCheckEvery is how often the sink checks, after a write, that
	// Path still leads to its file (a deleted file is checked every write).
	pathCheckEvery = time.Second
)

// FileStats counts what the file sink did since it was created.
type FileStats struct {
	Lines       uint64 // lines written (and synced, for fsync = always)
	Bytes       uint64
	Rotations   uint64
	WriteErrors uint64 // failed write, open or rotate attempts
	SyncErrors  uint64
	Syncs       uint64 // successful fsyncs
}

// File is the JSON lines file sink.
type File struct {
	opts    FileOptions
	maxSize int64
	log     zerolog.Logger

	// Test seams, set before Run.
	now               func() time.Time
	retryMin          time.Duration
	retryMax          time.Duration
	onStall, onResume func()
	rotatedHook       func() // after the old file took its backup name
	exchangeErr       error  // tests: what a log filesystem without RENAME_EXCHANGE answers
	noExchangeLogged  bool

	mu          sync.Mutex // guards everything below; Reopen and the syncer run beside Run
	f           *os.File
	dir         *safefile.Dir // the checked directory f was opened in
	reopenFail  bool          // reopening a replaced file is in an error streak
	pathChecked time.Time     // when checkPathLocked last compared f with Path
	size        int64         // bytes of whole lines in f; the file never keeps more
	badTail     bool          // the file may hold bytes past size that must be cut
	opened      time.Time
	dirty       bool // written since the last sync
	closed      bool
	syncFail    bool // the interval syncer is in an error streak
	rotateFail  bool // rotation is in an error streak
	jobs        chan string
	buf         []byte
	seal        fileSeal // sealing, when SetSealer was called (seal.go)

	lines, bytes, rotations, writeErrs, syncErrs, syncs atomic.Uint64
}

// NewFile validates opts, creates missing parent directories and opens
// (or creates) the file, so that a bad path fails at start-up. Run closes
// the file when it returns; call Close instead when Run never runs.
func NewFile(opts FileOptions, log zerolog.Logger) (*File, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("file sink: %w", err)
	}
	s := &File{
		opts:     opts,
		maxSize:  int64(opts.MaxSizeMB) << 20,
		log:      log.With().Str("component", "sink").Str("sink", "file").Str("path", opts.Path).Logger(),
		now:      time.Now,
		retryMin: retryMin,
		retryMax: retryMax,
	}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

// Name implements Sink.
func (s *File) Name() string { return "file" }

// SettlesInOrder implements Ordered: a batch is written, and settled, in
// the order it was taken, and no item is kept once settled.
func (s *File) SettlesInOrder() bool { return true }

// Stats returns the sink's counters.
func (s *File) Stats() FileStats {
	return FileStats{
		Lines:       s.lines.Load(),
		Bytes:       s.bytes.Load(),
		Rotations:   s.rotations.Load(),
		WriteErrors: s.writeErrs.Load(),
		SyncErrors:  s.syncErrs.Load(),
		Syncs:       s.syncs.Load(),
	}
}

// Reopen closes the file and opens Path again, creating it when it is
// missing. It is meant for SIGHUP after logrotate moved the file away
// (with or without creating a new one) and is safe beside Run. When the
// open fails the old file stays in use and the error is returned.
func (s *File) Reopen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	f, dir, size, err := s.openFile()
	if err != nil {
		s.log.Error().Err(err).Msg("reopen failed; writing on to the file already open")
		return err
	}
	if err := s.closeLocked(); err != nil {
		s.log.Warn().Err(err).Msg("closing the file before reopening")
	}
	s.f, s.dir, s.size, s.badTail, s.opened = f, dir, size, false, s.now()
	s.log.Info().Msg("reopened")
	return nil
}

// Close syncs (unless fsync = never) and closes the file. Run calls it on
// return; it is idempotent.
func (s *File) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return s.closeLocked()
}

func (s *File) closeLocked() error {
	if s.f == nil {
		return nil
	}
	var errs []error
	if s.opts.Fsync != FsyncNever && s.dirty {
		if err := s.f.Sync(); err != nil {
			s.syncErrs.Add(1)
			errs = append(errs, fmt.Errorf("file sink: sync %s: %w", s.f.Name(), err))
		} else {
			s.syncs.Add(1)
		}
	}
	if err := s.f.Close(); err != nil {
		errs = append(errs, fmt.Errorf("file sink: close %s: %w", s.f.Name(), err))
	}
	if err := s.dir.Close(); err != nil {
		errs = append(errs, fmt.Errorf("file sink: close directory of %s: %w", s.opts.Path, err))
	}
	s.f, s.dir, s.dirty = nil, nil, false
	return errors.Join(errs...)
}

func (s *File) open() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.openLocked()
}

func (s *File) openLocked() error {
	f, dir, size, err := s.openFile()
	if err != nil {
		return err
	}
	s.f, s.dir, s.size, s.badTail, s.opened, s.dirty = f, dir, size, false, s.now(), false
	return nil
}

// openDir opens Path's directory through internal/safefile, creating
// missing directories with dir_mode, and refuses one that a user other
// than root could write (the error names the key "path").
func (s *File) openDir(create bool) (*safefile.Dir, error) {
	return safefile.OpenDir(filepath.Dir(s.opts.Path), safefile.Options{
		Key: "path", Create: create, DirMode: os.FileMode(s.opts.DirMode),
	})
}

// openFile opens Path for appending, creating it (and its directories)
// with the configured modes, and cuts a partial final line left by a
// crash so that the next line starts on a line of its own. It never
// writes through a symbolic link: the directories are walked and checked
// from "/" and the file is opened relative to its directory with
// O_NOFOLLOW (internal/safefile). An existing file keeps its mode, which
// logrotate or the admin chose, but must be root's, with one link.
func (s *File) openFile() (*os.File, *safefile.Dir, int64, error) {
	dir, err := s.openDir(true)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("file sink: %w", err)
	}
	// O_RDWR because the tail repair reads the end of the file.
	f, err := dir.OpenFile(filepath.Base(s.opts.Path), os.O_RDWR|os.O_APPEND|os.O_CREATE, os.FileMode(s.opts.FileMode))
	if err != nil {
		dir.Close()
		return nil, nil, 0, fmt.Errorf("file sink: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		dir.Close()
		return nil, nil, 0, fmt.Errorf("file sink: stat %s: %w", s.opts.Path, err)
	}
	size, err := s.repairTail(f, fi.Size())
	if err != nil {
		f.Close()
		dir.Close()
		return nil, nil, 0, err
	}
	return f, dir, size, nil
}

// repairTail truncates f after its last newline. Only a crash mid-write
// leaves bytes there, and they are an incomplete record that no reader
// could parse; keeping them would also glue the next record onto it.
func (s *File) repairTail(f *os.File, size int64) (int64, error) {
	if size == 0 {
		return 0, nil
	}
	var last [1]byte
	if _, err := f.ReadAt(last[:], size-1); err != nil {
		return 0, fmt.Errorf("file sink: read tail of %s: %w", f.Name(), err)
	}
	if last[0] == '\n' {
		return size, nil
	}
	buf := make([]byte, tailChunk)
	end := size
	keep := int64(0)
	for end > 0 {
		start := max(end-tailChunk, 0)
		chunk := buf[:end-start]
		if _, err := f.ReadAt(chunk, start); err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("file sink: read tail of %s: %w", f.Name(), err)
		}
		if i := bytes.LastIndexByte(chunk, '\n'); i >= 0 {
			keep = start + int64(i) + 1
			break
		}
		end = start
	}
	if err := f.Truncate(keep); err != nil {
		return 0, fmt.Errorf("file sink: cut partial last line of %s: %w", f.Name(), err)
	}
	s.log.Warn().Int64("bytes", size-keep).Msg("cut a partial last line left by an earlier crash")
	return keep, nil
}

// Run implements Sink; it runs once and closes the file when it returns.
//
// Each batch goes out in one write of whole lines. When a write fails
// (ENOSPC, EIO) the file is cut back to its last whole line, the lines
// that did land are settled, and the rest stay in flight while the write
// is retried with backoff: the queue's policy then applies upstream (Block
// pushes back, the drop policies drop and count). Rotated files are
// compressed and pruned by a helper goroutine so that a large gzip does
// not stall writing; Run waits for it before returning.
func (s *File) Run(ctx context.Context, q Input) error {
	jobs := make(chan string, 16)
	s.mu.Lock()
	if s.closed || s.jobs != nil {
		s.mu.Unlock()
		return errors.New("file sink: Run called on a closed or running sink")
	}
	s.jobs = jobs
	s.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.janitor(ctx, jobs)
	}()
	stopSync := make(chan struct{})
	if s.opts.Fsync == FsyncInterval {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.syncer(stopSync)
		}()
	}

	s.sealBegin()
	buf := make([]*Item, 0, batchSize)
	var runErr error
	for {
		items, err := s.next(ctx, q, buf)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				runErr = err
			}
			break
		}
		if err := s.write(ctx, q, items); err != nil {
			runErr = err
			break
		}
	}

	s.sealClose()
	close(stopSync)
	cerr := s.Close()
	s.mu.Lock()
	s.jobs = nil
	s.mu.Unlock()
	close(jobs)
	wg.Wait()
	if cerr != nil {
		s.log.Error().Err(cerr).Msg("closing")
	}
	if runErr != nil {
		return runErr
	}
	return cerr
}

// write writes items, retrying until all are settled or ctx ends; it only
// fails with ctx's error, after failing whatever was left.
func (s *File) write(ctx context.Context, q Input, items []*Item) error {
	// Items are settled in the order they were taken (Ordered): the
	// lines before a bad one are written first.
	for len(items) > 0 {
		bad := slices.IndexFunc(items, func(it *Item) bool { return !validLine(it.Line) })
		if bad < 0 {
			return s.writeValid(ctx, q, items)
		}
		if err := s.writeValid(ctx, q, items[:bad]); err != nil {
			q.Failed(len(items)-bad, record.ReasonSinkError)
			return err
		}
		// Logged before it is settled: then its memory may be reused.
		it := items[bad]
		s.log.Error().Uint64("seq", it.Seq).Int("len", len(it.Line)).Msg("dropping item whose Line is not exactly one newline-terminated line")
		q.Failed(1, record.ReasonSinkError)
		items = items[bad+1:]
	}
	return nil
}

// writeValid is write for items whose lines are valid.
func (s *File) writeValid(ctx context.Context, q Input, items []*Item) error {
	backoff := s.retryMin
	streak := 0
	unsynced := 0 // written, waiting for fsync = always
	for len(items) > 0 || unsynced > 0 {
		var err error
		if unsynced > 0 {
			if err = s.sync(); err == nil {
				q.Delivered(unsynced)
				s.lines.Add(uint64(unsynced))
				unsynced = 0
			}
		} else {
			var n int
			n, err = s.writeSome(items)
			if n > 0 {
				items = items[n:]
				if s.opts.Fsync == FsyncAlways {
					unsynced = n
					continue
				}
				q.Delivered(n)
				s.lines.Add(uint64(n))
			}
		}
		if err == nil {
			if streak > 0 {
				s.log.Info().Int("retries", streak).Msg("writing again")
				if s.onResume != nil {
					s.onResume()
				}
			}
			streak, backoff = 0, s.retryMin
			continue
		}
		if streak == 0 {
			// Once per streak: a full disk would otherwise log every retry.
			s.log.Error().Err(err).Int("in_flight", len(items)+unsynced).Msg("write failed; keeping the items and retrying")
			if s.onStall != nil {
				s.onStall()
			}
		}
		streak++
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			q.Failed(len(items)+unsynced, record.ReasonSinkError)
			return ctx.Err()
		}
		backoff = min(2*backoff, s.retryMax)
	}
	return nil
}

// writeSome writes a prefix of items that fits the current file (at least
// one item) and returns how many whole lines reached it. On a short write
// the file is cut back so that it ends with a whole line.
func (s *File) writeSome(items []*Item) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, errors.New("file sink: closed")
	}
	if s.f == nil {
		if err := s.openLocked(); err != nil {
			s.writeErrs.Add(1)
			return 0, err
		}
	}
	if s.badTail {
		if err := s.f.Truncate(s.size); err != nil {
			s.writeErrs.Add(1)
			return 0, fmt.Errorf("file sink: cut partial line of %s: %w", s.opts.Path, err)
		}
		s.badTail = false
	}
	if s.size > 0 && s.dueForRotation(len(items[0].Line)) {
		s.sealBeforeRotateLocked()
		if err := s.rotateLocked(); err != nil {
			s.writeErrs.Add(1)
			if s.f == nil {
				return 0, err
			}
			// The old file is still open: keep writing to it rather
			// than stall; the next batch tries to rotate again.
			if !s.rotateFail {
				s.log.Warn().Err(err).Msg("rotation failed; writing on")
			}
			s.rotateFail = true
		} else {
			s.rotateFail = false
		}
	}
	if err := s.sealWriteLocked(); err != nil {
		return 0, err
	}

	buf, n := s.gather(items)
	w, err := s.f.Write(buf)
	if err == nil {
		s.size += int64(w)
		s.dirty = true
		s.bytes.Add(uint64(w))
		n, err := s.checkPathLocked(n)
		s.sealWrittenLocked(buf, items[:n])
		return n, err
	}
	s.writeErrs.Add(1)
	keep := bytes.LastIndexByte(buf[:w], '\n') + 1
	lines := 0
	for off := 0; lines < n && off+len(items[lines].Line) <= keep; lines++ {
		off += len(items[lines].Line)
	}
	if keep < w {
		if terr := s.f.Truncate(s.size + int64(keep)); terr != nil {
			s.badTail = true
			err = errors.Join(err, fmt.Errorf("cut partial line: %w", terr))
		}
	}
	s.size += int64(keep)
	if keep > 0 {
		s.dirty = true
		s.bytes.Add(uint64(keep))
	}
	s.sealWrittenLocked(buf, items[:lines])
	return lines, fmt.Errorf("file sink: write %s: %w", s.opts.Path, err)
}

// gather returns the bytes of the next write and how many items they
// are: a prefix of items that fits the current file (at least one item).
// Lines that the pipeline encoded back to back are written from its
// buffer as they are (queue.Run), which the sink may read while it holds
// the items; only a batch whose first lines are not is copied into the
// sink's own buffer.
func (s *File) gather(items []*Item) ([]byte, int) {
	run, n := queue.Run(items)
	if n > 1 || len(items) == 1 {
		if s.maxSize > 0 && s.size+int64(len(run)) > s.maxSize {
			size, k := len(items[0].Line), 1
			for k < n && s.size+int64(size+len(items[k].Line)) <= s.maxSize {
				size += len(items[k].Line)
				k++
			}
			run, n = run[:size], k
		}
		return run, n
	}
	buf := s.buf[:0]
	n = 0
	for _, it := range items {
		if n > 0 && s.maxSize > 0 && s.size+int64(len(buf)+len(it.Line)) > s.maxSize {
			break
		}
		buf = append(buf, it.Line...)
		n++
	}
	s.buf = buf
	return buf, n
}

// checkPathLocked runs after n lines were written. One fstat (no
// allocation) tells whether the file was deleted: then the lines went
// into an inode nobody can read, so the file is reopened (created anew)
// and 0 is returned, and write writes the same lines again, into the new
// file. At most once a second (pathCheckEvery) one more fstatat tells
// whether Path now leads to another file (or link): the lines are then
// in the old file, which still has a name, and the new one is opened for
// the next batch. A file merely moved away (logrotate before its SIGHUP)
// is kept: Reopen or rotation deals with it.
func (s *File) checkPathLocked(n int) (int, error) {
	change := safefile.Same
	if gone, err := safefile.Deleted(s.f); err == nil && gone {
		change = safefile.Unlinked
	} else if now := s.now(); now.Sub(s.pathChecked) >= pathCheckEvery || now.Before(s.pathChecked) {
		s.pathChecked = now
		if c, err := s.dir.Compare(s.f, filepath.Base(s.opts.Path)); err == nil {
			// An error (EIO, say) is no verdict on the file: the write worked.
			change = c
		}
	}
	switch change {
	case safefile.Same, safefile.Moved:
		return n, nil
	case safefile.Unlinked:
		s.log.Warn().Int("lines", n).Msg("output file was deleted under the sink; reopening it and writing those lines again")
		if cerr := s.closeLocked(); cerr != nil {
			s.log.Warn().Err(cerr).Msg("closing the deleted file")
		}
		if err := s.openLocked(); err != nil {
			s.writeErrs.Add(1)
			return 0, err
		}
		s.log.Info().Msg("reopened")
		return 0, nil
	default: // Replaced
		f, dir, size, err := s.openFile()
		if err != nil {
			if !s.reopenFail {
				s.log.Error().Err(err).Msg("output path now leads to another file, which cannot be opened; writing on to the file already open")
			}
			s.reopenFail = true
			return n, nil
		}
		s.reopenFail = false
		s.log.Warn().Msg("output path now leads to another file; reopened it")
		if cerr := s.closeLocked(); cerr != nil {
			s.log.Warn().Err(cerr).Msg("closing the replaced file")
		}
		s.f, s.dir, s.size, s.badTail, s.opened = f, dir, size, false, s.now()
		return n, nil
	}
}

func (s *File) dueForRotation(next int) bool {
	if s.maxSize > 0 && s.size+int64(next) > s.maxSize {
		return true
	}
	return s.opts.MaxAge > 0 && s.now().Sub(s.opened) >= s.opts.MaxAge
}

// rotateLocked renames Path to a backup and opens a new Path. A failed
// rename leaves the old file open; a failed open leaves none, which the
// next write retries. Only the sink's own file is renamed: when Path no
// longer leads to it (moved away without a Reopen, replaced), a new file
// is started where it belongs and whatever is at Path is left alone (when
// that cannot be opened, the old file stays in use). The rename never
// replaces an existing name, so a name planted at the backup's name is
// neither followed nor lost; the next free name is used.
//
// Path is never free during a rotation: the new file is made first under
// a random name and takes Path in the same step the old file leaves it
// (RENAME_EXCHANGE); the old file then moves on to its backup name. In a
// shared sticky directory, which the sink accepts, another user could
// otherwise take the free name between the rename and the new file's
// creation (a link, which is never followed), and every write would then
// fail, stalling the pipeline, until someone removed it (user6). Where
// the filesystem cannot swap names (NFS, CIFS), the new file takes Path
// by a plain rename right after the old one left it, which replaces what
// was planted in between (rev6).
func (s *File) rotateLocked() error {
	base := filepath.Base(s.opts.Path)
	change, err := s.dir.Compare(s.f, base)
	if err != nil {
		return fmt.Errorf("file sink: rotate %s: %w", s.opts.Path, err)
	}
	if change != safefile.Same {
		// Once until a rotation succeeds again, as "rotation failed":
		// while the new file cannot be made, every batch comes here.
		if !s.rotateFail {
			s.log.Info().Stringer("change", change).Msg("output file is no longer at its path; starting a new one instead of rotating")
		}
		f, dir, size, err := s.openFile()
		if err != nil {
			return err // the old file stays open and in use
		}
		if err := s.closeLocked(); err != nil {
			s.log.Warn().Err(err).Msg("closing the moved file")
		}
		s.f, s.dir, s.size, s.badTail, s.opened = f, dir, size, false, s.now()
		return nil
	}
	old := base // the old file's name until it has its backup name
	// next: the new file, under its temp name, when RENAME_EXCHANGE
	// failed (NFS, CIFS and some FUSE filesystems lack it): it takes Path
	// by a plain rename right after the old file left it, replacing
	// whatever someone put there meanwhile (a rename never follows a
	// link), instead of a create that a planted link would make fail
	// at every write.
	next := ""
	if nf, tmp, err := s.dir.CreateTemp(base+".rotating.", os.FileMode(s.opts.FileMode)); err == nil {
		nf.Close()
		err := s.exchangeErr
		if err == nil {
			err = s.dir.Exchange(tmp, base)
		}
		if err == nil {
			old = tmp
		} else {
			next = tmp
			if !s.noExchangeLogged {
				s.noExchangeLogged = true
				s.log.Warn().Err(err).Msg("the log directory's filesystem cannot swap names (RENAME_EXCHANGE): rotation renames twice, and the output path is free in between")
			}
		}
	}
	var backup string
	for try := 0; ; try++ {
		backup, err = s.backupName()
		if err == nil {
			err = s.dir.RenameNoReplace(old, backup)
		}
		if err == nil || !errors.Is(err, fs.ErrExist) || try >= 100 {
			break
		}
	}
	if err != nil && old == base {
		if next != "" {
			if rerr := s.dir.Remove(next); rerr != nil {
				s.log.Warn().Err(rerr).Msg("removing an unused temp file")
			}
		}
		return fmt.Errorf("file sink: rotate %s: %w", s.opts.Path, err)
	}
	if err != nil {
		// The old file is complete under its temp name, and Path is the
		// new file already: write on there, and say where the old one is.
		s.log.Error().Err(err).Str("rotated_to", old).Msg("rotated file could not take its backup name; it keeps the temp name")
		backup = ""
	}
	if s.rotatedHook != nil {
		s.rotatedHook()
	}
	if next != "" {
		if err := s.dir.Rename(next, base); err != nil {
			s.log.Warn().Err(err).Msg("the new file could not take the output path; creating it there")
			if rerr := s.dir.Remove(next); rerr != nil {
				s.log.Warn().Err(rerr).Msg("removing an unused temp file")
			}
		}
	}
	if s.opts.Fsync != FsyncNever {
		if err := s.dir.Sync(); err != nil {
			s.log.Warn().Err(err).Msg("syncing the directory after rotation")
		}
	}
	if err := s.closeLocked(); err != nil {
		s.log.Warn().Err(err).Msg("closing the rotated file")
	}
	s.rotations.Add(1)
	if s.jobs != nil && backup != "" {
		s.jobs <- backup
	}
	if err := s.openLocked(); err != nil {
		return err
	}
	return nil
}

// backupName returns the name (in Path's directory) Path.TIMESTAMP that
// no backup uses yet, plain or gzipped.
func (s *File) backupName() (string, error) {
	t := s.now().UTC()
	base := filepath.Base(s.opts.Path)
	for {
		name := base + "." + t.Format(backupLayout)
		used, err := s.dir.Exists(name)
		if err != nil {
			return "", err
		}
		if !used {
			if used, err = s.dir.Exists(name + ".gz"); err != nil {
				return "", err
			}
		}
		if !used {
			return name, nil
		}
		t = t.Add(time.Nanosecond)
	}
}

// sync fsyncs the current file.
func (s *File) sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil || !s.dirty {
		return nil
	}
	if err := s.f.Sync(); err != nil {
		s.syncErrs.Add(1)
		return fmt.Errorf("file sink: sync %s: %w", s.opts.Path, err)
	}
	s.syncs.Add(1)
	s.dirty = false
	return nil
}

// syncer runs the fsync = interval syncs until stop closes.
func (s *File) syncer(stop <-chan struct{}) {
	t := time.NewTicker(s.opts.FsyncInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		err := s.sync()
		s.mu.Lock()
		was := s.syncFail
		s.syncFail = err != nil
		s.mu.Unlock()
		switch {
		case err != nil && !was:
			s.log.Error().Err(err).Msg("periodic fsync failed")
		case err == nil && was:
			s.log.Info().Msg("periodic fsync works again")
		}
	}
}

// janitor compresses and prunes rotated files, one at a time, until jobs
// closes. Once ctx ends it only prunes, so shutdown is not held up by gzip.
func (s *File) janitor(ctx context.Context, jobs <-chan string) {
	for backup := range jobs {
		// A directory of its own: the sink may reopen (and close its
		// directory) meanwhile, and the walk checks the path again.
		dir, err := s.openDir(false)
		if err != nil {
			s.log.Error().Err(err).Str("backup", backup).Msg("opening the directory of a rotated file; leaving it uncompressed and unpruned")
			continue
		}
		if s.opts.Compress && ctx.Err() == nil {
			if err := compressFile(dir, backup, os.FileMode(s.opts.FileMode)); err != nil {
				s.log.Error().Err(err).Str("backup", backup).Msg("compressing a rotated file; leaving it uncompressed")
			}
		}
		if err := s.prune(dir); err != nil {
			s.log.Error().Err(err).Msg("pruning rotated files")
		}
		dir.Close()
	}
}
