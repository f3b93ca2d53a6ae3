// Package queue owns the bounded queue between the pipeline's fan-out and
// one sink: its when_full policies (block, drop_newest, drop_oldest), the
// exact accounting received = delivered + dropped + in flight, the
// per-reason count of losses not yet announced in-band, and the signal
// that everything pushed so far is settled. The pipeline pushes; a sink
// sees a queue only as sinks.Input (take a batch, settle each item).
package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/fanaudit/fanaudit/internal/record"
)

// Item is one encoded record, shared read-only by every sink's queue.
type Item struct {
	Seq    uint64
	Action record.Action
	Path   string // file.path, for sinks that key by path
	Line   []byte // one compact JSON object followed by '\n'
	// Span, when set, is Line followed by whatever its buffer holds
	// after it: Span[:len(Line)] is Line, and cap(Span) reaches the end
	// of the buffer. The pipeline encodes successive records back to
	// back, so a sink can write a run of the items it holds from the
	// buffer itself (Run) instead of copying their lines. Read-only, like
	// Line, and only while the sink holds the items (taken, not settled).
	Span []byte
	Loss bool // an events_lost record; queues never drop these
	// Owner, when set, is told once per queue the item was pushed to
	// when that queue is done with it: dropped, or settled by a sink
	// that settles in order (see SettleInOrder). The pipeline reuses a
	// batch's line buffer once every queue is done with every item.
	Owner Releaser
}

// Run returns the longest prefix of items whose lines lie back to back
// in one buffer, as one slice of those bytes, and how many items it
// covers (at least one when items is not empty). Without Span, or when
// the next line is elsewhere, the run ends. The slice is read-only and
// valid while the caller holds the items.
func Run(items []*Item) ([]byte, int) {
	if len(items) == 0 {
		return nil, 0
	}
	run := items[0].Span
	size := len(items[0].Line)
	if len(run) < size {
		return items[0].Line, 1
	}
	n := 1
	for _, it := range items[1:] {
		l := len(it.Line)
		if l == 0 || cap(run)-size < l || &run[:size+1][size] != &it.Line[0] {
			break
		}
		size += l
		n++
	}
	return run[:size], n
}

// Releaser is an Item's owner, see Item.Owner. Release(n) tells it that
// the queue is done with n of its items: a run of settled items costs
// their owner one call, not one per item.
type Releaser interface {
	Release(n int)
}

func (it *Item) release() {
	if it.Owner != nil {
		it.Owner.Release(1)
	}
}

// releaseItems tells the owners of items that the queue is done with
// them, one call per run of items with the same owner.
func releaseItems(items []*Item) {
	var owner Releaser
	n := 0
	for _, it := range items {
		if it.Owner != owner {
			if n > 0 {
				owner.Release(n)
			}
			owner, n = it.Owner, 0
		}
		if owner != nil {
			n++
		}
	}
	if n > 0 {
		owner.Release(n)
	}
}

// Policy says what Push does when a queue is full.
type Policy int

const (
	// Block makes Push wait for room, pushing back on the pipeline.
	Block Policy = iota
	// DropNewest drops the item being pushed.
	DropNewest
	// DropOldest evicts the oldest queued item that is not a loss record.
	DropOldest
)

var policyNames = [...]string{
	Block:      "block",
	DropNewest: "drop_newest",
	DropOldest: "drop_oldest",
}

