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
	encs []fanEncoder
	qfmt []int
	runs [][][]queue.Item  // emitChunk: per encoder, the chunk's items, in runs
	one  [1]*record.Record // emit: a batch of one without allocating
}

// fanEncoder is one format's encoder with its line bookkeeping.
//
// When every queue of the format settles in order (queue.SettleInOrder),
// lines are encoded into slabs: one buffer and one item array that
// successive chunks fill until either is full, so that a slab's memory
// is used whole however small the chunks are (live, a read is often a
// few dozen records), its lines lie back to back across chunks (a file
// sink writes them in one write from there, see queue.Run), and a slab
// every queue is done with is reused. Otherwise (a Kafka sink settles out
// of order) every chunk gets new memory, left to the garbage collector.
type fanEncoder struct {
	enc      record.LineEncoder
	lineSize int // bytes to reserve per line: the last slab's average + 64 (else the largest chunk average + 64)
	// queues counts the queues of this format.
	queues int
	pool   *slabPool  // nil: no slabs
	cur    *lineBatch // the slab being filled, held by the fan-out
}

// lineBatch is a slab: lines back to back in buf and their items in
// items (whose capacity never changes: queues hold pointers into it).
// refs counts the (item, queue) pairs not yet released plus one for the
// fan-out while the slab is open; at zero nothing refers to it any more
// and it goes back to its pool. A slab that is never released (an
// aborted push) is left to the garbage collector.
type lineBatch struct {
	buf   []byte
	items []queue.Item
	refs  atomic.Int64
	pool  *slabPool
}

// Release implements queue.Releaser.
func (lb *lineBatch) Release(n int) {
	if lb.refs.Add(-int64(n)) != 0 {
		return
	}
	if cap(lb.buf) > maxPooledLines {
		return // one huge line must not pin its memory for good
	}
	select {
	case lb.pool.free <- lb:
	default:
		lb.pool.spare.Put(lb)
	}
}

// slabPool keeps released slabs for reuse: pooledSlabs for good, and
// the rest until the garbage collector takes them (spare, cleared after
// two collections without use). In a drain the queue fills and empties
// as the goroutines take turns on the cores, so slabs were dropped when
// it emptied and allocated again when it filled: 100-240 MB, 400-900
// slabs in a 1.1 M-record drain. spare keeps them through such swings
// without holding them when the load is gone.
type slabPool struct {
	free  chan *lineBatch
	spare sync.Pool
}

// Slabs: records per slab (also the largest chunk, maxChunk), slabs kept
// per format for reuse, and the largest line buffer kept. More pooled
// slabs (enough to refill a full queue) allocated less but measured
// worse: peak RSS 55-62 MiB instead of 52 live, and no faster.
const (
	slabItems      = 256
	pooledSlabs    = 8
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
			f.encs[e].pool = &slabPool{free: make(chan *lineBatch, pooledSlabs)}
		}
	}
	f.runs = make([][][]queue.Item, len(f.encs))
	return f
}

func (f *fanState) emit(ctx context.Context, r *record.Record) error {
	f.one[0] = r
	return f.emitBatch(ctx, f.one[:])
}

// emitBatch numbers, encodes and pushes a batch, in chunks of at most
// maxChunk records. Lines go into slabs (see fanEncoder), so the memory
// is allocated per slab at most, not per record, and reused. A sink
// holding one item keeps its slab alive; queues are bounded, so that is
// bounded too.
func (f *fanState) emitBatch(ctx context.Context, batch []*record.Record) error {
	for len(batch) > maxChunk {
		if err := f.emitChunk(ctx, batch[:maxChunk]); err != nil {
			return err
		}
		batch = batch[maxChunk:]
	}
	return f.emitChunk(ctx, batch)
}

// maxChunk bounds the records encoded and queued at once: a full read
// of the kernel queue is encoded and queued in chunks of this many.
const maxChunk = slabItems

