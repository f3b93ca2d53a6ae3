package sinks

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/internal/record"
)

const (
	// batchSize is how many items a sink takes from its queue at once.
	batchSize = 512
	// stdoutBuffer is large enough that a busy stream makes few write calls.
	stdoutBuffer = 64 << 10
	// maxUnflushed bounds how many written items may wait in the buffer
	// before they are flushed and settled, so Delivered keeps up under a
	// steady load that never lets the queue go empty.
	maxUnflushed = 4096
)

// validLine reports whether line is exactly one '\n'-terminated line. A
// sink must never emit a partial line or glue two records together.
func validLine(line []byte) bool {
	return len(line) > 0 && bytes.IndexByte(line, '\n') == len(line)-1
}

// Stdout writes each Item.Line to a writer, os.Stdout by default.
//
// A failed write (EPIPE when the reader went away, ENOSPC when stdout is a
// file on a full disk) is this sink's failure only: the lines that did not
// get out are settled as failed with reason sink_error, so the pipeline
// announces them to the other sinks, and the sink goes on with the next
// batch; when writing works again, so does the stream. A line a write cut
// in two is failed too, and on a regular file the file is cut back to its
// last whole line. On a pipe a write only stops inside a line when the
// reader went away (EPIPE) or at the shutdown timeout, and the bytes that
// got out cannot be taken back.
type Stdout struct {
	w      io.Writer
	log    zerolog.Logger
	sealer Sealer // seal.go
	onGone func() // StopWhenReaderGone
}

// NewStdout returns a sink writing to w, or to os.Stdout when w is nil.
func NewStdout(w io.Writer, log zerolog.Logger) *Stdout {
	if w == nil {
		w = os.Stdout
	}
	return &Stdout{w: w, log: log.With().Str("component", "sink").Str("sink", "stdout").Logger()}
}

// StopWhenReaderGone makes the sink call stop once when a write fails
// because the reader went away (EPIPE), for a command whose only output is
// stdout (watch, like any filter in a shell pipeline, ends then). Call it
// before Run.
func (s *Stdout) StopWhenReaderGone(stop func()) { s.onGone = stop }

// Name is the sink's kind.
func (s *Stdout) Name() string { return "stdout" }

// Reopen implements Sink; stdout has no file to reopen.
func (s *Stdout) Reopen() error { return nil }

// SettlesInOrder implements Ordered: lines are copied into the buffer and
// settled in order once it is written.
func (s *Stdout) SettlesInOrder() bool { return true }

// Close implements Sink; stdout belongs to the process, not to the sink.
func (s *Stdout) Close() error { return nil }

// stdoutRun is the state of one Run.
type stdoutRun struct {
	s       *Stdout
	in      Input
	buf     []byte // whole lines not yet written
	pending int    // items whose lines are in buf
	failing bool   // in a streak of failed writes

	sealWait SealWait // seal.go
}

// Run implements Sink. Output is buffered and flushed whenever the queue
// runs empty, so an interactive watch shows events promptly while a busy
// one makes large writes. Items count as delivered once written.
func (s *Stdout) Run(ctx context.Context, in Input) error {
	r := &stdoutRun{s: s, in: in, buf: make([]byte, 0, stdoutBuffer)}
	items := make([]*Item, 0, batchSize)
	if d, ok := s.w.(interface{ SetWriteDeadline(time.Time) error }); ok {
		// A write blocked on a pipe nobody reads must not outlast the
		// shutdown timeout: the end of ctx interrupts it, where the
		// writer is pollable (a pipe or socket the agent set up so).
		defer context.AfterFunc(ctx, func() { _ = d.SetWriteDeadline(time.Now()) })()
	}
	r.seal(sealBegin)
	for {
		var err error
		items, err = r.next(ctx, items)
		if err != nil {
			r.seal(sealClose)
			r.flush()
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		for _, it := range items {
			if !validLine(it.Line) {
				// Settled in order (Ordered): what is buffered first.
				// Logged before it is settled: then its memory may be reused.
				r.flush()
				s.log.Error().Uint64("seq", it.Seq).Int("len", len(it.Line)).Msg("dropping item whose Line is not exactly one newline-terminated line")
				in.Failed(1, record.ReasonSinkError)
				continue
			}
			r.buf = append(r.buf, it.Line...)
			r.pending++
			r.sealAppend(it)
			if len(r.buf) >= stdoutBuffer {
				r.flush()
			}
		}
		r.seal(sealDue)
		if r.pending >= maxUnflushed || in.Len() == 0 {
			r.flush()
		}
	}
}

// flush writes the buffered lines and settles their items.
func (r *stdoutRun) flush() {
	if r.pending == 0 {
		return
	}
	n, err := r.s.w.Write(r.buf)
	if err == nil {
		r.in.Delivered(r.pending)
		if r.failing {
			r.failing = false
			r.s.log.Info().Msg("writing again")
		}
		r.buf, r.pending = r.buf[:0], 0
		return
	}
	r.fail(err, n)
}

// fail settles the buffered items after a write that got n bytes of buf
// out and then failed with err.
func (r *stdoutRun) fail(err error, n int) {
	whole := bytes.Count(r.buf[:n], []byte{'\n'})
	r.in.Delivered(whole)
	lost := r.pending - whole
	if cut := n - (bytes.LastIndexByte(r.buf[:n], '\n') + 1); cut > 0 && !r.truncate(int64(cut)) {
		r.s.log.Warn().Int("bytes", cut).Msg("a failed write left part of a line in a stream that cannot be cut back")
	}
	if lost > 0 {
		r.in.Failed(lost, record.ReasonSinkError)
	}
	if errors.Is(err, syscall.EPIPE) && r.s.onGone != nil {
		r.s.onGone()
		r.s.onGone = nil
	}
	if !r.failing {
		// Once per streak: a closed pipe would otherwise log every batch.
		r.failing = true
		r.s.log.Error().Err(err).Int("lost", lost).Msg("write failed; records are dropped (and announced) until writing works again")
	}
	r.buf, r.pending = r.buf[:0], 0
}

// truncate cuts the last cut bytes off the output when it is a regular
// file, and reports whether it did.
func (r *stdoutRun) truncate(cut int64) bool {
	f, ok := r.s.w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	off, err := f.Seek(0, io.SeekCurrent)
	if err != nil || off < cut {
		return false
	}
	if err := f.Truncate(off - cut); err != nil {
		return false
	}
	_, err = f.Seek(off-cut, io.SeekStart)
	return err == nil
}
