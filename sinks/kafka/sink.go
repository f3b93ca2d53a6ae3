// Package kafka owns fanaudit's Kafka sink: at-least-once delivery of
// encoded records to a topic with per-batch acknowledgements, bounded
// in-flight bytes, retries without a cliff, an on-disk outage spool that
// survives restarts, and a dead-letter file for permanent rejections.
//
// Accounting: an item is settled with Queue.Delivered when the broker
// acknowledges it, directly or replayed from the spool; a spooled item
// stays in flight on the queue until then, so a broker outage shows in
// the queue's accounting (and /healthz) as records in flight not moving.
// An item is settled with Input.Failed when the broker can never take
// it (dead_letter), when the spool's when_full discards it (spool_full),
// or when it cannot be read back from the spool (spool_corrupt); the
// pipeline announces each in-band. When Run returns, this run's records
// still in the spool are settled as delivered: they are handed to the next
// run, which replays them under their own event ids and reports any loss
// of them with Input.LostEarlier, naming their run
// (fanaudit.lost.previous_run_id).
package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fanaudit/fanaudit/internal/record"
	"github.com/fanaudit/fanaudit/sinks"
	"github.com/rs/zerolog"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/compress"
)

// HeaderEventID carries <host.id>:<boot.id>:<run id>:<event.sequence>
// (record.EventIDPrefix, the records' event.id), unique
// per record across hosts, boots and agent runs, so consumers can drop the
// duplicates that at-least-once delivery produces.
const HeaderEventID = "fanaudit.event_id"

const (
	backoffMin = 100 * time.Millisecond
	backoffMax = 30 * time.Second
)

// Sink is the Kafka sink. Create it with New; Run may be called once.
type Sink struct {
	cfg       Config
	log       zerolog.Logger
	prod      *producer
	idPrefix  string
	idPrefixB []byte // idPrefix, to match ids without converting them
	hostKey   []byte
	spool     *spool
	dl        *deadLetters

	acked, spooled, replayed, deadLettered atomic.Uint64
	retries, rejected                      atomic.Uint64
	replayDead, handedOff, lostEarlier     atomic.Uint64
	spoolFullLost, spoolCorruptLost        atomic.Uint64
	lat                                    latency
	conds                                  condLog
	order                                  orderer // turns to write to the spool, in dispatch order
	direct                                 orderer // direct batches' turns to handle a failure, in dispatch order
	started                                orderer // direct batches' turns to take their partitions (sendTurn)
	memRetried                             atomic.Uint64
	spooledLz4                             atomic.Uint64 // records spooled as lz4 sets while behind (encodeForSpool)
	failing                                atomic.Int64  // direct batches that failed, neither acknowledged nor spooled yet
	unacked                                directSet     // direct batches not yet acknowledged, spooled or lost
	replayNext                             atomic.Uint64
	replayMoved                            signal // replayNext or the spool's cursor moved
	// routeMu orders the choice between the spool and the direct path:
	// routed counts the batches dispatch sent toward the spool, and a spool
	// ticket is taken under it, so a failed direct batch that finds routed
	// unchanged since its dispatch takes a ticket before any later batch.
	routeMu sync.Mutex
	routed  uint64
	// stopCtx ends when Run's gather loop ends (input closed or ctx
	// done): direct batches retried from memory are then spooled.
	stopCtx   context.Context
	spoolWait *window    // batches waiting for their turn to spool
	spoolEnc  sync.Mutex // one batch encoded for the spool at a time

	// q is the queue Run serves; the spool's loss callback settles on it.
	q atomic.Pointer[sinks.Input]

	// onAck lets tests observe acknowledgements of directly sent items.
	onAck func(items []*sinks.Item)

	sealer   sinks.Sealer   // seal.go
	sealWait sinks.SealWait // seal.go: the wait for the next seal, kept across batches
	sealN    uint64

	closeOnce sync.Once
	closeErr  error
}

// Stats is a snapshot of the sink's counters.
type Stats struct {
	Acked        uint64 // items acknowledged by the broker on the direct path
	Spooled      uint64 // items written to the spool
	Replayed     uint64 // spooled records acknowledged by the broker
	DeadLettered uint64 // records rejected permanently (live and replayed)
	ReplayDead   uint64 // of DeadLettered, records rejected on replay from the spool
	Retries      uint64 // failed send attempts that were retried
	// MemoryRetried counts records of direct batches that failed after
	// later batches had been spooled, and were retried from memory (ahead
	// of them) instead of spooled.
	MemoryRetried uint64
	SpoolRejected uint64 // items refused by a full spool (drop_newest)
	SpoolDropped  uint64 // spooled records discarded by drop_oldest
	SpoolCorrupt  uint64 // spooled records unreadable (this run: exact; earlier runs: one per damaged stretch)
	SpoolPending  int64  // spooled records not yet acknowledged
	// HandedOff counts this run's records left in the spool when Run
	// returned, settled as delivered to the next run.
	HandedOff uint64
	// LostEarlier counts earlier runs' spooled records lost in this run.
	LostEarlier uint64
	SpoolBytes  int64
	AckP50      time.Duration // take-from-queue to broker ack per batch, direct path,
	AckP99      time.Duration // over the last 65536 batches
}

// New validates cfg and prepares the writer, the spool and the dead-letter
// file. host and runID make the event id header.
func New(cfg Config, host *record.Host, runID string, log zerolog.Logger) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if host == nil || host.ID == "" && host.Hostname == "" {
		return nil, errors.New("kafka sink: neither host id nor hostname is known, so event ids would not be unique")
	}
	hostID := host.ID
	if hostID == "" {
		// No /etc/machine-id (some containers): the hostname still tells
		// hosts apart for keys and event ids.
		hostID = host.Hostname
		log.Warn().Str("hostname", hostID).Msg("kafka sink: host id unknown; using the hostname in keys and event ids")
	}
	if runID == "" {
		return nil, errors.New("kafka sink: empty run id")
	}
	tr, err := cfg.transport()
	if err != nil {
		return nil, err
	}
	tr.DialTimeout = min(cfg.WriteTimeout.Duration, 5*time.Second)
	tr.IdleTimeout = 30 * time.Second
	tr.MetadataTTL = 2 * time.Second // find a new leader quickly
	s := &Sink{
		cfg:       cfg,
		log:       log.With().Str("component", "sink.kafka").Str("topic", cfg.Topic).Logger(),
		idPrefix:  record.EventIDPrefix(host, runID), // the records' event.id too
		idPrefixB: []byte(record.EventIDPrefix(host, runID)),
		hostKey:   []byte(hostID),
		spoolWait: newWindow(cfg.MaxInFlightByte),
	}
	var balancer kafkago.Balancer = &kafkago.Murmur2Balancer{} // same partitions as Java clients
	if cfg.Key == "none" {
		balancer = &kafkago.RoundRobin{}
	}
	// Retries happen in this package, under a deadline, so nothing is
	// retried behind our back after the deadline passed. The producer asks
	// for a missing topic in every metadata request when create_topics is
	// on; a broker with auto.create.topics.enable creates it. Without that
	// a missing topic is an outage: records are spooled and retried until
	// the topic exists.
	if s.prod, err = newProducer(tr, cfg.Brokers, cfg, balancer); err != nil {
		return nil, err
	}
	if cfg.Spool.Dir != "" {
		pol, _ := sinks.ParsePolicy(cfg.WhenFull)
		if s.spool, err = openSpool(cfg.Spool, pol, s.spoolLost); err != nil {
			return nil, err
		}
		s.spool.onOwed = s.parkSpooled
		if st := s.spool.stats(); st.Pending > 0 {
			s.log.Info().Int64("records", st.Pending).Msg("spool holds records from an earlier run; replaying them first")
		}
	}
	if cfg.DeadLetterFile != "" {
		if s.dl, err = openDeadLetters(cfg.DeadLetterFile, cfg.Topic); err != nil {
			if s.spool != nil {
				s.spool.close()
			}
			return nil, err
		}
	}
	return s, nil
}