func (p Policy) String() string {
	if p >= 0 && int(p) < len(policyNames) {
		return policyNames[p]
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// ParsePolicy maps the config's when_full value to a Policy.
func ParsePolicy(s string) (Policy, error) {
	for i, n := range policyNames {
		if n == s {
			return Policy(i), nil
		}
	}
	return Block, fmt.Errorf("unknown queue policy %q (want block, drop_newest or drop_oldest)", s)
}

// MarshalText lets the effective config print the policy by name.
func (p Policy) MarshalText() ([]byte, error) {
	if p < 0 || int(p) >= len(policyNames) {
		return nil, fmt.Errorf("invalid queue policy %d", int(p))
	}
	return []byte(policyNames[p]), nil
}

// UnmarshalText lets a TOML decoder fill a Policy from its name.
func (p *Policy) UnmarshalText(b []byte) error {
	v, err := ParsePolicy(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// ErrClosed is returned by Push after Close.
var ErrClosed = errors.New("sink queue closed")

// Stats is one consistent snapshot of a queue's accounting.
// Received == Delivered + Dropped + InFlight always holds; InFlight counts
// both queued items (Depth) and items a sink has taken but not settled.
type Stats struct {
	Sink      string
	Received  uint64
	Delivered uint64
	Dropped   uint64
	InFlight  uint64
	Depth     int
	Capacity  int
	Policy    Policy
	// Failing is the reason of the sink's last settlement when that was a
	// failure ("" once it delivers again, or while it never failed).
	Failing string
	// Abandoned is set once the sink stopped taking from the queue.
	Abandoned bool
	// LostEarlier counts records of earlier runs this sink lost in this
	// run (see Queue.LostEarlier); they are not part of Received.
	LostEarlier uint64
	// Parked counts in-flight items the sink holds durably (Park).
	Parked uint64
}

// Queue is a bounded FIFO between the pipeline and one sink.
//
// A mutex-guarded ring rather than a channel: DropOldest must evict from
// the head, loss records must be admitted past the capacity, and the exact
// accounting must change in the same critical section as the ring. Waiters
// are woken through one-slot channels so that both sides can also wait on a
// context, which sync.Cond cannot; a wake-up is only sent when somebody is
// known to wait, so the uncontended path is a lock and a slot copy.
type Queue struct {
	sink     string
	capacity int
	policy   Policy

	mu          sync.Mutex
	ring        []*Item // len(ring) >= capacity; grows only for loss records
	head        int
	count       int
	taken       uint64 // handed out by Next, not yet settled
	parked      uint64 // of taken, held durably by the sink (Park)
	received    uint64
	delivered   uint64
	dropped     uint64
	unreported  Unreported
	lostEarlier uint64 // LostEarlier total; outside Received
	failing     string // reason of the last settlement, when it failed
	abandoned   string // set by Abandon: every item is failed with this reason
	closed      bool
	inOrder     bool    // the sink settles in the order it takes (SettleInOrder)
	held        []*Item // inOrder: taken, not settled, oldest first from heldHead
	heldHead    int
	dataWait    int           // goroutines waiting in Next
	roomWait    int           // goroutines waiting in Push (Block)
	idle        chan struct{} // closed when nothing is in flight; made by WaitSettled

	dataCh    chan struct{}
	roomCh    chan struct{}
	doneCh    chan struct{}
	abandonCh chan struct{} // closed by Abandon: blocked pushes retry
}

// New returns an empty queue for the named sink. A capacity below 1
// is raised to 1: the config validates the value, and a queue that can
// never hold an item would block or drop everything.
func New(sink string, capacity int, policy Policy) *Queue {
	if capacity < 1 {
		capacity = 1
	}
	return &Queue{
		sink:      sink,
		capacity:  capacity,
		policy:    policy,
		ring:      make([]*Item, capacity),
		dataCh:    make(chan struct{}, 1),
		roomCh:    make(chan struct{}, 1),
		doneCh:    make(chan struct{}),
		abandonCh: make(chan struct{}),
	}
}

// SettleInOrder declares that the sink settles the items it takes in the
// order it took them and never looks at an item once it is settled, so
// that the queue can tell each item's Owner when it is done with it.
// Call it before the sink runs.
func (q *Queue) SettleInOrder() {
	q.mu.Lock()
	q.inOrder = true
	q.mu.Unlock()
}

// InOrder reports whether SettleInOrder was called.
func (q *Queue) InOrder() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.inOrder
}

// Push queues it. When the queue is full, Block waits for room (or ctx, or
// Close), DropNewest drops it and DropOldest evicts the oldest non-loss
// item; drops are counted and returned by TakeUnreported. Loss records are
// always queued, past the capacity if need be: they are rate-limited
// upstream and dropping them would hide the loss they report. Push returns
// nil when the item was queued or dropped by policy, ctx.Err() when a
// blocked push gave up (the item was not received), and ErrClosed after
// Close.
func (q *Queue) Push(ctx context.Context, it *Item) error {
	if it == nil {
		return fmt.Errorf("sink %s: push of a nil item", q.sink)
	}
	q.mu.Lock()
	for {
		if q.closed {
			q.mu.Unlock()
			return fmt.Errorf("sink %s: %w", q.sink, ErrClosed)
		}
		if q.abandoned != "" {
			// Nobody takes from this queue any more: the item is lost for
			// this sink, counted and announced like any other failure.
			q.received++
			q.dropped++
			q.unreported.add(q.abandoned, 1)
			it.release()
			q.mu.Unlock()
			return nil
		}
		if q.count < q.capacity || it.Loss {
			q.received++
			q.put(it)
			q.wakeAfterPush()
			if q.roomWait > 0 && q.count < q.capacity {
				// Pass the wake-up on to the next blocked producer.
				select {
				case q.roomCh <- struct{}{}:
				default:
				}
			}
			q.mu.Unlock()
			return nil
		}
		switch q.policy {
		case DropNewest:
			q.received++
			q.drop(1)
			it.release()
			q.mu.Unlock()
			return nil
		case DropOldest:
			q.received++
			if q.evictOldest() {
				q.put(it)
				q.wakeAfterPush()
			} else {
				// Everything queued is a loss record: the new item is the
				// oldest droppable one.
				q.drop(1)
				it.release()
			}
			q.mu.Unlock()
			return nil
		}
		// Block, and any unknown policy value, which must not lose data.
		q.roomWait++
		q.mu.Unlock()
		select {
		case <-q.roomCh:
		case <-q.doneCh:
		case <-q.abandonCh:
		case <-ctx.Done():
			q.mu.Lock()
			q.roomWait--
			q.mu.Unlock()
			return fmt.Errorf("sink %s: push: %w", q.sink, ctx.Err())
		}
		q.mu.Lock()
		q.roomWait--
	}
}

// PushAll pushes &items[i] for every i, in order, as Push would one by
// one, but under one lock while there is room and with one wake-up of the
// sink per run of items instead of one per item: a sink then takes a
// whole batch at once. It returns how many items were received (queued or
// dropped by policy) before an error, which only a blocked push that gave
// up (ctx) or Close cause.
func (q *Queue) PushAll(ctx context.Context, items []Item) (int, error) {
	done := 0
	for done < len(items) {
		q.mu.Lock()
		n := 0
		for _, it := range items[done:] {
			if q.closed || q.abandoned != "" || (q.count >= q.capacity && !it.Loss && q.policy == Block) {
				break
			}
			q.received++
			switch {
			case q.count < q.capacity || it.Loss:
				q.put(&items[done+n])
			case q.policy == DropNewest:
				q.drop(1)
				items[done+n].release()
			default: // DropOldest
				if q.evictOldest() {
					q.put(&items[done+n])
				} else {
					q.drop(1)
					items[done+n].release()
				}
			}
			n++
		}
		if n > 0 {
			q.wakeAfterPush()
		}
		q.mu.Unlock()
		done += n
		if done < len(items) {
			// Closed, abandoned or full under Block: Push knows what to do.
			if err := q.Push(ctx, &items[done]); err != nil {
				return done, err
			}
			done++
		}
	}
	return done, nil
}

// put appends to the ring, growing it when a loss record exceeds the
// capacity. Called with mu held.
func (q *Queue) put(it *Item) {
	if q.count == len(q.ring) {
		grown := make([]*Item, 2*len(q.ring))
		n := copy(grown, q.ring[q.head:])
		copy(grown[n:], q.ring[:q.head])
		q.ring = grown
		q.head = 0
	}
	q.ring[(q.head+q.count)%len(q.ring)] = it
	q.count++
}

// evictOldest removes the oldest non-loss item and counts it dropped; it
// reports false when every queued item is a loss record. Called with mu held.
func (q *Queue) evictOldest() bool {
	n := len(q.ring)
	for i := 0; i < q.count; i++ {
		idx := (q.head + i) % n
		if q.ring[idx].Loss {
			continue
		}
		// Close the gap by shifting the older loss records one slot
		// towards the tail; loss records are rare so i is almost always 0.
		evicted := q.ring[idx]
		for j := i; j > 0; j-- {
			q.ring[(q.head+j)%n] = q.ring[(q.head+j-1)%n]
		}
		q.ring[q.head] = nil
		evicted.release()
		q.head = (q.head + 1) % n
		q.count--
		q.drop(1)
		return true
	}
	return false
}

func (q *Queue) drop(n uint64) {
	q.dropped += n
	q.unreported.add(record.ReasonQueueFull, n)
	q.wakeIdle()
}

// wakeIdle closes the idle channel once nothing is in flight. Called with
// mu held after anything that lowers the in-flight count.
func (q *Queue) wakeIdle() {
	if q.idle != nil && q.count == 0 && q.taken == q.parked {
		close(q.idle)
		q.idle = nil
	}
}

// wakeAfterPush signals a waiting consumer. Called with mu held.
func (q *Queue) wakeAfterPush() {
	if q.dataWait > 0 {
		select {
		case q.dataCh <- struct{}{}:
		default:
		}
	}
}

// Next blocks until at least one item is queued and returns up to cap(buf)
// of them (at least one when cap(buf) is 0) in FIFO order, reusing buf's
// storage. The caller must settle each with Delivered or Failed. Next
// returns io.EOF once the queue is closed and empty, and ctx.Err() when ctx
// ends first.
func (q *Queue) Next(ctx context.Context, buf []*Item) ([]*Item, error) {
	buf = buf[:0]
	max := cap(buf)
	if max == 0 {
		max = 1
	}
	q.mu.Lock()
	for q.count == 0 {
		if q.closed {
			q.mu.Unlock()
			return buf, io.EOF
		}
		q.dataWait++
		q.mu.Unlock()
		select {
		case <-q.dataCh:
		case <-q.doneCh:
		case <-ctx.Done():
			q.mu.Lock()
			q.dataWait--
			q.mu.Unlock()
			return buf, ctx.Err()
		}
		q.mu.Lock()
		q.dataWait--
	}
	n := min(q.count, max)
	size := len(q.ring)
	for i := 0; i < n; i++ {
		buf = append(buf, q.ring[q.head])
		q.ring[q.head] = nil
		q.head++
		if q.head == size {
			q.head = 0
		}
	}
	if q.inOrder {
		q.held = append(q.held, buf...)
	}
	q.count -= n
	q.taken += uint64(n)
	if q.roomWait > 0 {
		select {
		case q.roomCh <- struct{}{}:
		default:
		}
	}
	if q.count > 0 && q.dataWait > 0 {
		// Another consumer may be waiting for what this batch left behind.
		select {
		case q.dataCh <- struct{}{}:
		default:
		}
	}
	q.mu.Unlock()
	return buf, nil
}

// Delivered settles n taken items as delivered.
func (q *Queue) Delivered(n int) {
	q.settle(n, "")
}

// Failed settles n taken items as lost for reason (record.ReasonSinkError,
// "dead_letter", ...; "" means sink_error); they count as dropped and are
// returned by TakeUnreported under that reason.
func (q *Queue) Failed(n int, reason string) {
	if reason == "" {
		reason = record.ReasonSinkError
	}
	q.settle(n, reason)
}

// settle clamps n to what is actually outstanding so that a sink's
// miscount cannot break the Received invariant.
func (q *Queue) settle(n int, failed string) {
	if n <= 0 {
		return
	}
	q.mu.Lock()
	u := min(uint64(n), q.taken)
	q.taken -= u
	if q.inOrder {
		q.releaseHeld(int(u))
	}
	q.parked = min(q.parked, q.taken)
	if failed != "" {
		q.dropped += u
		q.unreported.add(failed, u)
		q.failing = failed
	} else {
		q.delivered += u
		q.failing = ""
	}
	q.wakeIdle()
	q.mu.Unlock()
}

// releaseHeld tells the owners of the n oldest held items that the queue
// is done with them. Called with mu held.
func (q *Queue) releaseHeld(n int) {
	n = min(n, len(q.held)-q.heldHead)
	releaseItems(q.held[q.heldHead : q.heldHead+n])
	clear(q.held[q.heldHead : q.heldHead+n])
	q.heldHead += n
	switch {
	case q.heldHead == len(q.held):
		q.held, q.heldHead = q.held[:0], 0
	case q.heldHead > len(q.held)/2:
		// A sink that always holds some: keep the slice from growing.
		k := copy(q.held, q.held[q.heldHead:])
		clear(q.held[k:])
		q.held, q.heldHead = q.held[:k], 0
	}
}

// Park marks n taken, unsettled items as held durably by the sink (the
// Kafka sink's spool): still in flight, so Health sees them not moving,
// but WaitSettled (the final loss report) does not wait for them, because
// they outlive the run: the sink settles them as delivered when it stops,
// handing them to its next run. Unpark undoes it before they are settled.
func (q *Queue) Park(n int) {
	if n <= 0 {
		return
	}
	q.mu.Lock()
	q.parked = min(q.parked+uint64(n), q.taken)
	q.wakeIdle()
	q.mu.Unlock()
}

// Unpark ends Park for n items, before the sink settles them.
func (q *Queue) Unpark(n int) {
	if n <= 0 {
		return
	}
	q.mu.Lock()
	q.parked -= min(uint64(n), q.parked)
	q.mu.Unlock()
}

// LostEarlier reports n records of an earlier agent run (runID) that a
// sink lost in this run, e.g. spooled records replayed after a restart and
// then dead-lettered. They were never received by this queue, so they do
// not touch its accounting; they are announced with
// fanaudit.lost.previous_run_id so that each run's own loss sum stays exact.
func (q *Queue) LostEarlier(n uint64, reason, runID string) {
	if n == 0 {
		return
	}
	q.mu.Lock()
	if q.unreported.Earlier == nil {
		q.unreported.Earlier = map[EarlierLoss]uint64{}
	}
	q.unreported.Earlier[EarlierLoss{Reason: reason, RunID: runID}] += n
	q.lostEarlier += n
	q.mu.Unlock()
}

// Abandon is called when the sink stopped taking from the queue (its Run
// returned early): everything queued is failed with reason, and so is
// every later push, so that a dead sink neither blocks the pipeline nor
// loses records silently. Items the sink took stay its to settle.
func (q *Queue) Abandon(reason string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.abandoned != "" {
		return
	}
	q.abandoned = reason
	q.failing = reason
	for q.count > 0 {
		q.ring[q.head].release()
		q.ring[q.head] = nil
		q.head = (q.head + 1) % len(q.ring)
		q.count--
		q.dropped++
		q.unreported.add(reason, 1)
	}
	q.wakeIdle()
	close(q.abandonCh)
}

// WaitSettled blocks until nothing is in flight but what the sink parked:
// every item pushed so far was delivered, failed, dropped or parked. It
// returns ctx.Err() when ctx ends first. Items pushed while it waits are
// waited for too.
func (q *Queue) WaitSettled(ctx context.Context) error {
	q.mu.Lock()
	for q.count > 0 || q.taken > q.parked {
		if q.idle == nil {
			q.idle = make(chan struct{})
		}
		idle := q.idle
		q.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			return ctx.Err()
		}
		q.mu.Lock()
	}
	q.mu.Unlock()
	return nil
}

// Close stops further pushes and wakes everybody waiting. Next keeps
// returning what is queued, then io.EOF. Close is idempotent.
func (q *Queue) Close() {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.doneCh)
	}
	q.mu.Unlock()
}

