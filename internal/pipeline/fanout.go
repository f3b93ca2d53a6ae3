package pipeline

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fanaudit/fanaudit/internal/pipeline/queue"
	"github.com/fanaudit/fanaudit/internal/record"
)

// fanIn is the fan-out, the only writer of event.sequence. It numbers
// each record, encodes it once per format in use (not once per sink), and
// pushes the shared Item of its sink's format to every queue in order, so
// each sink sees the sequence in increasing order with gaps only where its
// own queue dropped. Losses are announced as events_lost records, per sink
// and reason, at most one round per sink per LossInterval, and all of them
// once the input is done.
//
// Its input is driven by the source's last stage (Emit, in that stage's
// goroutine, so a batch costs no goroutine hop); its own goroutine (run)
// only reports the losses of a quiet period and, once the input is closed,
// the final ones. mu serializes the two. After an abort (ctx ended) Emit
// refuses batches without pushing them.
type fanIn struct {
	p       *Pipeline
	ctx     context.Context
	closed  chan struct{}
	once    sync.Once
	mu      sync.Mutex
	f       *fanState // guarded by mu
	started bool      // guarded by mu: Options.Start went out
	aborted bool      // guarded by mu
}

func (p *Pipeline) newFanIn(ctx context.Context) *fanIn {
	return &fanIn{p: p, ctx: ctx, closed: make(chan struct{}), f: newFanState(p)}
}

// begin emits Options.Start before anything else. Called with mu held.
func (fi *fanIn) begin() {
	if fi.started {
		return
	}
	fi.started = true
	if s := fi.p.opts.Start; s != nil && !fi.aborted {
		fi.aborted = fi.f.emit(fi.ctx, s) != nil
	}
}

// Emit implements Emitter.
func (fi *fanIn) Emit(batch []*record.Record) error {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.begin()
	if fi.aborted || fi.ctx.Err() != nil {
		fi.aborted = true
		return fmt.Errorf("fan-out aborted: %w", context.Cause(fi.ctx))
	}
	if len(batch) == 0 {
		return nil
	}
	fi.p.received.Add(uint64(len(batch)))
	if fi.f.emitBatch(fi.ctx, batch) != nil || fi.f.reportLosses(fi.ctx, false) != nil {
		// Only a cancelled push fails: the chain is aborting.
		fi.aborted = true
		return fmt.Errorf("fan-out aborted: %w", context.Cause(fi.ctx))
	}
	return nil
}

// Close implements Emitter.
func (fi *fanIn) Close() { fi.once.Do(func() { close(fi.closed) }) }

