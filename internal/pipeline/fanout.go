package pipeline

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"time"

	"github.com/fanaudit/fanaudit/internal/pipeline/queue"
	"github.com/fanaudit/fanaudit/internal/record"
)

// fanOut is the only writer of event.sequence. It numbers each record,
// encodes it once per format in use (not once per sink), and pushes the
// shared Item of its sink's format to every queue in order, so each sink
// sees the sequence in increasing order with gaps only where its
// own queue dropped. Losses are announced as events_lost records, per sink
// and reason, at most one round per sink per LossInterval, and all of them
// once the input is done. It ends when its input is closed and drained;
// after an abort (ctx ended) it reads what is left without pushing it.
func (p *Pipeline) fanOut(ctx context.Context, in <-chan []*record.Record) error {
	f := newFanState(p)
	tick := time.NewTicker(p.opts.LossInterval)
	defer tick.Stop()
	aborted := false
	if p.opts.Start != nil {
		aborted = f.emit(ctx, p.opts.Start) != nil
	}
	for {
		select {
		case batch, ok := <-in:
			if !ok {
				if aborted || ctx.Err() != nil {
					return nil
				}
				return f.finalLosses(ctx)
			}
			if aborted || ctx.Err() != nil {
				aborted = true
				continue
			}
			p.received.Add(uint64(len(batch)))
			if f.emitBatch(ctx, batch) != nil || f.reportLosses(ctx, false) != nil {
				// Only a cancelled push fails: the chain is aborting.
				aborted = true
			}
		case <-tick.C:
			// Drops only happen while pushing, but a quiet period after a
			// burst must still get its report.
			if !aborted && f.reportLosses(ctx, false) != nil {
				aborted = true
			}
		}
	}
}

// finalLossRounds bounds finalLosses: each round can only announce
// failures of the previous round's loss records, so a sink that fails
// everything cannot keep the shutdown going.
const finalLossRounds = 3

// finalLosses announces every loss once the input is done. A sink can
// still fail records it holds while it flushes, so it waits until each
// queue has settled everything it was given before the last report; the
// queues stay open until then, so those failures reach every sink in-band
// too. ctx ends the wait (the shutdown timeout).
func (f *fanState) finalLosses(ctx context.Context) error {
	for round := 0; round < finalLossRounds; round++ {
		for _, q := range f.p.queues {
			if err := q.WaitSettled(ctx); err != nil {
				return nil // aborted: the cause is reported where it happened
			}
		}
		before := f.p.lossRecs.Load()
		if err := f.reportLosses(ctx, true); err != nil {
			return nil
		}
		if f.p.lossRecs.Load() == before {
			return nil
		}
	}
	return nil
}

type fanState struct {
	p          *Pipeline
	seq        uint64
	lastReport []time.Time
	// encs has one encoder per format some sink uses, so a record is
	// encoded once per format, not once per sink; qfmt is each queue's
	// index into encs.
	encs  []fanEncoder
	qfmt  []int
	items [][]queue.Item    // emitBatch: per encoder, the batch's items
	one   [1]*record.Record // emit: a batch of one without allocating
}

// fanEncoder is one format's encoder with its line bookkeeping.
type fanEncoder struct {
	enc      record.LineEncoder
	ends     []int // emitBatch: end of each record's line
	lineSize int   // emitBatch: bytes to reserve per line
}

func newFanState(p *Pipeline) *fanState {
	f := &fanState{p: p, lastReport: make([]time.Time, len(p.queues))}
	idx := map[record.Format]int{}
	for _, s := range p.opts.Sinks {
		i, ok := idx[s.Format]
		if !ok {
			i = len(f.encs)
			idx[s.Format] = i
			f.encs = append(f.encs, fanEncoder{enc: record.NewFormatEncoder(s.Format, p.opts.Encoding), lineSize: 512})
		}
		f.qfmt = append(f.qfmt, i)
	}
	for len(f.qfmt) < len(p.queues) {
		// Queues without a spec (tests that build a Pipeline by hand) get ECS.
		if _, ok := idx[record.FormatECS]; !ok {
			idx[record.FormatECS] = len(f.encs)
			f.encs = append(f.encs, fanEncoder{enc: record.NewEncoder(p.opts.Encoding), lineSize: 512})
		}
		f.qfmt = append(f.qfmt, idx[record.FormatECS])
	}
	f.items = make([][]queue.Item, len(f.encs))
	return f
}