// Name implements sinks.Sink.
func (s *Sink) Name() string { return "kafka" }

// Reopen reopens the dead-letter file (SIGHUP, after log rotation).
func (s *Sink) Reopen() error {
	if s.dl == nil {
		return nil
	}
	return s.dl.reopen()
}

// Stats returns a snapshot of the counters.
func (s *Sink) Stats() Stats {
	st := Stats{
		Acked: s.acked.Load(), Spooled: s.spooled.Load(), Replayed: s.replayed.Load(),
		DeadLettered: s.deadLettered.Load(), ReplayDead: s.replayDead.Load(), Retries: s.retries.Load(),
		MemoryRetried: s.memRetried.Load(),
		SpoolRejected: s.rejected.Load(), HandedOff: s.handedOff.Load(), LostEarlier: s.lostEarlier.Load(),
	}
	if s.spool != nil {
		sp := s.spool.stats()
		st.SpoolDropped, st.SpoolPending, st.SpoolBytes = sp.Dropped, sp.Pending, sp.Bytes
		st.SpoolCorrupt = s.spoolCorruptLost.Load()
	}
	st.AckP50, st.AckP99 = s.lat.quantiles()
	return st
}

// batch is a group of items taken together, with their messages.
type batch struct {
	items []*sinks.Item
	msgs  []kafkago.Message
	bytes int64
	taken time.Time
	// mark is Sink.routed when a direct batch was dispatched; first is
	// its first record's sequence.
	mark, first uint64
}

// Close releases the writer, the spool and the dead-letter file. Run calls
// it on return; call it directly when Run never ran. It is idempotent.
func (s *Sink) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		s.prod.close()
		if s.spool != nil {
			errs = append(errs, s.spool.close())
		}
		if s.dl != nil {
			errs = append(errs, s.dl.close())
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// Run implements sinks.Sink. On ctx end, items not yet acknowledged are
// written to the spool (when one is configured) and settled; Run then
// returns ctx.Err(). Without a spool, or past a spool that refuses them,
// they are settled as failed, so the loss is counted and announced.
func (s *Sink) Run(ctx context.Context, q sinks.Input) error {
	s.q.Store(&q)
	win := newWindow(s.cfg.MaxInFlightByte)
	var senders sync.WaitGroup
	stopCtx, stopNow := context.WithCancel(ctx)
	defer stopNow()
	s.stopCtx = stopCtx
	replayCtx, stopReplay := context.WithCancel(ctx)
	defer stopReplay()
	replayErr := make(chan error, 2)
	if s.spool != nil {
		go func() { replayErr <- s.replay(replayCtx) }()
		go func() { replayErr <- s.syncSpool(replayCtx) }()
	} else {
		replayErr <- nil
		replayErr <- nil
	}
	s.sealBegin(ctx)
	var err error
	for {
		var b *batch
		b, err = s.gather(ctx, q)
		if b != nil {
			s.dispatch(ctx, q, b, win, &senders)
		}
		if err != nil {
			break
		}
	}
	// Stopping: direct batches retried from memory go to the spool now
	// (behind what was spooled after them), and the replayer no longer
	// holds back for them.
	stopNow()
	senders.Wait()
	s.sealClose(ctx)
	stopReplay()
	rerr := errors.Join(<-replayErr, <-replayErr)
	if s.spool != nil {
		if n := s.spool.takeRunOwed(); n > 0 {
			s.handedOff.Add(uint64(n))
			s.log.Info().Int64("records", n).Msg("records left in the spool for the next run")
			q.Delivered(int(n))
		}
	}
	st := s.Stats()
	s.log.Info().Uint64("acked", st.Acked).Uint64("spooled", st.Spooled).Uint64("replayed", st.Replayed).
		Uint64("dead_lettered", st.DeadLettered).Uint64("retries", st.Retries).Uint64("memory_retried", st.MemoryRetried).
		Uint64("handed_off", st.HandedOff).Uint64("spooled_lz4", s.spooledLz4.Load()).
		Dur("ack_p50", st.AckP50).Dur("ack_p99", st.AckP99).Msg("kafka sink stopped")
	cerr := s.Close()
	switch {
	case errors.Is(err, io.EOF):
		return errors.Join(rerr, cerr)
	default:
		return errors.Join(err, rerr, cerr)
	}
}

// gather takes up to batch_size items, waiting at most batch_timeout after
// the first one for more.
func (s *Sink) gather(ctx context.Context, q sinks.Input) (*batch, error) {
	buf := make([]*sinks.Item, 0, s.cfg.BatchSize)
	items, err := s.next(ctx, q, buf)
	if len(items) == 0 {
		return nil, err
	}
	b := &batch{taken: time.Now()}
	size := int64(0)
	for _, it := range items {
		size += int64(len(it.Line))
	}
	if err == nil && len(items) < cap(buf) && size < s.cfg.BatchBytes {
		tctx, cancel := context.WithTimeout(ctx, s.cfg.BatchTimeout.Duration)
		for len(items) < cap(buf) && size < s.cfg.BatchBytes {
			more, nerr := q.Next(tctx, items[len(items):])
			for _, it := range more {
				size += int64(len(it.Line))
			}
			items = items[:len(items)+len(more)]
			if nerr != nil {
				if !errors.Is(nerr, context.DeadlineExceeded) || ctx.Err() != nil {
					err = nerr
				}
				break
			}
		}
		cancel()
	}
	b.items = items
	s.sealTaken(ctx, items)
	b.msgs = make([]kafkago.Message, len(items))
	// One allocation each for the batch's event ids and headers, not one
	// per record.
	hdrs := make([]kafkago.Header, len(items))
	ids := make([]byte, 0, len(items)*(len(s.idPrefix)+20)) // 20: digits of a uint64
	for i, it := range items {
		n := len(ids)
		ids = record.AppendEventID(ids, s.idPrefix, it.Seq)
		hdrs[i] = kafkago.Header{Key: HeaderEventID, Value: ids[n:len(ids):len(ids)]}
		b.msgs[i] = s.message(it, hdrs[i:i+1:i+1])
		b.bytes += int64(len(b.msgs[i].Value) + len(b.msgs[i].Key))
	}
	if err != nil && ctx.Err() == nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("kafka sink: queue: %w", err)
	}
	return b, err
}

