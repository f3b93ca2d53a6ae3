package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/fanaudit/fanaudit/internal/record"
)

// Stages is the production Source: a capture stage feeding an enrichment
// stage through a bounded channel. It is generic over the event type so
// that this package needs neither the kernel-facing capture nor the
// enricher to build and test.
type Stages[E any] struct {
	// Capture reads events until its ctx ends, then drains the kernel
	// queue and returns nil (audit.Capture.Run).
	Capture func(ctx context.Context, out chan<- []E) error
	// Enrich turns event batches into record batches, in order, and
	// returns nil once in is closed and drained (enrich.Enricher.Run).
	Enrich func(ctx context.Context, in <-chan []E, out chan<- []*record.Record) error
	// Channel is the capacity, in batches, of the capture→enrich channel.
	Channel int

	captured atomic.Uint64
}

// Captured counts the events the capture stage has handed on.
func (s *Stages[E]) Captured() uint64 { return s.captured.Load() }

// Run implements Source. Capture gets stop; Enrich gets abort, so that it
// finishes what the capture drained after a stop.
func (s *Stages[E]) Run(stop, abort context.Context, out chan<- []*record.Record) error {
	if s.Capture == nil || s.Enrich == nil {
		return errors.New("stages: capture and enrich are both required")
	}
	n := s.Channel
	if n < 1 {
		n = 64
	}
	// A failure in one stage must end the others at once.
	abortCtx, cancel := context.WithCancel(abort)
	defer cancel()
	stopCtx, cancelStop := context.WithCancel(stop)
	defer cancelStop()
	go func() {
		<-abortCtx.Done()
		cancelStop()
	}()

	events := make(chan []E, n)
	counted := make(chan []E, n)
	var wg sync.WaitGroup
	errs := make([]error, 3)

	wg.Add(3)
	go func() {
		defer wg.Done()
		defer close(events)
		if err := s.Capture(stopCtx, events); err != nil {
			errs[0] = fmt.Errorf("capture: %w", err)
			cancel()
		}
	}()
	// The relay counts what the capture produced without reaching into
	// either stage; it costs one hand-off per batch, not per event.
	go func() {
		defer wg.Done()
		defer close(counted)
		for b := range events {
			s.captured.Add(uint64(len(b)))
			select {
			case counted <- b:
			case <-abortCtx.Done():
				errs[1] = abortCtx.Err()
				// Keep draining so the capture never blocks on a full
				// channel while it returns.
				for range events {
				}
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		err := s.Enrich(abortCtx, counted, out)
		if err == nil && stopCtx.Err() == nil {
			// Its input can't be closed yet: the capture runs until stop.
			err = errors.New("returned before its input was closed")
		}
		if err != nil {
			errs[2] = fmt.Errorf("enrich: %w", err)
			cancel()
		}
		// Whatever Enrich left unread must not block the relay; left
		// unread without an error, it would be lost without a trace.
		left := 0
		for b := range counted {
			left += len(b)
		}
		if errs[2] == nil && left > 0 && abortCtx.Err() == nil {
			errs[2] = fmt.Errorf("enrich: returned with %d events unread", left)
		}
	}()
	wg.Wait()
	if errs[0] != nil {
		return errs[0]
	}
	if errs[2] != nil && !errors.Is(errs[2], context.Canceled) {
		return errs[2]
	}
	if abort.Err() != nil {
		return abort.Err()
	}
	return nil
}
