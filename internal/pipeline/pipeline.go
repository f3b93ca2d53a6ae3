// Package pipeline wires the agent's stages: the record source (capture
// and enrichment), the fan-out that owns event.sequence, encodes each
// record once and turns sink drops into events_lost records, and one
// bounded queue plus one goroutine per sink. It also owns the counters of
// every stage, the periodic stats log line and the health verdict.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/internal/record"
	"github.com/fanaudit/fanaudit/sinks"
)

// Source produces record batches. Run sends to out until stop ends, then
// drains whatever it still holds and returns nil; abort ends it at once.
// Run must not close out: the pipeline does, once Run has returned.
type Source interface {
	Run(stop, abort context.Context, out chan<- []*record.Record) error
}

// SinkSpec is one configured sink with its queue settings.
type SinkSpec struct {
	Name      string // the config's name: queue, metrics and fanaudit.lost.sink
	Sink      sinks.Sink
	QueueSize int
	Policy    sinks.Policy
}

// Options configures a Pipeline.
type Options struct {
	Source Source
	Sinks  []SinkSpec

	// RecordChannel is the capacity, in batches, of the channel between
	// the source and the fan-out.
	RecordChannel int
	// ShutdownTimeout bounds the drain and flush after the run context
	// ends; past it everything is aborted and Run returns an error.
	ShutdownTimeout time.Duration
	// StatsInterval is the period of the stats log line; 0 turns it off.
	StatsInterval time.Duration
	// AbortGrace is how long Run waits for the stages after an abort (a
	// failure or the shutdown timeout) before it returns without them;
	// default 2s.
	AbortGrace time.Duration
	// LossInterval is the minimum time between two queue_full records for
	// one sink; default one second.
	LossInterval time.Duration
	// SinkFailingAfter is how long a sink with pending items may go
	// without delivering before Health reports it; default 60s.
	SinkFailingAfter time.Duration
	// StatsHook adds other stages' counters (capture, enrichment) to each
	// stats log line; optional.
	StatsHook func(e *zerolog.Event)
	// Host is attached to the loss records the pipeline makes.
	Host *record.Host
	// Encoding is the encoders' per-run settings (run id, version).
	Encoding record.Options
	// Now is the clock, for tests; default time.Now.
	Now func() time.Time
}

// Pipeline runs the stages. Create it with New, run it once with Run.
type Pipeline struct {
	opts   Options
	log    zerolog.Logger
	queues []*sinks.Queue

	received        atomic.Uint64 // records from the source
	produced        atomic.Uint64 // records given a sequence, loss records included
	lossRecs        atomic.Uint64 // events_lost records produced
	kernelOverflows atomic.Uint64 // kernel_queue_overflow records
	sourceDone      atomic.Bool   // the source returned
	stopping        atomic.Bool   // the run context ended

	mu       sync.Mutex
	progress []sinkProgress // guarded by mu
	started  bool
}

// sinkProgress tracks when a sink last made progress, for Health.
type sinkProgress struct {
	delivered uint64
	okSince   time.Time // last time it delivered or had nothing pending
}

