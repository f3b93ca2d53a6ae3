package sinks

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Sealer seals the lines a sink writes (internal/seal.Sealer; see
// docs/sealing.md). A sink writes Begin's line before its first record,
// calls Append for each record line once it is written, in write order
// (or AppendRun for lines it wrote back to back from one buffer: that
// saves a copy), writes Seal's line when Due (and may before a rotation),
// and Close's line at the end of Run. Seal lines are records the sink
// writes itself: they are not queue items and are never settled.
type Sealer interface {
	Begin(now time.Time) ([]byte, error)
	Append(line []byte, seq uint64)
	// AppendRun is Append for the lines in run, back to back; ends[i] is
	// the offset just past line i; first and last are the sequences of
	// the first and the last line.
	AppendRun(run []byte, ends []int, first, last uint64)
	Due(now time.Time) bool
	Pending() bool
	NextDue() (time.Time, bool)
	Seal(now time.Time) ([]byte, error)
	Close(now time.Time) ([]byte, error)
}

// SealWait is q.Next for a sink with a sealer, with what the sink keeps
// between its calls. It also returns when the next seal falls due while
// the queue is idle, after calling idle, so that records are sealed within
// seal_interval even on a quiet stream. The context that ends at the due
// time is made once per seal, not once per batch (each is a timer and
// allocations). The zero value is ready; Stop releases it.
type SealWait struct {
	parent context.Context
	at     time.Time // the due time ctx ends at
	ctx    context.Context
	cancel context.CancelFunc
}

// Next is q.Next, returning also when a seal falls due while the queue
// is idle, after calling idle.
func (w *SealWait) Next(ctx context.Context, q Input, buf []*Item, sl Sealer, now func() time.Time, idle func()) ([]*Item, error) {
	for {
		at, pending := sl.NextDue()
		if !pending {
			return q.Next(ctx, buf)
		}
		d := at.Sub(now())
		if d <= 0 {
			idle()
			continue
		}
		if w.ctx == nil || w.parent != ctx || !w.at.Equal(at) || w.ctx.Err() != nil {
			w.Stop()
			w.ctx, w.cancel = context.WithTimeout(ctx, d)
			w.parent, w.at = ctx, at
		}
		items, err := q.Next(w.ctx, buf)
		if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			w.Stop()
			idle()
			continue
		}
		return items, err
	}
}

// Stop releases the timer of the wait, if any.
func (w *SealWait) Stop() {
	if w.cancel != nil {
		w.cancel()
	}
	*w = SealWait{}
}

// fileSeal is the file sink's sealing state: the sealer and a seal line
// that is made but not yet written (the chain already includes it, so it
// is written before any later record).
type fileSeal struct {
	sl   Sealer
	line []byte
	ends []int // line ends of the run just written, reused
	wait SealWait
}

// SetSealer turns sealing on; call it before Run.
func (s *File) SetSealer(sl Sealer) { s.seal.sl = sl }

// sealWriteLocked writes the pending seal line, if any, cutting a partial
// write back so that the file keeps ending with a whole line.
func (s *File) sealWriteLocked() error {
	if len(s.seal.line) == 0 || s.f == nil {
		return nil
	}
	w, err := s.f.Write(s.seal.line)
	if err == nil {
		s.size += int64(w)
		s.dirty = true
		s.bytes.Add(uint64(w))
		s.seal.line = nil
		return nil
	}
	s.writeErrs.Add(1)
	if w > 0 {
		if terr := s.f.Truncate(s.size); terr != nil {
			s.badTail = true
		}
	}
	return fmt.Errorf("file sink: write seal to %s: %w", s.opts.Path, err)
}

// sealLocked makes a seal with mk and writes it.
func (s *File) sealLocked(mk func(time.Time) ([]byte, error)) {
	line, err := mk(s.now())
	if err != nil {
		s.log.Error().Err(err).Msg("sealing: the state file could not be updated; the old epoch key may still be on disk")
	}
	s.seal.line = append(s.seal.line, line...)
	if err := s.sealWriteLocked(); err != nil {
		s.log.Error().Err(err).Msg("sealing: seal record not written yet; retrying before the next record")
	}
}