// message makes the item's message; hdr holds its event id header.
func (s *Sink) message(it *sinks.Item, hdr []kafkago.Header) kafkago.Message {
	v := it.Line
	if n := len(v); n > 0 && v[n-1] == '\n' {
		v = v[:n-1]
	}
	var key []byte
	switch s.cfg.Key {
	case "host_id":
		key = s.hostKey
	case "path":
		key = []byte(it.Path)
	}
	return kafkago.Message{Key: key, Value: v, Headers: hdr}
}

func msgSize(m *kafkago.Message) int64 {
	n := len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return int64(n)
}

// dispatch routes a batch: straight to the broker while the spool is empty,
// no failed direct batch is pending and the window has room, else to the
// spool so the queue keeps moving.
//
// Order within a partition: batches written to the spool go in in
// dispatch order (the spool tickets of s.order), and the spool is replayed
// in order. A direct batch is always older than anything unsent in the
// spool (none is started while the spool holds records or batches wait
// to be written to it), and the replayer holds back a spooled batch while
// an older direct batch is unacknowledged (s.unacked). A direct batch that
// fails is spooled when nothing was routed to the spool since its
// dispatch (it and every later direct batch still unacknowledged then get
// spool tickets before any batch routed later), else it is retried from
// memory, ahead of the later batches in the spool.
// Failed direct batches are handled in dispatch order (s.direct). The
// exceptions, which at-least-once delivery allows: a direct batch that
// fails while a later one succeeds (a leader change between two requests)
// is re-sent after it; and a stop while direct batches are retried from
// memory spools them behind the batches spooled after them.
func (s *Sink) dispatch(ctx context.Context, q sinks.Input, b *batch, win *window, senders *sync.WaitGroup) {
	b = s.rejectOversize(q, b)
	if b == nil {
		return
	}
	if s.spool == nil {
		if err := win.acquire(ctx, b.bytes); err != nil {
			s.log.Error().Int("records", len(b.items)).Msg("aborted with unacknowledged records and no spool; counted as lost")
			q.Failed(len(b.items), record.ReasonSinkError)
			return
		}
		s.goDirect(ctx, q, b, win, senders)
		return
	}
	s.routeMu.Lock()
	// Direct only when nothing is in the spool or on its way there (a
	// batch still waiting for its turn to spool would otherwise reach the
	// partition after this one), and no failed direct batch is on its way
	// to the spool or retried from memory (this one could overtake it).
	if ctx.Err() == nil && s.failing.Load() == 0 && s.spoolWait.idle() && s.spool.empty() && win.tryAcquire(b.bytes) {
		s.routeMu.Unlock()
		s.goDirect(ctx, q, b, win, senders)
		return
	}
	s.routed++
	t := s.order.ticket()
	s.routeMu.Unlock()
	// The batch is written to the spool off the gather loop, after every
	// earlier batch is done with the spool, in memory bounded by the
	// window's size: a write or an fsync that stalls on a busy disk does
	// not stop the sink from taking the next batches off its queue, which
	// the capture waits on when it is full. It does not wait for earlier
	// direct batches' acknowledgements (the replayer does).
	if err := s.spoolWait.acquire(ctx, b.bytes); err != nil {
		s.order.done(t)
		s.log.Error().Int("records", len(b.items)).Msg("aborted with records neither acknowledged nor spooled; counted as lost")
		q.Failed(len(b.items), record.ReasonSinkError)
		return
	}
	senders.Add(1)
	go func() {
		defer senders.Done()
		defer s.spoolWait.release(b.bytes)
		// Encoded before its turn (one batch at a time, see
		// encodeForSpool), written in turn.
		sets := s.encodeForSpool(b)
		s.order.wait(ctx, t)
		s.spoolInTurn(ctx, q, b, sets, win, senders, t)
	}()
}

// goDirect starts sending b, which holds its bytes of win, from memory:
// it takes b's turns (s.direct, s.started) and registers it as
// unacknowledged, so the replayer holds back later spooled records.
func (s *Sink) goDirect(ctx context.Context, q sinks.Input, b *batch, win *window, senders *sync.WaitGroup) {
	s.routeMu.Lock()
	b.mark, b.first = s.routed, b.items[0].Seq
	t := s.direct.ticket()
	s.unacked.add(t, b.first) // before a failure's reserveFrom can look
	s.routeMu.Unlock()
	g := s.started.ticket()
	senders.Add(1)
	go func() {
		defer senders.Done()
		defer win.release(b.bytes)
		s.sendDirect(ctx, q, b, t, g)
	}()
}

// spoolInTurn spools b, whose turn it is, and passes the turn on. When the
// spool cannot take it, b is sent from memory, bounded by the window.
func (s *Sink) spoolInTurn(ctx context.Context, q sinks.Input, b *batch, sets []spoolSet, win *window, senders *sync.WaitGroup, t uint64) {
	ok := s.toSpool(ctx, q, b, sets)
	s.order.done(t)
	if ok {
		return
	}
	if err := win.acquire(ctx, b.bytes); err != nil {
		s.log.Error().Int("records", len(b.items)).Msg("aborted with records neither acknowledged nor spooled; counted as lost")
		q.Failed(len(b.items), record.ReasonSinkError)
		return
	}
	s.goDirect(ctx, q, b, win, senders)
}

// rejectOversize dead-letters messages over max_message_bytes, which no
// retry can deliver.
func (s *Sink) rejectOversize(q sinks.Input, b *batch) *batch {
	keep := 0
	for i := range b.msgs {
		if msgSize(&b.msgs[i]) > s.cfg.MaxMessageBytes {
			s.deadLetter(&b.msgs[i], fmt.Errorf("message of %d bytes exceeds max_message_bytes %d: %w", msgSize(&b.msgs[i]), s.cfg.MaxMessageBytes, kafkago.MessageSizeTooLarge))
			q.Failed(1, record.ReasonDeadLetter)
			continue
		}
		b.msgs[keep], b.items[keep] = b.msgs[i], b.items[i]
		keep++
	}
	if keep == 0 {
		return nil
	}
	b.msgs, b.items = b.msgs[:keep], b.items[:keep]
	return b
}

