package pipeline

import (
	"context"
	"time"

	"github.com/fanaudit/fanaudit/internal/record"
	"github.com/fanaudit/fanaudit/sinks"
)

// fanOut is the only writer of event.sequence. It numbers each record,
// encodes it once, and pushes the shared Item to every queue in order, so
// each sink sees the sequence in increasing order with gaps only where its
// own queue dropped. Drops are announced as events_lost records, at most
// one per sink per LossInterval, and all of them once the input is done.
func (p *Pipeline) fanOut(ctx context.Context, in <-chan []*record.Record) error {
	f := fanState{
		p:          p,
		lastReport: make([]time.Time, len(p.queues)),
		scratch:    make([]byte, 0, 4096),
	}
	tick := time.NewTicker(p.opts.LossInterval)
	defer tick.Stop()
	for {
		select {
		case batch, ok := <-in:
			if !ok {
				return f.finalLosses(ctx)
			}
			p.received.Add(uint64(len(batch)))
			for _, r := range batch {
				if err := f.emit(ctx, r); err != nil {
					return err
				}
			}
			if err := f.reportLosses(ctx, false); err != nil {
				return err
			}
		case <-tick.C:
			// Drops only happen while pushing, but a quiet period after a
			// burst must still get its report.
			if err := f.reportLosses(ctx, false); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// finalLossRounds bounds finalLosses: each round can only announce
// failures of the previous round's loss records, so a sink that fails
// everything cannot keep the shutdown going.
const finalLossRounds = 3

// finalLosses announces every drop once the input is done. A sink can still
// fail records it holds while it flushes, so it waits for each queue to
// settle everything it was given before the last report; the queues stay
// open until then, so those failures reach every sink in-band too. ctx
// ends the wait at the shutdown timeout.
func (f *fanState) finalLosses(ctx context.Context) error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for round := 0; round < finalLossRounds; round++ {
		for !f.settled() {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		before := f.p.lossRecs.Load()
		if err := f.reportLosses(ctx, true); err != nil {
			return err
		}
		if f.p.lossRecs.Load() == before {
			return nil
		}
	}
	return nil
}

// settled reports whether every queue has settled everything pushed to it.
func (f *fanState) settled() bool {
	for _, q := range f.p.queues {
		if q.Stats().InFlight != 0 {
			return false
		}
	}
	return true
}

type fanState struct {
	enc        record.Encoder
	p          *Pipeline
	seq        uint64
	lastReport []time.Time
	scratch    []byte
}

func (f *fanState) emit(ctx context.Context, r *record.Record) error {
	f.seq++
	r.Sequence = f.seq
	f.scratch = f.enc.Append(f.scratch[:0], r)
	f.scratch = append(f.scratch, '\n')
	// One allocation holds the line for every sink; the scratch buffer
	// absorbs the encoder's growth.
	line := make([]byte, len(f.scratch))
	copy(line, f.scratch)
	it := &sinks.Item{
		Seq:    r.Sequence,
		Action: r.Action,
		Path:   r.File.Path,
		Line:   line,
		Loss:   r.Action == record.ActionEventsLost,
	}
	f.p.produced.Store(f.seq)
	if it.Loss {
		f.p.lossRecs.Add(1)
		if r.Fanaudit.Lost.Reason == record.ReasonKernelOverflow {
			f.p.kernelOverflows.Add(1)
		}
	}
	for _, q := range f.p.queues {
		if err := q.Push(ctx, it); err != nil {
			return err
		}
	}
	return nil
}

// reportLosses emits queue_full and sink_error records for every sink with unannounced
// drops whose last report is at least LossInterval old, or for every sink
// with drops when final is set. Loss records are never dropped by a queue,
// so after a final pass nothing is left unannounced.
func (f *fanState) reportLosses(ctx context.Context, final bool) error {
	now := f.p.opts.Now()
	for i, q := range f.p.queues {
		if !final && now.Sub(f.lastReport[i]) < f.p.opts.LossInterval {
			continue
		}
		u := q.TakeUnreported()
		if u.Total() == 0 {
			continue
		}
		f.lastReport[i] = now
		for _, l := range []struct {
			n      uint64
			reason string
		}{{u.Full, record.ReasonQueueFull}, {u.Failed, record.ReasonSinkError}} {
			if l.n == 0 {
				continue
			}
			r := &record.Record{
				Timestamp: now,
				Action:    record.ActionEventsLost,
				Host:      f.p.opts.Host,
				Fanaudit: record.Meta{Lost: record.Lost{
					HasCount: true,
					Count:    l.n,
					Reason:   l.reason,
					Sink:     q.Name(),
				}},
			}
			if err := f.emit(ctx, r); err != nil {
				return err
			}
		}
	}
	return nil
}
