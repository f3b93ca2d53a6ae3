package pipeline

import (
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/internal/pipeline/queue"
)

// Stats is a snapshot of the pipeline's counters.
type Stats struct {
	// Received counts records that came out of the source (capture and
	// enrichment), kernel overflow records included.
	Received uint64
	// Produced counts records given a sequence number: Received plus the
	// queue_full records the fan-out made. It equals the last
	// event.sequence.
	Produced uint64
	// LossRecords counts events_lost records produced, of any reason.
	LossRecords uint64
	// KernelOverflows counts events_lost records with reason
	// kernel_queue_overflow (the kernel does not say how many events).
	KernelOverflows uint64
	// SourceDone is set once the source (the reader) has returned.
	SourceDone bool
	// Sinks holds one consistent snapshot per sink queue, in config order.
	Sinks []queue.Stats
}

// Stats returns the current counters.
func (p *Pipeline) Stats() Stats {
	s := Stats{
		Received:        p.received.Load(),
		Produced:        p.produced.Load(),
		LossRecords:     p.lossRecs.Load(),
		KernelOverflows: p.kernelOverflows.Load(),
		SourceDone:      p.sourceDone.Load(),
		Sinks:           make([]queue.Stats, len(p.queues)),
	}
	for i, q := range p.queues {
		s.Sinks[i] = q.Stats()
	}
	return s
}

// Reopen asks every sink to reopen its output (SIGHUP).
func (p *Pipeline) Reopen() error {
	var errs []error
	for _, s := range p.opts.Sinks {
		if err := s.Sink.Reopen(); err != nil {
			errs = append(errs, fmt.Errorf("sink %s: reopen: %w", s.Name, err))
		}
	}
	return errors.Join(errs...)
}

// sampleProgress records, per sink, the last time it delivered something
// or had nothing pending. A sink that only fails items makes no progress.
func (p *Pipeline) sampleProgress() {
	now := p.opts.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, q := range p.queues {
		st := q.Stats()
		pr := &p.progress[i]
		if st.Delivered != pr.delivered || st.InFlight == 0 {
			pr.okSince = now
		}
		pr.delivered = st.Delivered
	}
}

// Health says whether the agent is healthy, and why not. It is unhealthy
// when the reader stopped while the agent was not stopping, when a sink
// stopped, when a sink's last settlement was a failure (a write error:
// its records are being dropped and announced), or when a sink with
// pending records has delivered none for SinkFailingAfter.
func (p *Pipeline) Health() (ok bool, reason string) {
	if p.sourceDone.Load() && !p.stopping.Load() {
		return false, "reader stopped"
	}
	p.sampleProgress()
	now := p.opts.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, pr := range p.progress {
		name := p.queues[i].Name()
		if pr.stopped != nil {
			return false, fmt.Sprintf("sink %s stopped: %v", name, pr.stopped)
		}
		if f := p.queues[i].Stats().Failing; f != "" {
			return false, fmt.Sprintf("sink %s is failing (%s): its records are dropped and announced", name, f)
		}
		if d := now.Sub(pr.okSince); d >= p.opts.SinkFailingAfter {
			return false, fmt.Sprintf("sink %s has delivered nothing for %s", name, d.Truncate(time.Second))
		}
	}
	return true, ""
}

// logStats writes one stats line. With prev it adds rates over elapsed.
func (p *Pipeline) logStats(msg string, s Stats, prev *Stats, elapsed time.Duration) {
	ev := p.log.Info().
		Uint64("received", s.Received).
		Uint64("produced", s.Produced).
		Uint64("loss_records", s.LossRecords).
		Uint64("kernel_overflows", s.KernelOverflows)
	if prev != nil && elapsed > 0 {
		ev = ev.Float64("produced_per_sec", float64(s.Produced-prev.Produced)/elapsed.Seconds())
	}
	arr := zerolog.Arr()
	for i, q := range s.Sinks {
		d := zerolog.Dict().
			Str("sink", q.Sink).
			Uint64("received", q.Received).
			Uint64("delivered", q.Delivered).
			Uint64("dropped", q.Dropped).
			Uint64("in_flight", q.InFlight).
			Int("depth", q.Depth).
			Int("capacity", q.Capacity)
		if prev != nil && elapsed > 0 && i < len(prev.Sinks) {
			d = d.Float64("delivered_per_sec", float64(q.Delivered-prev.Sinks[i].Delivered)/elapsed.Seconds())
		}
		arr = arr.Dict(d)
	}
	ev = ev.Array("sinks", arr)
	if p.opts.StatsHook != nil {
		p.opts.StatsHook(ev)
	}
	ev.Msg(msg)
}