// encodeForSpool encodes b's messages as the record sets of the requests
// that will carry them (compressed), so the spool stores what the
// replayer sends: about 50 times fewer bytes written and read than the
// records, and no second encoding on replay. That needs one partition for
// a set: key = "host_id" (one key) and "none" (any partition) qualify;
// with key = "path" (nil is returned) the records are spooled one by one
// and replayed to their own partitions.
func (s *Sink) encodeForSpool(b *batch) []spoolSet {
	if s.cfg.Key == "path" {
		return nil
	}
	// One batch at a time: the batches waiting for their turn to spool
	// (up to max_in_flight_bytes of them) would otherwise all compress at
	// once, and take the CPU from the capture while they do.
	s.spoolEnc.Lock()
	bp := s.prod.scratch()
	// Behind its queue (see behind), the sink spools what would be zstd
	// as lz4 sets: on fanaudit's records encoding a batch took 0.54 µs a
	// record against 1.0 with zstd (for 2.6 times the bytes), and this
	// one encoder is what fell behind in a burst and pushed back on the
	// capture. The replayer sends the set as it is; a record batch names
	// its codec, and consumers decompress each batch by its own.
	comp := s.prod.comp
	if comp == compress.Zstd && s.behind() {
		comp = compress.Lz4
		s.spooledLz4.Add(uint64(len(b.msgs)))
	}
	buf, sets, err := s.prod.encodeSets((*bp)[:0], b.msgs, time.Now(), comp)
	// The sets are copied out of the pool's buffer, which the
	// uncompressed records made as large as the batch, so that a batch
	// waiting for its turn does not hold a second copy of its records.
	if err == nil {
		n := 0
		for i := range sets {
			n += len(sets[i].Set)
		}
		own := make([]byte, 0, n)
		for i := range sets {
			at := len(own)
			own = append(own, sets[i].Set...)
			sets[i].Set = own[at:len(own):len(own)]
		}
	}
	*bp = buf
	s.prod.bufs.Put(bp)
	s.spoolEnc.Unlock()
	if err != nil {
		if t, k, ok := s.conds.note("spool encode", len(b.msgs)); ok {
			s.log.Warn().Err(err).Uint64("times", t).Uint64("records", k).Msg("cannot encode records for the spool; spooling them one by one")
		}
		return nil
	}
	return sets
}

// toSpool writes the batch to the spool (as sets, when encoded), where its
// items stay in flight until the replayer settles them, or settles them
// as lost when a full spool refuses them. It returns false when the spool
// could not take the batch and the caller still owns it.
func (s *Sink) toSpool(ctx context.Context, q sinks.Input, b *batch, sets []spoolSet) bool {
	n := len(b.msgs)
	var err error
	if sets != nil {
		err = s.spool.appendSets(ctx, sets)
	} else {
		err = s.spool.appendMessages(ctx, b.msgs)
	}
	switch {
	case err == nil:
		s.spooled.Add(uint64(n))
		return true
	case errors.Is(err, errSpoolFull):
		s.rejected.Add(uint64(n))
		s.spoolFullLost.Add(uint64(n))
		// drop_newest, or drop_oldest with nothing left to drop but the
		// segment being written.
		if t, k, ok := s.conds.note("spool full", n); ok {
			s.log.Warn().Str("when_full", s.cfg.WhenFull).Uint64("times", t).Uint64("records", k).Msg("spool full: new records dropped, announced as events_lost spool_full")
		}
		q.Failed(n, record.ReasonSpoolFull)
		return true
	default:
		if t, k, ok := s.conds.note("spool write", n); ok {
			s.log.Error().Err(err).Uint64("times", t).Uint64("records", k).Msg("cannot spool; keeping records in memory")
		}
		return false
	}
}

// sendDirect sends b until every message is acknowledged, dead-lettered,
// spooled or, at an abort the spool could not absorb, counted as lost.
// Its first request takes its partitions in ticket g's turn of s.started
// (the order the direct batches were dispatched in); a failure is
// handled in ticket t's turn of s.direct, after every earlier direct
// batch is acknowledged, spooled or lost. With a spool, the failed
// records are spooled when no later batch was routed to the spool since
// b's dispatch, else retried from memory (they are older than what the
// spool holds unsent, and the replayer waits for them) until
// acknowledged, or spooled at a stop. Without a spool it retries forever
// with jittered backoff.
func (s *Sink) sendDirect(ctx context.Context, q sinks.Input, b *batch, t, g uint64) {
	st := &startTurn{ctx: ctx, o: &s.started, t: g}
	defer st.taken() // a request that never got to the producer
	defer func() {
		// A spool ticket reserved for b and not used is passed on.
		if ot, ok := s.unacked.remove(t); ok {
			s.order.done(ot)
		}
	}()
	defer s.direct.done(t)
	first := b.first
	failed, memory := false, false
	defer func() {
		if failed {
			s.failing.Add(-1)
		}
	}()
	for attempt := 0; ; attempt++ {
		res := s.send(ctx, b.msgs, st)
		var retry batch
		retry.taken, retry.mark, retry.first = b.taken, b.mark, b.first
		acked := b.items[:0:0]
		var firstErr error
		for i, err := range res {
			switch {
			case err == nil:
				acked = append(acked, b.items[i])
			case deadLetterable(err):
				s.deadLetter(&b.msgs[i], err)
				q.Failed(1, record.ReasonDeadLetter)
			default:
				if firstErr == nil {
					firstErr = err
				}
				retry.items = append(retry.items, b.items[i])
				retry.msgs = append(retry.msgs, b.msgs[i])
				retry.bytes += int64(len(b.msgs[i].Value) + len(b.msgs[i].Key))
			}
		}
		if len(acked) > 0 {
			s.acked.Add(uint64(len(acked)))
			s.lat.add(time.Since(b.taken))
			q.Delivered(len(acked))
			if s.onAck != nil {
				s.onAck(acked)
			}
		}
		if len(retry.items) == 0 {
			return
		}
		s.retries.Add(uint64(len(retry.items)))
		b = &retry
		if s.spool == nil {
			s.logRetry(firstErr, len(b.items), attempt+1, "send failed; retrying")
			// Later batches' failures must not wait for this one.
			s.direct.done(t)
			if !sleep(ctx, backoff(attempt)) {
				s.log.Error().Int("records", len(b.items)).Msg("aborted while retrying; counted as lost")
				q.Failed(len(b.items), record.ReasonSinkError)
				return
			}
			continue
		}
		if !memory {
			s.direct.wait(ctx, t)
			// Decided under routeMu, with failing raised, so that no batch
			// goes direct from here until this one is spooled or
			// acknowledged, and a spool ticket taken here comes before
			// those of the batches routed to the spool after it.
			s.routeMu.Lock()
			if !failed {
				failed = true
				s.failing.Add(1)
			}
			ot, spoolIt := s.unacked.reservation(t)
			if !spoolIt && (s.routed == b.mark || s.stopCtx.Err() != nil) {
				// Nothing was routed to the spool since b's dispatch: b
				// and every later direct batch still unacknowledged (they
				// are likely failing too) get spool tickets ahead of
				// whatever is routed there from now on.
				s.unacked.reserveFrom(t, s.order.ticket)
				ot, spoolIt = s.unacked.reservation(t)
			}
			s.routeMu.Unlock()
			if spoolIt {
				s.logRetry(firstErr, len(b.items), attempt+1, "send failed; spooling and retrying from the spool")
				if s.spoolTicketed(ctx, q, b, ot) {
					return
				}
			} else {
				s.logRetry(firstErr, len(b.items), attempt+1, "send failed; later records are spooled, retrying these from memory ahead of them")
				s.memRetried.Add(uint64(len(b.items)))
			}
			memory = true
		} else {
			s.logRetry(firstErr, len(b.items), attempt+1, "send failed; retrying from memory")
		}
		if !s.waitMemoryRetry(ctx, backoff(attempt), firstErr, first) {
			s.spoolAtStop(ctx, q, b)
			return
		}
	}
}

