// Package pipeline owns the agent's one chain of stages under one
// errgroup: capture → enrich → fan-out (event.sequence, encode once, loss
// records) → one bounded queue per sink (internal/pipeline/queue) → sink.
// It owns the shutdown (stop reading, drain, flush, within a timeout), the
// isolation of a failing sink, the counters of every stage, the periodic
// stats log line and the health verdict.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/fanaudit/fanaudit/internal/pipeline/queue"
	"github.com/fanaudit/fanaudit/internal/record"
	"github.com/fanaudit/fanaudit/sinks"
)

// Source is the head of the chain: the stages that produce records. The
// production source is Stages (capture and enrichment).
type Source interface {
	// start adds the source's stages to g. stop ends the reading; ctx
	// (g's context) ends on a failure or the shutdown timeout, and abort
	// ends it with a cause. The last stage hands its batches to out.Emit,
	// in its own goroutine, and calls out.Close when it is done.
	start(g *errgroup.Group, stop, ctx context.Context, abort context.CancelCauseFunc, out Emitter, done func())
}

// Emitter is the fan-out's input, driven by the source's last stage:
// Emit numbers, encodes and queues a batch in the caller's goroutine and
// keeps no reference to the records once it returns; it fails only when
// the chain is aborting. Close ends the input, like closing a channel.
type Emitter interface {
	Emit(batch []*record.Record) error
	Close()
}

// SinkSpec is one configured sink with its queue settings.
type SinkSpec struct {
	Name      string // the config's name: queue, metrics and fanaudit.lost.sink
	Sink      sinks.Sink
	QueueSize int
	Policy    queue.Policy
	// Format is the encoding the sink's items carry (ecs by default).
	Format record.Format
}

// Options configures a Pipeline.
type Options struct {
	Source Source
	Sinks  []SinkSpec
	// ShutdownTimeout bounds the drain and flush after the run context
	// ends; past it every stage is cancelled and Run returns
	// ErrShutdownTimeout.
	ShutdownTimeout time.Duration
	// StatsInterval is the period of the stats log line; 0 turns it off.
	StatsInterval time.Duration
	// LossInterval is the minimum time between two rounds of loss records
	// for one sink; default one second.
	LossInterval time.Duration
	// SinkFailingAfter is how long a sink with pending items may go
	// without delivering before Health reports it; default 60s.
	SinkFailingAfter time.Duration
	// StatsHook adds other stages' counters (capture, enrichment) to each
	// stats log line; optional.
	StatsHook func(e *zerolog.Event)
	// Host is attached to the records the pipeline makes.
	Host *record.Host
	// Encoding is the encoders' per-run settings (run id, version).
	Encoding record.Options
	// Start, when set, is emitted first, before any record of the source:
	// the agent_restart record of a run that follows an unclean stop.
	Start *record.Record
	// Checkpoint, when set, is called now and then (every
	// CheckpointInterval, and once at the end) with the last
	// event.sequence every sink has settled: the run marker's
	// last_sequence.
	Checkpoint func(seq uint64)
	// CheckpointInterval defaults to five seconds.
	CheckpointInterval time.Duration
	// Now is the clock, for tests; default time.Now.
	Now func() time.Time
}

// Pipeline runs the chain. Create it with New, run it once with Run.
type Pipeline struct {
	opts   Options
	log    zerolog.Logger
	queues []*queue.Queue

	received        atomic.Uint64 // records from the source
	produced        atomic.Uint64 // records given a sequence, loss records included
	lossRecs        atomic.Uint64 // events_lost records produced
	kernelOverflows atomic.Uint64 // kernel_queue_overflow records
	sourceDone      atomic.Bool   // the reader returned
	stopping        atomic.Bool   // the run context ended
	queuesClosed    atomic.Bool   // the fan-out closed the queues

	mu       sync.Mutex
	progress []sinkProgress // guarded by mu
	started  bool
}

// sinkProgress tracks when a sink last made progress, for Health.
type sinkProgress struct {
	delivered uint64
	okSince   time.Time // last time it delivered or had nothing pending
	stopped   error     // the sink's Run returned early with this
}

// New checks opts and builds the queues.
func New(opts Options, log zerolog.Logger) (*Pipeline, error) {
	if opts.Source == nil {
		return nil, errors.New("pipeline: no source")
	}
	if len(opts.Sinks) == 0 {
		return nil, errors.New("pipeline: no sinks")
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 10 * time.Second
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
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = 5 * time.Second
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
		q := queue.New(s.Name, s.QueueSize, s.Policy)
		if o, ok := s.Sink.(sinks.Ordered); ok && o.SettlesInOrder() {
			q.SettleInOrder()
		}
		p.queues = append(p.queues, q)
		p.progress = append(p.progress, sinkProgress{okSince: now})
	}
	return p, nil
}