// run reports the losses of quiet periods until the input is closed, then
// announces every remaining loss.
func (fi *fanIn) run() error {
	tick := time.NewTicker(fi.p.opts.LossInterval)
	defer tick.Stop()
	for {
		select {
		case <-fi.closed:
			fi.mu.Lock()
			defer fi.mu.Unlock()
			fi.begin()
			if fi.aborted || fi.ctx.Err() != nil {
				return nil
			}
			return fi.f.finalLosses(fi.ctx)
		case <-tick.C:
			// Drops only happen while pushing, but a quiet period after a
			// burst must still get its report.
			fi.mu.Lock()
			fi.begin()
			if !fi.aborted && fi.f.reportLosses(fi.ctx, false) != nil {
				fi.aborted = true
			}
			fi.mu.Unlock()
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
	// queues counts the queues of this format. When each of them settles
	// in order (queue.SettleInOrder), free holds line batches every queue
	// is done with, for reuse; else free is nil and every batch is new.
	queues int
	free   chan *lineBatch
	cur    *lineBatch // emitBatch: the batch being pushed, until all of it is
}

// lineBatch is one batch's lines and items in one format. refs counts
// the (item, queue) pairs not yet released plus one for the fan-out while
// it pushes; at zero nothing refers to it any more and it goes back to
// free. A batch that is never released (a queue whose sink settles out
// of order, an aborted push) is left to the garbage collector.
type lineBatch struct {
	buf   []byte
	items []queue.Item
	refs  atomic.Int64
	free  chan *lineBatch
}

// Release implements queue.Releaser.
func (lb *lineBatch) Release(n int) {
	if lb.refs.Add(-int64(n)) != 0 {
		return
	}
	if cap(lb.buf) > maxPooledLines {
		return // one huge batch must not pin its memory for good
	}
	select {
	case lb.free <- lb:
	default:
	}
}

// Bounds of the line batch pool: batches kept per format, and the
// largest line buffer kept.
const (
	pooledBatches  = 48
	maxPooledLines = 1 << 20
)

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
	ordered := make([]bool, len(f.encs))
	for i := range ordered {
		ordered[i] = true
	}
	for qi, q := range p.queues {
		e := f.qfmt[qi]
		f.encs[e].queues++
		ordered[e] = ordered[e] && q.InOrder()
	}
	for e := range f.encs {
		if ordered[e] && f.encs[e].queues > 0 {
			f.encs[e].free = make(chan *lineBatch, pooledBatches)
		}
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
	for len(batch) > maxChunk {
		if err := f.emitChunk(ctx, batch[:maxChunk]); err != nil {
			return err
		}
		batch = batch[maxChunk:]
	}
	return f.emitChunk(ctx, batch)
}

// maxChunk bounds the records that share one line buffer: a full read
// of the kernel queue is encoded and queued in chunks of this many, so
// that reused buffers are of one size and one settled chunk frees its
// buffer without waiting for the rest of the read.
const maxChunk = 256

// emitChunk is emitBatch for at most maxChunk records.
func (f *fanState) emitChunk(ctx context.Context, batch []*record.Record) error {
	for _, r := range batch {
		f.seq++
		r.Sequence = f.seq
	}
	for e := range f.encs {
		f.items[e] = f.encs[e].encode(batch)
	}
	for _, r := range batch {
		if r.Action == record.ActionEventsLost {
			f.p.lossRecs.Add(1)
			if r.Fanaudit.Lost.Reason == record.ReasonKernelOverflow {
				f.p.kernelOverflows.Add(1)
			}
		}
	}
	if n := len(batch); n > 0 {
		f.p.produced.Store(batch[n-1].Sequence)
	}
	// A chunk at a time per queue: one lock and one wake-up of its sink
	// per chunk, and the sink takes the chunk whole.
	for qi, q := range f.p.queues {
		if _, err := q.PushAll(ctx, f.items[f.qfmt[qi]]); err != nil {
			f.donePushing(false)
			return err
		}
	}
	f.donePushing(true)
	return nil
}

// donePushing drops the fan-out's hold on the batches emitBatch pushed;
// after an aborted push it keeps it, so those batches are never reused.
func (f *fanState) donePushing(pushed bool) {
	for e := range f.encs {
		fe := &f.encs[e]
		if fe.cur != nil && pushed {
			fe.cur.Release(1)
		}
		fe.cur = nil
	}
}

// encode encodes a numbered batch into one line buffer and one item
// slice: reused ones when every queue of the format is done with an
// earlier batch, else new ones.
func (fe *fanEncoder) encode(batch []*record.Record) []queue.Item {
	if len(fe.ends) < len(batch) {
		fe.ends = make([]int, len(batch))
	}
	var lb *lineBatch
	var buf []byte
	if fe.free != nil {
		select {
		case lb = <-fe.free:
		default:
			lb = &lineBatch{free: fe.free}
		}
		// Every item of this batch is pushed to each queue of the format
		// and released once by each; one more for the fan-out itself.
		lb.refs.Store(int64(len(batch)*fe.queues) + 1)
		fe.cur = lb
		buf = lb.buf[:0]
	}
	if want := len(batch) * fe.lineSize; cap(buf) < want {
		buf = make([]byte, 0, want)
	}
	for i, r := range batch {
		buf = fe.enc.Append(buf, r)
		buf = append(buf, '\n')
		fe.ends[i] = len(buf)
	}
	if n := len(batch); n > 0 {
		// Size the next buffer for this batch's average line.
		fe.lineSize = max(fe.lineSize, len(buf)/n+64)
	}
	var items []queue.Item
	var owner queue.Releaser
	if lb != nil {
		lb.buf = buf
		if cap(lb.items) < len(batch) {
			lb.items = make([]queue.Item, len(batch))
		}
		items, owner = lb.items[:len(batch)], lb
	} else {
		items = make([]queue.Item, len(batch))
	}
	start := 0
	for i, r := range batch {
		items[i] = queue.Item{
			Seq:    r.Sequence,
			Action: r.Action,
			Path:   r.File.Path,
			Line:   buf[start:fe.ends[i]:fe.ends[i]],
			Loss:   r.Action == record.ActionEventsLost,
			Owner:  owner,
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