// spoolTicketed spools b in spool ticket ot's turn and passes the turn
// on; false when the spool could not take it (the caller still owns b).
func (s *Sink) spoolTicketed(ctx context.Context, q sinks.Input, b *batch, ot uint64) bool {
	sets := s.encodeForSpool(b)
	s.order.wait(ctx, ot)
	ok := s.toSpool(ctx, q, b, sets)
	s.order.done(ot)
	return ok
}

// spoolAtStop spools a batch retried from memory when the sink stops,
// behind everything spooled so far; what the spool cannot take is counted
// as lost and announced.
func (s *Sink) spoolAtStop(ctx context.Context, q sinks.Input, b *batch) {
	if s.spool != nil {
		s.routeMu.Lock()
		ot := s.order.ticket()
		s.routeMu.Unlock()
		if s.spoolTicketed(ctx, q, b, ot) {
			return
		}
	}
	s.log.Error().Int("records", len(b.items)).Msg("stopped while retrying from memory and the spool did not take the records; counted as lost")
	q.Failed(len(b.items), record.ReasonSinkError)
}

// waitMemoryRetry waits out a backoff before a direct batch whose first
// record is first is retried from memory, then until the spool holds
// nothing unsent that is older (records a direct batch spooled before
// later batches were routed there): the replayer has moved on to newer
// records, or the spool is empty. False when the sink stops first.
func (s *Sink) waitMemoryRetry(ctx context.Context, d time.Duration, cause error, first uint64) bool {
	if !s.waitRetry(s.stopCtx, d, cause) {
		return false
	}
	for {
		ch := s.replayMoved.wait()
		if s.replayNext.Load() > first || s.spool.empty() {
			return ctx.Err() == nil && s.stopCtx.Err() == nil
		}
		select {
		case <-ch:
		case <-s.stopCtx.Done():
			return false
		}
	}
}

// holdForDirect holds the replayer back before it sends spooled records
// starting with event id id while an older direct batch is unacknowledged
// (it may be retried from memory, and must arrive first), until the sink
// stops. Earlier runs' records are older than any direct batch.
func (s *Sink) holdForDirect(ctx context.Context, id []byte) {
	seq, ok := s.seqOfID(id)
	if !ok {
		return
	}
	if seq > s.replayNext.Load() {
		s.replayNext.Store(seq)
		s.replayMoved.broadcast()
	}
	for {
		ch := s.unacked.changed.wait()
		if !s.unacked.olderThan(seq) {
			return
		}
		select {
		case <-ch:
		case <-s.stopCtx.Done():
			return
		case <-ctx.Done():
			return
		}
	}
}

// seqOfID is the sequence of an event id of this run.
func (s *Sink) seqOfID(id []byte) (uint64, bool) {
	if !bytes.HasPrefix(id, s.idPrefixB) {
		return 0, false
	}
	var n uint64
	for _, c := range id[len(s.idPrefixB):] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// directSet holds every direct batch not yet acknowledged, spooled or
// lost, by its direct ticket: its first sequence, and the spool ticket
// reserved for it once an earlier (or its own) failure decided to spool.
type directSet struct {
	mu      sync.Mutex
	m       map[uint64]*directEntry
	changed signal
}

type directEntry struct {
	first, ot uint64
	reserved  bool
}

func (d *directSet) add(t, seq uint64) {
	d.mu.Lock()
	if d.m == nil {
		d.m = map[uint64]*directEntry{}
	}
	d.m[t] = &directEntry{first: seq}
	d.mu.Unlock()
}

// remove drops t and returns the spool ticket reserved for it, if any.
func (d *directSet) remove(t uint64) (ot uint64, reserved bool) {
	d.mu.Lock()
	if e := d.m[t]; e != nil {
		ot, reserved = e.ot, e.reserved
		delete(d.m, t)
	}
	d.mu.Unlock()
	d.changed.broadcast()
	return ot, reserved
}

func (d *directSet) reservation(t uint64) (ot uint64, reserved bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e := d.m[t]; e != nil {
		return e.ot, e.reserved
	}
	return 0, false
}

// reserveFrom gives t and every later batch held a spool ticket from
// ticket, in direct ticket order (call it under Sink.routeMu).
func (d *directSet) reserveFrom(t uint64, ticket func() uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var ts []uint64
	for k, e := range d.m {
		if k >= t && !e.reserved {
			ts = append(ts, k)
		}
	}
	slices.Sort(ts)
	for _, k := range ts {
		e := d.m[k]
		e.ot, e.reserved = ticket(), true
	}
}

// olderThan reports whether a batch starting before seq is held.
func (d *directSet) olderThan(seq uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range d.m {
		if e.first < seq {
			return true
		}
	}
	return false
}

// signal wakes every waiter when something changed: take the channel
// with wait before checking the condition, then wait on it.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func (g *signal) wait() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ch == nil {
		g.ch = make(chan struct{})
	}
	return g.ch
}

func (g *signal) broadcast() {
	g.mu.Lock()
	if g.ch != nil {
		close(g.ch)
		g.ch = nil
	}
	g.mu.Unlock()
}

// startTurn is a direct batch's turn to take its partitions (sendTurn).
type startTurn struct {
	ctx context.Context
	o   *orderer
	t   uint64
}

func (s *startTurn) wait()  { s.o.wait(s.ctx, s.t) }
func (s *startTurn) taken() { s.o.done(s.t) }

// orderer hands out tickets in dispatch order and lets a batch act on
// the spool only when every earlier batch is done with it.
type orderer struct {
	mu      sync.Mutex
	next    uint64          // next ticket
	turn    uint64          // lowest ticket not done
	doneSet map[uint64]bool // done tickets above turn
	moved   chan struct{}   // closed and replaced when turn advances
}

func (o *orderer) ticket() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.moved == nil {
		o.moved = make(chan struct{})
		o.doneSet = map[uint64]bool{}
	}
	t := o.next
	o.next++
	return t
}