func (f *fanState) emit(ctx context.Context, r *record.Record) error {
	f.one[0] = r
	return f.emitBatch(ctx, f.one[:])
}

// emitBatch numbers, encodes and pushes a batch. The lines of a batch share
// one buffer and its items one slice, per format: two allocations per
// batch and format instead of two per record, which the garbage collector
// notices at a million records a second. A sink holding one item keeps its batch's buffer alive; queues
// are bounded, so that is bounded too.
func (f *fanState) emitBatch(ctx context.Context, batch []*record.Record) error {
	for _, r := range batch {
		f.seq++
		r.Sequence = f.seq
	}
	for e := range f.encs {
		f.items[e] = f.encs[e].encode(batch)
	}
	for i, r := range batch {
		f.p.produced.Store(r.Sequence)
		if r.Action == record.ActionEventsLost {
			f.p.lossRecs.Add(1)
			if r.Fanaudit.Lost.Reason == record.ReasonKernelOverflow {
				f.p.kernelOverflows.Add(1)
			}
		}
		for qi, q := range f.p.queues {
			if err := q.Push(ctx, &f.items[f.qfmt[qi]][i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// encode encodes a numbered batch into one new line buffer and one new
// item slice.
func (fe *fanEncoder) encode(batch []*record.Record) []queue.Item {
	if len(fe.ends) < len(batch) {
		fe.ends = make([]int, len(batch))
	}
	buf := make([]byte, 0, len(batch)*fe.lineSize)
	for i, r := range batch {
		buf = fe.enc.Append(buf, r)
		buf = append(buf, '\n')
		fe.ends[i] = len(buf)
	}
	if n := len(batch); n > 0 {
		// Size the next buffer for this batch's average line.
		fe.lineSize = max(fe.lineSize, len(buf)/n+64)
	}
	items := make([]queue.Item, len(batch))
	start := 0
	for i, r := range batch {
		items[i] = queue.Item{
			Seq:    r.Sequence,
			Action: r.Action,
			Path:   r.File.Path,
			Line:   buf[start:fe.ends[i]:fe.ends[i]],
			Loss:   r.Action == record.ActionEventsLost,
		}
		start = fe.ends[i]
	}
	return items
}

type lossEntry struct {
	n             uint64
	reason, runID string
}

// lossEntries lists the loss records one queue's unreported losses make, in
// a stable order: queue_full, sink_error, the sinks' own reasons, then
// losses of earlier runs' records.
func lossEntries(u queue.Unreported) []lossEntry {
	var out []lossEntry
	rank := func(r string) int {
		switch r {
		case record.ReasonQueueFull:
			return 0
		case record.ReasonSinkError:
			return 1
		}
		return 2
	}
	reasons := slices.SortedFunc(maps.Keys(u.Reasons), func(a, b string) int {
		return cmp.Or(cmp.Compare(rank(a), rank(b)), cmp.Compare(a, b))
	})
	for _, r := range reasons {
		if n := u.Reasons[r]; n > 0 {
			out = append(out, lossEntry{n: n, reason: r})
		}
	}
	earlier := slices.SortedFunc(maps.Keys(u.Earlier), func(a, b queue.EarlierLoss) int {
		return cmp.Or(cmp.Compare(a.RunID, b.RunID), cmp.Compare(a.Reason, b.Reason))
	})
	for _, k := range earlier {
		if n := u.Earlier[k]; n > 0 {
			out = append(out, lossEntry{n: n, reason: k.Reason, runID: k.RunID})
		}
	}
	return out
}

// reportLosses emits one events_lost record per reason (and earlier run)
// for every sink with unannounced losses whose last report is at least
// LossInterval old, or for every sink with losses when final is set. Loss
// records are never dropped by a queue's policy, so after a final pass
// nothing is left unannounced (a sink that fails them announces that in
// turn).
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
		for _, l := range lossEntries(u) {
			r := &record.Record{
				Timestamp: now,
				Action:    record.ActionEventsLost,
				Host:      f.p.opts.Host,
				Fanaudit: record.Meta{Lost: record.Lost{
					HasCount:      true,
					Count:         l.n,
					Reason:        l.reason,
					Sink:          q.Name(),
					PreviousRunID: l.runID,
				}},
			}
			if err := f.emit(ctx, r); err != nil {
				return err
			}
		}
	}
	return nil
}