// Len returns how many items are queued (not counting taken ones); sinks
// use it to flush when they have caught up.
func (q *Queue) Len() int {
	q.mu.Lock()
	n := q.count
	q.mu.Unlock()
	return n
}

// Stats returns one snapshot taken under the queue lock.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	s := Stats{
		Sink:      q.sink,
		Received:  q.received,
		Delivered: q.delivered,
		Dropped:   q.dropped,
		InFlight:  uint64(q.count) + q.taken,
		Depth:     q.count,
		Capacity:  q.capacity,
		Policy:    q.policy,
		Failing:   q.failing,
		Abandoned: q.abandoned != "",

		LostEarlier: q.lostEarlier,
		Parked:      q.parked,
	}
	q.mu.Unlock()
	return s
}

// Unreported counts losses not yet announced in an events_lost record:
// Reasons by reason (queue_full for when_full drops, the sink's reason
// for items it failed), Earlier for LostEarlier by reason and run.
type Unreported struct {
	Reasons map[string]uint64
	Earlier map[EarlierLoss]uint64
}

// EarlierLoss keys losses of an earlier run's records.
type EarlierLoss struct {
	Reason string
	RunID  string
}

func (u *Unreported) add(reason string, n uint64) {
	if u.Reasons == nil {
		u.Reasons = map[string]uint64{}
	}
	u.Reasons[reason] += n
}

// Total is every unannounced loss.
func (u Unreported) Total() uint64 {
	var t uint64
	for _, n := range u.Reasons {
		t += n
	}
	for _, n := range u.Earlier {
		t += n
	}
	return t
}

// TakeUnreported returns the drops not yet announced in an events_lost
// record and resets the counts, so each drop is announced once.
func (q *Queue) TakeUnreported() Unreported {
	q.mu.Lock()
	u := q.unreported
	q.unreported = Unreported{}
	q.mu.Unlock()
	return u
}

// Name returns the sink name the queue was created for.
func (q *Queue) Name() string { return q.sink }