// wait blocks until it is t's turn, or ctx ends (on abort order no longer
// matters: everything left is spooled or counted as lost).
func (o *orderer) wait(ctx context.Context, t uint64) {
	for {
		o.mu.Lock()
		if o.turn >= t {
			o.mu.Unlock()
			return
		}
		ch := o.moved
		o.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// done marks t done; the turn moves past every consecutive done ticket.
func (o *orderer) done(t uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if t < o.turn {
		return
	}
	o.doneSet[t] = true
	moved := false
	for o.doneSet[o.turn] {
		delete(o.doneSet, o.turn)
		o.turn++
		moved = true
	}
	if moved {
		close(o.moved)
		o.moved = make(chan struct{})
	}
}

// behind reports whether the sink lags its queue while the spool has
// room (encodeForSpool then spools lz4 sets): two batches or more wait in
// the queue, or more than a quarter of max_in_flight_bytes waits to be
// spooled. From half full on, the spool's room counts for more than the
// encoder's speed, and sets are zstd again.
func (s *Sink) behind() bool {
	q := s.q.Load()
	lag := q != nil && (*q).Len() >= 2*s.cfg.BatchSize || s.spoolWait.usedOver(s.cfg.MaxInFlightByte/4)
	// The spool's fill last: its lock is held across the spool's writes
	// and fsyncs, and the encoder would wait for them on every batch.
	return lag && (s.spool == nil || s.spool.stats().Bytes < s.cfg.Spool.MaxBytes/2)
}

// replayRequests is how many requests (of batch_size / batch_bytes) the
// replayer reads from the spool and sends at a time.
const replayRequests = 4

// replay sends spooled records in order, one request at a time, retrying
// each forever until it is acknowledged or the sink stops. A stored
// record set goes to the broker as it is; records spooled one by one
// (seal records, key = "path", spools of earlier versions) are encoded
// and sent in runs.
func (s *Sink) replay(ctx context.Context) error {
	attempt := 0
	var rmsgs []kafkago.Message
	var rhdrs []kafkago.Header
	for {
		// replayRequests requests' worth at a time: the producer sends
		// them one after another, encoding each while the one before it
		// is in flight.
		recs, pos, err := s.spool.next(replayRequests*s.cfg.BatchSize, replayRequests*s.cfg.BatchBytes)
		if err != nil {
			s.log.Error().Err(err).Msg("spool read failed; retrying")
			s.spool.rewind()
			if !sleep(ctx, backoff(attempt)) {
				return nil
			}
			attempt++
			continue
		}
		if len(recs) == 0 {
			if err := s.spool.commit(nil, pos); err != nil {
				s.log.Error().Err(err).Msg("spool cursor update failed")
			}
			s.replayMoved.broadcast()
			select {
			case <-s.spool.notify:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		for i := 0; i < len(recs); {
			ok := false
			unit := i
			if recs[i].Set != nil {
				s.holdForDirect(ctx, recs[i].ID)
				ok = s.replaySet(ctx, &recs[i], &attempt)
				i++
			} else {
				j := i
				for j < len(recs) && recs[j].Set == nil {
					j++
				}
				for k := i; k < j; k++ {
					if bytes.HasPrefix(recs[k].ID, s.idPrefixB) {
						s.holdForDirect(ctx, recs[k].ID)
						break
					}
				}
				// The messages point into the spool's read buffer, which
				// stays put until the next spool.next; the producer copies
				// them into the request, and each attempt ends
				// (acknowledged or failed) before the next one starts, so
				// the buffers are reused safely.
				msgs := slices.Grow(rmsgs[:0], j-i)[:j-i]
				hdrs := slices.Grow(rhdrs[:0], j-i)[:j-i]
				for k := range msgs {
					r := &recs[i+k]
					hdrs[k] = kafkago.Header{Key: HeaderEventID, Value: r.ID}
					msgs[k] = kafkago.Message{Key: r.Key, Value: r.Value, Headers: hdrs[k : k+1 : k+1]}
				}
				rmsgs, rhdrs = msgs, hdrs
				ok = s.replayMsgs(ctx, msgs, &attempt)
				i = j
			}
			if !ok {
				s.spool.rewind()
				return nil
			}
			// Committed as soon as it is settled: a stop while a later
			// request of this read is retried must not read it again (its
			// dead letters would be announced twice, its delivery after a
			// drop_oldest of its segment counted as lost).
			if err := s.spool.commit(recs[unit:i], recs[i-1].end); err != nil {
				s.log.Error().Err(err).Msg("spool cursor update failed")
			}
			s.replayMoved.broadcast()
		}
		if recs[len(recs)-1].end != pos {
			// Damaged frames after the last record read.
			if err := s.spool.commit(nil, pos); err != nil {
				s.log.Error().Err(err).Msg("spool cursor update failed")
			}
		}
	}
}

// replayMsgs sends spooled messages until each is acknowledged or
// dead-lettered and settles them; false when the sink stopped first. They
// are settled together at the end: a stop in between leaves them all to
// be read again (by the next run), which settles them then, dead letters
// included, so nothing is settled twice.
func (s *Sink) replayMsgs(ctx context.Context, msgs []kafkago.Message, attempt *int) bool {
	var set replaySettle
	for len(msgs) > 0 {
		res := s.send(ctx, msgs, nil)
		var retry []kafkago.Message
		var firstErr error
		for i, err := range res {
			switch {
			case err == nil:
				s.replayed.Add(1)
				set.add(s, &msgs[i], false)
			case deadLetterable(err):
				s.deadLetter(&msgs[i], err)
				s.replayDead.Add(1)
				set.add(s, &msgs[i], true)
			default:
				if firstErr == nil {
					firstErr = err
				}
				retry = append(retry, msgs[i])
			}
		}
		if len(retry) == 0 {
			s.settleReplay(&set)
			s.replayResumed(attempt)
			return true
		}
		s.retries.Add(uint64(len(retry)))
		if ctx.Err() != nil {
			return false
		}
		d := backoff(*attempt)
		s.logRetry(firstErr, len(retry), *attempt+1, "replay from spool failed; retrying with backoff")
		*attempt++
		if !s.waitRetry(ctx, d, firstErr) {
			return false
		}
		msgs = retry
	}
	return true
}

// replaySet sends a stored record set as it is until the broker
// acknowledges it, and settles its records. When the broker refuses it
// for its records (too large, invalid), the set is decoded and its
// records go the way of records spooled one by one (replayMsgs), so that
// only the offending ones are dead-lettered. False when the sink stopped.
func (s *Sink) replaySet(ctx context.Context, r *spooled, attempt *int) bool {
	for {
		wctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout.Duration)
		res := s.prod.produceSet(wctx, r.Key, r.Set)
		cancel()
		if res.err == nil {
			s.replayed.Add(uint64(r.N))
			var set replaySettle
			set.addSet(s, r.ID, r.N)
			s.settleReplay(&set)
			s.replayResumed(attempt)
			return true
		}
		if deadLetterable(res.err) || len(res.recs) > 0 {
			msgs, err := decodeRecordSet(r.Set)
			if err == nil && len(msgs) == r.N {
				return s.replayMsgs(ctx, msgs, attempt)
			}
			// Its bytes passed their CRC, so this is not expected: the
			// records cannot be told apart, and are counted as lost.
			s.log.Error().Err(err).Int("records", r.N).Int("decoded", len(msgs)).Msg("a spooled record set the broker refused cannot be decoded; announced as events_lost spool_corrupt")
			s.spool.lose(record.ReasonSpoolCorrupt, s.runOfSpooled(r.ID), int64(r.N))
			return true
		}
		err := fmt.Errorf("produce to %s: %w", s.cfg.Topic, res.err)
		s.retries.Add(uint64(r.N))
		if ctx.Err() != nil {
			return false
		}
		d := backoff(*attempt)
		s.logRetry(err, r.N, *attempt+1, "replay from spool failed; retrying with backoff")
		*attempt++
		if !s.waitRetry(ctx, d, err) {
			return false
		}
	}
}

func (s *Sink) replayResumed(attempt *int) {
	if *attempt > 0 {
		s.log.Info().Int("attempts", *attempt).Msg("replay from the spool resumed")
	}
	*attempt = 0
}

// runOfSpooled is "" for an event id of this run, else the id's run.
func (s *Sink) runOfSpooled(id []byte) string {
	if bytes.HasPrefix(id, s.idPrefixB) {
		return ""
	}
	return runOfID(string(id))
}

// replaySettle collects how a replayed batch was settled: this run's
// records acknowledged and dead-lettered, and earlier runs' dead letters.
type replaySettle struct {
	acked, dead int64
	earlierDead map[string]uint64
}

// addSet adds an acknowledged set of n records whose first id is id (a
// set holds one run's queue items, never seal records).
func (r *replaySettle) addSet(s *Sink, id []byte, n int) {
	if bytes.HasPrefix(id, s.idPrefixB) {
		r.acked += int64(n)
	}
}

func (r *replaySettle) add(s *Sink, m *kafkago.Message, dead bool) {
	id := m.Headers[0].Value
	if bytes.HasPrefix(id, sealIDPrefixB) {
		// A seal record is no queue item: nothing to settle, and its id
		// would read as an earlier run's (runOfID) when dead-lettered.
		return
	}
	if bytes.HasPrefix(id, s.idPrefixB) {
		if dead {
			r.dead++
		} else {
			r.acked++
		}
		return
	}
	if dead {
		if r.earlierDead == nil {
			r.earlierDead = map[string]uint64{}
		}
		r.earlierDead[runOfID(string(id))]++
	}
}

// settleReplay settles a replayed batch on the queue: this run's records
// were left in flight when spooled; earlier runs' losses are reported
// apart, naming their run.
func (s *Sink) settleReplay(r *replaySettle) {
	qp := s.q.Load()
	if qp == nil {
		return
	}
	q := *qp
	if n := s.spool.settleRun(r.acked); n > 0 {
		q.Delivered(int(n))
	}
	if n := s.spool.settleRun(r.dead); n > 0 {
		q.Failed(int(n), record.ReasonDeadLetter)
	}
	for run, n := range r.earlierDead {
		s.lostEarlier.Add(n)
		q.LostEarlier(n, record.ReasonDeadLetter, run)
	}
	if r.dead > 0 || len(r.earlierDead) > 0 {
		s.spool.announced()
	}
}

// parkSpooled keeps the queue's parked count equal to this run's records
// in the spool (see Queue.Park): the spool calls it, under its lock, before
// the records are settled.
func (s *Sink) parkSpooled(delta int64) {
	qp := s.q.Load()
	if qp == nil {
		return
	}
	if delta > 0 {
		(*qp).Park(int(delta))
	} else {
		(*qp).Unpark(int(-delta))
	}
}

// spoolLost is the spool's loss callback (see spoolLoss); it runs under the
// spool lock and only takes the queue's.
func (s *Sink) spoolLost(reason, run string, n int64) {
	switch reason {
	case record.ReasonSpoolCorrupt:
		s.spoolCorruptLost.Add(uint64(n))
	default:
		s.spoolFullLost.Add(uint64(n))
	}
	if t, k, ok := s.conds.note("spool loss "+reason, int(n)); ok {
		s.log.Warn().Str("reason", reason).Uint64("times", t).Uint64("records", k).
			Msg("spooled records lost; announced as events_lost")
	}
	qp := s.q.Load()
	if qp == nil {
		return
	}
	q := *qp
	if run == "" {
		q.Failed(int(n), reason)
		return
	}
	s.lostEarlier.Add(uint64(n))
	q.LostEarlier(uint64(n), reason, run)
}

// syncSpool applies spool.fsync = "interval" to records appended just
// before the spool went quiet.
func (s *Sink) syncSpool(ctx context.Context) error {
	if s.cfg.Spool.Fsync != sinks.FsyncInterval {
		return nil
	}
	t := time.NewTicker(s.cfg.Spool.FsyncInterval.Duration)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.spool.syncDue(); err != nil {
				s.log.Error().Err(err).Msg("spool fsync failed")
			}
		}
	}
}

// send writes msgs under write_timeout and returns one error per message.
// A batch the broker finds too large is bisected, so only the offending
// messages end up rejected, in O(log n) extra requests.
// turn, when not nil, orders the first request after those of earlier
// direct batches (sendTurn).
func (s *Sink) send(ctx context.Context, msgs []kafkago.Message, turn sendTurn) []error {
	res := s.sendOnce(ctx, msgs, turn)
	if len(msgs) < 2 {
		return res
	}
	var idx []int
	for i, err := range res {
		if tooLarge(err) {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return res
	}
	sub := make([]kafkago.Message, len(idx))
	for j, i := range idx {
		sub[j] = msgs[i]
	}
	var subRes []error
	if len(sub) == len(msgs) {
		h := len(sub) / 2
		subRes = append(s.send(ctx, sub[:h], nil), s.send(ctx, sub[h:], nil)...)
	} else {
		subRes = s.send(ctx, sub, nil)
	}
	for j, i := range idx {
		res[i] = subRes[j]
	}
	return res
}

func tooLarge(err error) bool {
	return errors.Is(err, kafkago.MessageSizeTooLarge) || errors.Is(err, kafkago.RecordListTooLarge)
}

func (s *Sink) sendOnce(ctx context.Context, msgs []kafkago.Message, turn sendTurn) []error {
	res := make([]error, len(msgs))
	if err := ctx.Err(); err != nil {
		for i := range res {
			res[i] = err
		}
		return res
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout.Duration)
	s.prod.produce(wctx, msgs, res, turn)
	cancel()
	for i, e := range res {
		if e != nil {
			res[i] = fmt.Errorf("produce to %s: %w", s.cfg.Topic, e)
		}
	}
	return res
}

// logRetry logs a failed attempt: one line per condition per minute, with
// the number of failed attempts and records since the previous line.
// Authentication and authorization failures and a missing topic are errors
// an operator must fix, so they are logged as such; the records are kept
// either way.
func (s *Sink) logRetry(err error, records, attempt int, msg string) {
	cond, operator := condition(err, s.cfg.CreateTopics)
	times, recs, ok := s.conds.note(cond, records)
	if !ok {
		return
	}
	ev := s.log.Warn()
	if operator != "" {
		ev = s.log.Error()
		msg += " (" + operator + "; records are kept)"
	}
	ev.Err(err).Str("condition", cond).Uint64("failures", times).Uint64("records", recs).
		Int("attempt", attempt).Msg(msg)
}

// condition names the outage an error belongs to, for rate-limited logs,
// and says what an operator must fix when it will not pass by itself.
// created says the sink asks the broker to create a missing topic: then
// a new topic is unknown for a moment while the broker makes it, and the
// line must not say the broker refused.
func condition(err error, created bool) (cond, operator string) {
	var ke kafkago.Error
	if errors.As(err, &ke) {
		switch ke {
		case kafkago.SASLAuthenticationFailed, kafkago.IllegalSASLState, kafkago.UnsupportedSASLMechanism:
			return ke.Title(), "authentication failed: check the sasl settings and password"
		case kafkago.TopicAuthorizationFailed, kafkago.ClusterAuthorizationFailed:
			return ke.Title(), "not authorized: grant the producer write access to the topic"
		case kafkago.UnknownTopicOrPartition:
			if created {
				return ke.Title(), "the topic does not exist yet; the sink asked the broker to create it: if this line comes again, the broker does not create topics: create it or enable auto.create.topics.enable"
			}
			return ke.Title(), "the topic does not exist and create_topics is off: create it"
		case kafkago.InvalidTopic, kafkago.InvalidRequiredAcks, kafkago.UnsupportedCompressionType:
			return ke.Title(), "the broker refuses this configuration"
		}
		return ke.Title(), ""
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "write timeout", ""
	case connectionError(err):
		return "broker unreachable", ""
	}
	return "other", ""
}

// deadLetterable reports errors about one record that no retry can fix:
// the broker will never take that record (too large, invalid, corrupt).
// Everything about the cluster, the topic or the client (unknown topic,
// leader changes, not enough replicas, authorization, authentication,
// unreachable brokers, configuration the broker refuses) is an outage:
// the records are kept, spooled and retried.
func deadLetterable(err error) bool {
	var ke kafkago.Error
	if errors.As(err, &ke) {
		switch ke {
		case kafkago.MessageSizeTooLarge, kafkago.RecordListTooLarge,
			kafkago.InvalidRecord, kafkago.InvalidMessage, kafkago.InvalidTimestamp: // InvalidMessage: CORRUPT_MESSAGE, code 2
			return true
		}
		return false
	}
	var tl kafkago.MessageTooLargeError
	return errors.As(err, &tl)
}

// condLogEvery is how often one condition is logged.
const condLogEvery = time.Minute

// condLog rate-limits log lines per condition: the first occurrence is
// logged at once, later ones at most once per condLogEvery with the counts
// accumulated since the previous line.
type condLog struct {
	mu    sync.Mutex
	conds map[string]*condCount
}

type condCount struct {
	last           time.Time
	times, records uint64
}

// note counts one occurrence of cond affecting records records and says
// whether to log it now, with the totals since the last line.
func (c *condLog) note(cond string, records int) (times, recs uint64, log bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conds == nil {
		c.conds = map[string]*condCount{}
	}
	cc := c.conds[cond]
	if cc == nil {
		cc = &condCount{}
		c.conds[cond] = cc
	}
	cc.times++
	cc.records += uint64(max(records, 0))
	now := time.Now()
	if !cc.last.IsZero() && now.Sub(cc.last) < condLogEvery {
		return 0, 0, false
	}
	times, recs = cc.times, cc.records
	cc.last, cc.times, cc.records = now, 0, 0
	return times, recs, true
}

func (s *Sink) deadLetter(m *kafkago.Message, cause error) {
	s.deadLettered.Add(1)
	id := ""
	if len(m.Headers) > 0 {
		id = string(m.Headers[0].Value)
	}
	var dlErr error
	if s.dl != nil {
		dlErr = s.dl.write(id, m.Key, m.Value, cause)
	}
	times, recs, ok := s.conds.note("dead letter", 1)
	if !ok {
		return
	}
	ev := s.log.Error().Err(cause).Str("event_id", id).Uint64("times", times).Uint64("records", recs)
	switch {
	case s.dl == nil:
		ev.Msg("record rejected permanently, announced as events_lost dead_letter; no dead_letter_file configured")
	case dlErr != nil:
		ev.AnErr("dead_letter_error", dlErr).Msg("record rejected permanently, announced as events_lost dead_letter; the dead-letter write failed")
	default:
		ev.Msg("record rejected permanently, announced as events_lost dead_letter; written to dead_letter_file")
	}
}

// backoff is exponential from 100 ms, capped at 30 s, with full jitter in
// its upper half so a fleet of agents does not reconnect in lockstep.
func backoff(attempt int) time.Duration {
	d := backoffMax
	if attempt < 20 {
		d = min(backoffMin<<attempt, backoffMax)
	}
	return d/2 + rand.N(d/2+1)
}

// waitRetry waits out a backoff. When the broker was unreachable at the
// TCP level it probes the brokers' ports once a second and ends the wait
// early when one accepts, so recovery after a long outage does not wait
// for a 30 s backoff; protocol errors (e.g. authentication) wait it out.
func (s *Sink) waitRetry(ctx context.Context, d time.Duration, cause error) bool {
	if !connectionError(cause) {
		return sleep(ctx, d)
	}
	until := time.NewTimer(d)
	defer until.Stop()
	probe := time.NewTicker(time.Second)
	defer probe.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-until.C:
			return true
		case <-probe.C:
			if s.reachable(ctx) {
				return true
			}
		}
	}
}