// sealWrittenLocked feeds the lines that reached the file to the sealer
// and writes a seal when one is due. run is the buffer they were written
// from, back to back (writeSome): the sealer authenticates it in place.
func (s *File) sealWrittenLocked(run []byte, items []*Item) {
	if s.seal.sl == nil || len(items) == 0 {
		return
	}
	ends, off := s.seal.ends[:0], 0
	for _, it := range items {
		off += len(it.Line)
		ends = append(ends, off)
	}
	s.seal.ends = ends
	s.seal.sl.AppendRun(run[:off], ends, items[0].Seq, items[len(items)-1].Seq)
	if s.seal.sl.Due(s.now()) {
		s.sealLocked(s.seal.sl.Seal)
	}
}

// sealBeforeRotateLocked closes the current file with a seal, so that
// every rotated file ends sealed.
func (s *File) sealBeforeRotateLocked() {
	if s.seal.sl != nil && s.seal.sl.Pending() {
		s.sealLocked(s.seal.sl.Seal)
	}
}

// sealRun runs fn (begin, idle or close) under the lock.
func (s *File) sealRun(fn func(time.Time) ([]byte, error)) {
	if s.seal.sl == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		if err := s.openLocked(); err != nil {
			s.log.Error().Err(err).Msg("sealing: cannot open the file for a seal record")
		}
	}
	if err := s.sealWriteLocked(); err != nil {
		s.log.Error().Err(err).Msg("sealing: seal record not written")
	}
	if fn != nil {
		s.sealLocked(fn)
	}
}

// sealBegin writes the open seal at the start of Run; sealClose writes
// the closing seal at its end.
func (s *File) sealBegin() {
	if s.seal.sl != nil {
		s.sealRun(s.seal.sl.Begin)
	}
}

func (s *File) sealClose() {
	if s.seal.sl != nil {
		s.seal.wait.Stop()
		s.sealRun(s.seal.sl.Close)
	}
}

func (s *File) next(ctx context.Context, q Input, buf []*Item) ([]*Item, error) {
	if s.seal.sl == nil {
		return q.Next(ctx, buf)
	}
	return s.seal.wait.Next(ctx, q, buf, s.seal.sl, s.now, func() { s.sealRun(s.seal.sl.Seal) })
}

// SetSealer turns sealing on for the stdout sink; call it before Run.
func (s *Stdout) SetSealer(sl Sealer) { s.sealer = sl }

// Which seal stdoutRun.seal writes.
type sealWhich int

const (
	sealBegin sealWhich = iota
	sealDue             // an interval seal, if one is due
	sealIdle            // an interval seal: the queue is idle and one is due
	sealClose
)

// seal writes a seal line after the buffered records, directly rather
// than through the buffer, whose accounting counts lines as items. A
// seal that cannot be written is lost, and verify will say so.
func (r *stdoutRun) seal(which sealWhich) {
	sl := r.s.sealer
	if sl == nil {
		return
	}
	now := time.Now()
	var line []byte
	var err error
	switch which {
	case sealBegin:
		line, err = sl.Begin(now)
	case sealDue:
		if !sl.Due(now) {
			return
		}
		line, err = sl.Seal(now)
	case sealIdle:
		line, err = sl.Seal(now)
	case sealClose:
		r.sealWait.Stop()
		line, err = sl.Close(now)
	}
	if err != nil {
		r.s.log.Error().Err(err).Msg("sealing: the state file could not be updated; the old epoch key may still be on disk")
	}
	if len(line) == 0 {
		return
	}
	r.flush()
	if _, err := r.s.w.Write(line); err != nil {
		r.s.log.Error().Err(err).Msg("sealing: a seal record is lost: writing it failed")
	}
}

// sealAppend adds a record line, just buffered, to the chain.
func (r *stdoutRun) sealAppend(it *Item) {
	if r.s.sealer != nil {
		r.s.sealer.Append(it.Line, it.Seq)
	}
}

// next is in.Next, sealing a quiet stream when a seal falls due.
func (r *stdoutRun) next(ctx context.Context, buf []*Item) ([]*Item, error) {
	if r.s.sealer == nil {
		return r.in.Next(ctx, buf)
	}
	return r.sealWait.Next(ctx, r.in, buf, r.s.sealer, time.Now, func() { r.seal(sealIdle) })
}