// New checks opts and builds the queues.
func New(opts Options, log zerolog.Logger) (*Pipeline, error) {
	if opts.Source == nil {
		return nil, errors.New("pipeline: no source")
	}
	if len(opts.Sinks) == 0 {
		return nil, errors.New("pipeline: no sinks")
	}
	if opts.RecordChannel < 1 {
		opts.RecordChannel = 64
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 10 * time.Second
	}
	if opts.AbortGrace <= 0 {
		opts.AbortGrace = 2 * time.Second
	}
	if opts.LossInterval <= 0 {
		opts.LossInterval = time.Second
	}
	if opts.SinkFailingAfter <= 0 {
		opts.SinkFailingAfter = time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	p := &Pipeline{opts: opts, log: log.With().Str("component", "pipeline").Logger()}
	seen := map[string]bool{}
	now := opts.Now()
	for _, s := range opts.Sinks {
		if s.Sink == nil {
			return nil, fmt.Errorf("pipeline: sink %q has no implementation", s.Name)
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("pipeline: duplicate sink name %q", s.Name)
		}
		seen[s.Name] = true
		p.queues = append(p.queues, sinks.NewQueue(s.Name, s.QueueSize, s.Policy))
		p.progress = append(p.progress, sinkProgress{okSince: now})
	}
	return p, nil
}

// ErrShutdownTimeout is returned by Run when the drain after a stop did not
// finish within Options.ShutdownTimeout.
var ErrShutdownTimeout = errors.New("shutdown timeout: not every record was flushed")

// Run runs every stage until ctx ends and everything is drained, or a
// stage fails. When ctx ends the source stops reading and drains, the
// fan-out drains the channel and announces every remaining drop, the
// queues are closed, and the sinks flush; all of it within
// ShutdownTimeout. It returns nil after a complete drain.
func (p *Pipeline) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.started {
		p.mu.Unlock()
		return errors.New("pipeline: Run called twice")
	}
	p.started = true
	p.mu.Unlock()

	// abort is what really stops everything: it outlives ctx by at most
	// ShutdownTimeout, so that stages downstream of the reader can drain.
	abort, cancelAbort := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelAbort(nil)

	var wg sync.WaitGroup
	var errMu sync.Mutex
	var firstErr error
	fail := func(stage string, err error) {
		if err == nil {
			return
		}
		errMu.Lock()
		if firstErr == nil {
			firstErr = fmt.Errorf("%s: %w", stage, err)
		}
		errMu.Unlock()
		cancelAbort(err)
	}
	// stop ends the reading: on ctx's end or on a failure anywhere.
	stop, cancelStop := context.WithCancel(ctx)
	defer cancelStop()
	go func() {
		<-abort.Done()
		cancelStop()
	}()

	records := make(chan []*record.Record, p.opts.RecordChannel)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(records)
		err := p.opts.Source.Run(stop, abort, records)
		p.sourceDone.Store(true)
		if err == nil && stop.Err() == nil {
			err = errors.New("stopped before it was asked to")
		}
		if err != nil && abort.Err() == nil {
			fail("source", err)
		}
	}()

	var queuesClosed atomic.Bool
	sinkWG := sync.WaitGroup{}
	for i, s := range p.opts.Sinks {
		q := p.queues[i]
		sinkWG.Add(1)
		go func() {
			defer sinkWG.Done()
			err := s.Sink.Run(abort, q)
			if err == nil && !queuesClosed.Load() {
				// Its queue would fill and, under block, stall every sink.
				err = errors.New("stopped before its queue was closed")
			}
			if err != nil && abort.Err() == nil {
				fail("sink "+s.Name, err)
			}
		}()
	}

	wg.Add(1)
	go func() {
		defer wg.Done()
		err := p.fanOut(abort, records)
		queuesClosed.Store(true)
		for _, q := range p.queues {
			q.Close()
		}
		// After an abort, keep the source's sends from blocking forever.
		for range records {
		}
		if err != nil && abort.Err() == nil {
			fail("fan-out", err)
		}
	}()

	// The watchdog turns the end of ctx into a bounded drain, and samples
	// sink progress and logs stats meanwhile.
	drained := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.watch(ctx, abort, drained, cancelAbort)
	}()

	finished := make(chan struct{})
	go func() {
		defer close(finished)
		// The fan-out and source finish before the sinks can (the queues
		// are closed last), except on abort, where all of them return
		// promptly.
		sinkWG.Wait()
		cancelStop()
		close(drained)
		wg.Wait()
	}()
	select {
	case <-finished:
	case <-abort.Done():
		// A sink blocked in a write(2) to a stalled pipe cannot be
		// interrupted, and the shutdown timeout must stay a bound: after
		// a grace period, return without the stuck goroutines (the
		// process exits right after).
		t := time.NewTimer(p.opts.AbortGrace)
		defer t.Stop()
		select {
		case <-finished:
		case <-t.C:
			p.log.Error().Dur("grace", p.opts.AbortGrace).Msg("some stages did not stop after the abort; giving up on them")
		}
	}

	p.logStats("final stats", p.Stats(), nil, 0)
	errMu.Lock()
	defer errMu.Unlock()
	if firstErr != nil {
		return firstErr
	}
	if errors.Is(context.Cause(abort), ErrShutdownTimeout) {
		return ErrShutdownTimeout
	}
	return nil
}

// watch runs until drained is closed. Once ctx ends it allows
// ShutdownTimeout for the drain, then aborts.
func (p *Pipeline) watch(ctx, abort context.Context, drained <-chan struct{}, cancelAbort context.CancelCauseFunc) {
	sample := time.NewTicker(time.Second)
	defer sample.Stop()
	var statsC <-chan time.Time
	if p.opts.StatsInterval > 0 {
		t := time.NewTicker(p.opts.StatsInterval)
		defer t.Stop()
		statsC = t.C
	}
	var deadline <-chan time.Time
	done := ctx.Done()
	prev := p.Stats()
	prevAt := p.opts.Now()
	for {
		select {
		case <-drained:
			return
		case <-abort.Done():
			// Keep waiting for drained: the stages return promptly now.
			abort = context.Background()
		case <-done:
			done = nil
			p.stopping.Store(true)
			t := time.NewTimer(p.opts.ShutdownTimeout)
			defer t.Stop()
			deadline = t.C
			p.log.Info().Dur("timeout", p.opts.ShutdownTimeout).Msg("stopping: draining and flushing")
		case <-deadline:
			deadline = nil
			p.log.Error().Dur("timeout", p.opts.ShutdownTimeout).Msg("shutdown timeout: aborting the flush")
			cancelAbort(ErrShutdownTimeout)
		case <-sample.C:
			p.sampleProgress()
		case <-statsC:
			now := p.opts.Now()
			cur := p.Stats()
			p.logStats("stats", cur, &prev, now.Sub(prevAt))
			prev, prevAt = cur, now
		}
	}
}