func connectionError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

func (s *Sink) reachable(ctx context.Context) bool {
	d := net.Dialer{Timeout: 500 * time.Millisecond}
	for _, b := range s.cfg.Brokers {
		c, err := d.DialContext(ctx, "tcp", b)
		if err == nil {
			c.Close()
			return true
		}
	}
	return false
}

// sleep waits d or until ctx ends; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// window bounds the bytes sent but not yet acknowledged.
type window struct {
	mu    sync.Mutex
	used  int64
	max   int64
	freed chan struct{}
}

func newWindow(max int64) *window { return &window{max: max, freed: make(chan struct{})} }

func (w *window) tryAcquire(n int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.used > 0 && w.used+n > w.max {
		return false
	}
	w.used += n
	return true
}

// usedOver reports whether more than n bytes are held.
func (w *window) usedOver(n int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.used > n
}

// idle reports whether nothing is held.
func (w *window) idle() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.used == 0
}

func (w *window) acquire(ctx context.Context, n int64) error {
	for {
		w.mu.Lock()
		if w.used == 0 || w.used+n <= w.max {
			w.used += n
			w.mu.Unlock()
			return nil
		}
		ch := w.freed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (w *window) release(n int64) {
	w.mu.Lock()
	w.used -= n
	close(w.freed)
	w.freed = make(chan struct{})
	w.mu.Unlock()
}

// latency keeps the most recent ack latencies for quantiles.
type latency struct {
	mu  sync.Mutex
	buf []time.Duration
	n   int
}

const latencySamples = 1 << 16

func (l *latency) add(d time.Duration) {
	l.mu.Lock()
	if len(l.buf) < latencySamples {
		l.buf = append(l.buf, d)
	} else {
		l.buf[l.n%latencySamples] = d
	}
	l.n++
	l.mu.Unlock()
}

func (l *latency) quantiles() (p50, p99 time.Duration) {
	l.mu.Lock()
	c := slices.Clone(l.buf)
	l.mu.Unlock()
	if len(c) == 0 {
		return 0, 0
	}
	slices.Sort(c)
	return c[len(c)*50/100], c[min(len(c)*99/100, len(c)-1)]
}
