package pipeline

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/fanaudit/fanaudit/internal/record"
)

// Stages is the production Source: a capture stage feeding an enrichment
// stage through a bounded channel. The enrichment stage hands each record
// batch straight to the fan-out, which runs in its goroutine: one
// goroutine hop per batch fewer than a channel between them, and the
// batch's records are the enricher's to reuse once the fan-out returns
// (it encodes them; nothing keeps them). It is generic over the event type
// so that this package needs neither the kernel-facing capture nor the
// enricher to build and test.
type Stages[E any] struct {
	// Capture reads events until its ctx ends, then drains the kernel
	// queue and returns nil (audit.Capture.Run). It never closes out.
	Capture func(ctx context.Context, out chan<- []E) error
	// Enrich turns event batches into record batches, in order, hands
	// each to emit, and returns nil once in is closed and drained
	// (enrich.Enricher.Run). emit is the fan-out: it numbers, encodes and
	// queues the batch before it returns, keeps no reference to the
	// records, and fails only when the chain is aborting (then Enrich
	// returns its error).
	Enrich func(ctx context.Context, in <-chan []E, emit func([]*record.Record) error) error
	// Channel is the capacity, in batches, of the capture→enrich channel.
	Channel int
}

// start implements Source: two stages of the chain. The capture's context
// ends on stop as well as on an abort; the enrichment's only on an abort.
func (s *Stages[E]) start(g *errgroup.Group, stop, ctx context.Context, abort context.CancelCauseFunc, out Emitter, done func()) {
	n := s.Channel
	if n < 1 {
		n = 64
	}
	events := make(chan []E, n)
	g.Go(func() error {
		defer close(events)
		capCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(stop, cancel)()
		err := errors.New("capture and enrich are both required")
		if s.Capture != nil && s.Enrich != nil {
			err = s.Capture(capCtx, events)
		}
		done()
		if ctx.Err() != nil {
			return nil // aborted: the cause is reported where it happened
		}
		if err == nil && stop.Err() == nil {
			err = errors.New("stopped before it was asked to")
		}
		if err != nil {
			return fmt.Errorf("capture: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		defer out.Close()
		var err error
		if s.Enrich != nil {
			err = s.Enrich(ctx, events, out.Emit)
		}
		left := 0
		if err == nil && stop.Err() == nil && ctx.Err() == nil && !closedNow(events, &left) {
			// The capture runs until stop, so its output can't be closed
			// yet. When it is, the capture ended early and says so
			// itself (its error may not have cancelled ctx yet).
			err = errors.New("returned before its input was closed")
		}
		if err != nil && ctx.Err() == nil {
			err = fmt.Errorf("enrich: %w", err)
			abort(err)
		}
		// A stage ends when its input is closed: what the enrichment left
		// is read, so the capture can finish its drain; left unread
		// without an error, it would be lost without a trace.
		for b := range events {
			left += len(b)
		}
		if ctx.Err() != nil {
			if err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		}
		if left > 0 {
			return fmt.Errorf("enrich: returned with %d events unread", left)
		}
		return nil
	})
}

// closedNow reports whether ch is closed and drained, without waiting; a
// batch it finds instead is counted in left.
func closedNow[E any](ch <-chan []E, left *int) bool {
	select {
	case b, ok := <-ch:
		*left += len(b)
		return !ok
	default:
		return false
	}
}