// emitChunk is emitBatch for at most maxChunk records.
func (f *fanState) emitChunk(ctx context.Context, batch []*record.Record) error {
	for _, r := range batch {
		f.seq++
		r.Sequence = f.seq
	}
	for e := range f.encs {
		f.runs[e] = f.encs[e].encode(batch, f.runs[e][:0])
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
	// A chunk at a time per queue (one run per slab it went into, and
	// one per loss record): one lock and one wake-up of its sink per
	// run, and the sink takes the run whole.
	for qi, q := range f.p.queues {
		for _, run := range f.runs[f.qfmt[qi]] {
			if _, err := q.PushAll(ctx, run); err != nil {
				f.abandonSlabs()
				return err
			}
		}
	}
	return nil
}

// abandonSlabs drops the open slabs after an aborted push without
// releasing them: items that were never pushed are never released, so
// the slabs are left to the garbage collector instead of being reused.
func (f *fanState) abandonSlabs() {
	for e := range f.encs {
		f.encs[e].cur = nil
	}
}

// encode encodes a numbered chunk and appends its items to runs, one run
// per slab it went into.
func (fe *fanEncoder) encode(batch []*record.Record, runs [][]queue.Item) [][]queue.Item {
	if fe.pool == nil {
		return append(runs, fe.encodeNew(batch))
	}
	for len(batch) > 0 {
		if batch[0].Action == record.ActionEventsLost {
			// A loss record is queued past a full queue's capacity and
			// waits there as long as its sink stalls, one more every
			// LossInterval: in a slab, each would keep the lines of up to
			// slabItems other records alive with it. It gets memory of
			// its own (loss records are rare).
			runs = append(runs, fe.encodeNew(batch[:1]))
			batch = batch[1:]
			continue
		}
		lb := fe.slab()
		first := len(lb.items)
		buf := lb.buf
		n := 0
		for _, r := range batch {
			if len(lb.items) == cap(lb.items) || (n > 0 && cap(buf)-len(buf) < fe.lineSize) || r.Action == record.ActionEventsLost {
				break
			}
			start := len(buf)
			buf = fe.enc.Append(buf, r)
			buf = append(buf, '\n')
			lb.items = append(lb.items, item(r, buf, start, lb))
			n++
		}
		lb.buf = buf
		// Every item is pushed to each queue of the format and released
		// once by each.
		lb.refs.Add(int64(n * fe.queues))
		runs = append(runs, lb.items[first:])
		batch = batch[n:]
	}
	return runs
}

// slab returns the open slab when it has room for one more line, else
// closes it (dropping the fan-out's hold) and opens a pooled or new one.
func (fe *fanEncoder) slab() *lineBatch {
	if lb := fe.cur; lb != nil {
		if len(lb.items) < cap(lb.items) && cap(lb.buf)-len(lb.buf) >= fe.lineSize {
			return lb
		}
		// The next slabs are sized for this one's average line: 256
		// lines, not one chunk's, which live is often a record or two;
		// one long line (a 4 KiB command line) alone in a chunk made
		// every later slab too big to pool, and mostly empty.
		fe.lineSize = len(lb.buf)/max(len(lb.items), 1) + 64
		fe.cur = nil
		lb.Release(1)
	}
	// A power of two, so that the slabs in the pool stay big enough while
	// lineSize creeps up.
	want := 64 << 10
	for want < slabItems*fe.lineSize {
		want *= 2
	}
	var lb *lineBatch
	select {
	case lb = <-fe.pool.free:
	default:
		lb, _ = fe.pool.spare.Get().(*lineBatch)
	}
	if lb == nil {
		lb = &lineBatch{items: make([]queue.Item, 0, slabItems), pool: fe.pool}
	}
	lb.buf, lb.items = lb.buf[:0], lb.items[:0]
	// A pooled slab of at least half the size wanted is used as it is: it
	// closes after fewer lines (encode stops when a line may not fit).
	// Lines average ~950 bytes by default, so 256 of them sit right at
	// the 256/512 KiB step, and requiring the full size threw away and
	// reallocated every pooled slab each time the average crossed it
	// (about 180 of 4,300 slabs in a 1.1 M-record drain, 47 MB).
	if cap(lb.buf) < want/2 {
		lb.buf = make([]byte, 0, want)
	}
	lb.refs.Store(1)
	fe.cur = lb
	return lb
}

// encodeNew encodes a chunk into new memory of its own.
func (fe *fanEncoder) encodeNew(batch []*record.Record) []queue.Item {
	buf := make([]byte, 0, len(batch)*fe.lineSize)
	items := make([]queue.Item, 0, len(batch))
	for _, r := range batch {
		start := len(buf)
		buf = fe.enc.Append(buf, r)
		buf = append(buf, '\n')
		items = append(items, item(r, buf, start, nil))
	}
	if n := len(batch); n > 0 && fe.pool == nil {
		fe.lineSize = max(fe.lineSize, len(buf)/n+64)
	}
	return items
}

// item is r's queue item, its line being buf[start:].
func item(r *record.Record, buf []byte, start int, owner *lineBatch) queue.Item {
	end := len(buf)
	it := queue.Item{
		Seq:    r.Sequence,
		Action: r.Action,
		Path:   r.File.Path,
		Line:   buf[start:end:end],
		Span:   buf[start:end:cap(buf)],
		Loss:   r.Action == record.ActionEventsLost,
	}
	if owner != nil {
		it.Owner = owner
	}
	return it
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