// ErrShutdownTimeout is returned by Run when the drain after a stop did not
// finish within Options.ShutdownTimeout.
var ErrShutdownTimeout = errors.New("shutdown timeout: not every record was flushed")

// Run runs the chain until ctx ends and everything is drained, or a stage
// fails. When ctx ends the capture stops reading, drains the kernel queue
// and closes its output; every later stage ends when its input is closed
// and drained: the fan-out announces every remaining loss and closes the
// queues, and each sink flushes and returns. A stage's failure or the
// shutdown timeout cancels the one context every stage runs under. A sink
// that stops early is isolated (its queue fails what it gets, announced
// in-band) and the others go on. Run returns nil after a complete drain.
func (p *Pipeline) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.started {
		p.mu.Unlock()
		return errors.New("pipeline: Run called twice")
	}
	p.started = true
	p.mu.Unlock()
	defer func() { p.logStats("final stats", p.Stats(), nil, 0) }()

	// base outlives ctx: after a stop the stages drain under it, until
	// they are done, a stage fails, or the shutdown timeout cancels it.
	base, abort := context.WithCancelCause(context.WithoutCancel(ctx))
	defer abort(nil)
	g, gctx := errgroup.WithContext(base)
	stopTimer := context.AfterFunc(ctx, func() {
		p.stopping.Store(true)
		p.log.Info().Dur("timeout", p.opts.ShutdownTimeout).Msg("stopping: draining and flushing")
		t := time.AfterFunc(p.opts.ShutdownTimeout, func() {
			p.log.Error().Dur("timeout", p.opts.ShutdownTimeout).Msg("shutdown timeout: aborting the flush")
			abort(ErrShutdownTimeout)
		})
		context.AfterFunc(base, func() { t.Stop() })
	})
	defer stopTimer()

	fan := p.newFanIn(gctx)
	p.opts.Source.start(g, ctx, gctx, abort, fan, func() { p.sourceDone.Store(true) })
	g.Go(func() error {
		defer func() {
			p.queuesClosed.Store(true)
			for _, q := range p.queues {
				q.Close()
			}
		}()
		if err := fan.run(); err != nil {
			return fmt.Errorf("fan-out: %w", err)
		}
		return nil
	})
	// The watcher lives as long as the last sink.
	watchCtx, stopWatch := context.WithCancel(gctx)
	defer stopWatch()
	var running sync.WaitGroup
	running.Add(len(p.queues))
	for i := range p.queues {
		g.Go(func() error {
			defer running.Done()
			p.runSink(gctx, i)
			return nil
		})
	}
	g.Go(func() error {
		p.watch(watchCtx)
		return nil
	})
	g.Go(func() error {
		running.Wait()
		stopWatch()
		return nil
	})

	err := g.Wait()
	if errors.Is(context.Cause(base), ErrShutdownTimeout) {
		return ErrShutdownTimeout
	}
	return err
}

// runSink runs one sink until its queue is closed and drained. A sink that
// returns early (an error, or nil before its queue was closed) is
// isolated: its queue fails everything it holds and gets, so that it
// neither blocks the others nor loses a record without an events_lost
// record, and Health reports it. Only a cancelled chain ends it silently.
func (p *Pipeline) runSink(ctx context.Context, i int) {
	spec, q := p.opts.Sinks[i], p.queues[i]
	err := spec.Sink.Run(ctx, q)
	if cerr := spec.Sink.Close(); cerr != nil {
		p.log.Error().Err(cerr).Str("sink", spec.Name).Msg("closing the sink")
	}
	if ctx.Err() != nil {
		return
	}
	if err == nil && !p.queuesClosed.Load() {
		err = errors.New("stopped before its queue was closed")
	}
	if err == nil {
		return
	}
	p.log.Error().Err(err).Str("sink", spec.Name).Msg("sink stopped; its records are dropped and announced from now on")
	p.mu.Lock()
	p.progress[i].stopped = err
	p.mu.Unlock()
	q.Abandon(record.ReasonSinkError)
}

// watch samples sink progress and logs stats until ctx ends.
func (p *Pipeline) watch(ctx context.Context) {
	sample := time.NewTicker(time.Second)
	defer sample.Stop()
	var statsC <-chan time.Time
	if p.opts.StatsInterval > 0 {
		t := time.NewTicker(p.opts.StatsInterval)
		defer t.Stop()
		statsC = t.C
	}
	var checkC <-chan time.Time
	var settled settledTracker
	if p.opts.Checkpoint != nil {
		t := time.NewTicker(p.opts.CheckpointInterval)
		defer t.Stop()
		checkC = t.C
		defer func() { p.opts.Checkpoint(settled.observe(p.Stats())) }()
	}
	prev := p.Stats()
	prevAt := p.opts.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-checkC:
			p.opts.Checkpoint(settled.observe(p.Stats()))
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
