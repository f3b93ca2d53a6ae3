package sinks

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/rs/zerolog"
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
type Stdout struct {
	w   io.Writer
	log zerolog.Logger
}

// NewStdout returns a sink writing to w, or to os.Stdout when w is nil.
func NewStdout(w io.Writer, log zerolog.Logger) *Stdout {
	if w == nil {
		w = os.Stdout
	}
	return &Stdout{w: w, log: log.With().Str("component", "sink").Str("sink", "stdout").Logger()}
}

// Name implements Sink.
func (s *Stdout) Name() string { return "stdout" }

// Reopen implements Sink; stdout has no file to reopen.
func (s *Stdout) Reopen() error { return nil }

// Run implements Sink. Output is buffered and flushed whenever the queue
// runs empty, so an interactive watch shows events promptly while a busy
// one makes large writes. Items count as delivered once flushed. A write
// error (EPIPE when the reader went away, for instance) fails every
// unflushed item and ends Run with that error.
func (s *Stdout) Run(ctx context.Context, q *Queue) error {
	bw := bufio.NewWriterSize(s.w, stdoutBuffer)
	buf := make([]*Item, 0, batchSize)
	pending := 0 // items in bw, not yet settled
	flush := func() error {
		if err := bw.Flush(); err != nil {
			q.Failed(pending)
			pending = 0
			return fmt.Errorf("stdout sink: write: %w", err)
		}
		q.Delivered(pending)
		pending = 0
		return nil
	}
	for {
		items, err := q.Next(ctx, buf)
		if err != nil {
			ferr := flush()
			if errors.Is(err, io.EOF) {
				return ferr
			}
			return errors.Join(err, ferr)
		}
		for i, it := range items {
			if !validLine(it.Line) {
				q.Failed(1)
				s.log.Error().Uint64("seq", it.Seq).Int("len", len(it.Line)).Msg("dropping item whose Line is not exactly one newline-terminated line")
				continue
			}
			if _, err := bw.Write(it.Line); err != nil {
				// bufio keeps failing once it has failed, so nothing more
				// of this batch can be written.
				q.Failed(pending + len(items) - i)
				pending = 0
				return fmt.Errorf("stdout sink: write: %w", err)
			}
			pending++
		}
		if pending >= maxUnflushed || q.Len() == 0 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
}
