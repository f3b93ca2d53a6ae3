package kafka

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/pipeline/queue"
	"github.com/fanaudit/fanaudit/internal/record"
	"github.com/fanaudit/fanaudit/internal/testutil"
	"github.com/fanaudit/fanaudit/sinks"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The tests here make outages with a topic that does not exist yet and
// that the sink may not create (create_topics = false): the broker answers
// UnknownTopicOrPartition until the test creates the topic. That is the
// outage of a broker with auto-creation off, and it ends at a moment the
// test chooses, in milliseconds rather than a broker restart.

// TestFreshTopicAutoCreated: with the default create_topics, a topic that
// does not exist is created by the broker on first use, and every record
// arrives.
func TestFreshTopicAutoCreated(t *testing.T) {
	brokers := testutil.KafkaBrokers(t)
	topic := uniqueTopic(t) // not created: the sink must make the broker create it
	cfg := testConfig(brokers, topic)
	cfg.Spool.Dir = t.TempDir()
	r := startSink(t, cfg, "fresh")
	ids := r.push(t, 1, 5000)
	waitFor(t, 60*time.Second, "delivery", r.drained)
	if err := r.closeAndWait(t, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	qs := settledQueue(t, r.q)
	if qs.Delivered != 5000 || qs.Dropped != 0 || r.sink.Stats().DeadLettered != 0 {
		t.Fatalf("queue %+v sink %+v; want all 5000 delivered", qs, r.sink.Stats())
	}
	if d := check(ids, consumeIDs(t, brokers, topic, len(ids), 60*time.Second)); d.missing != 0 {
		t.Fatalf("%d of %d missing", d.missing, d.sent)
	}
}

// lineCounter counts log lines and keeps them.
type lineCounter struct{ buf syncBuffer }

func (l *lineCounter) Write(p []byte) (int, error) { return l.buf.Write(p) }
func (l *lineCounter) lines() []string {
	return strings.Split(strings.TrimSpace(l.buf.String()), "\n")
}

// TestMissingTopicIsAnOutage: a topic that is not created (the sink does
// not ask, or the broker has auto-creation off) is an outage.
// Records spool and stay in flight (the queue's failing verdict: nothing
// delivered, records pending), nothing is dead-lettered, the log says so
// in a few lines; once the topic exists everything arrives, in order,
// with no gap.
func TestMissingTopicIsAnOutage(t *testing.T) {
	for _, tt := range []struct {
		name      string
		ownBroker bool
	}{
		{"create_topics off", false},
		{"broker auto-creation off", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			brokers := testutil.KafkaBrokers(t)
			create := false
			if tt.ownBroker {
				if testing.Short() {
					t.Skip("starts a broker")
				}
				brokers = startOwnBroker(t, "--no-auto-create").addr
				create = true // the default: the broker refuses
			}
			missingTopicOutage(t, brokers, create)
		})
	}
}

func missingTopicOutage(t *testing.T, brokers string, create bool) {
	topic := uniqueTopic(t)
	cfg := testConfig(brokers, topic)
	cfg.CreateTopics = create
	cfg.Spool.Dir = t.TempDir()
	cfg.BatchSize = 100 // many batches, many failed attempts
	var logs lineCounter
	s, err := New(cfg, testHost, "missing", zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	r := startExisting(t, s, "missing")
	ids := r.push(t, 1, 3000)
	waitFor(t, 60*time.Second, "records spooled", func() bool { return r.sink.Stats().Spooled == 3000 })
	// Spooled as the compressed record sets of their requests: the test
	// records are about 400 bytes each, so the spool holds far less than
	// the records would take one by one.
	if b := r.sink.Stats().SpoolBytes; b > 3000*400/4 {
		t.Errorf("the spool holds %d bytes for 3000 records: not compressed record sets", b)
	}
	// Five failed replay attempts of 100 records: about 3 s of backoff.
	waitFor(t, 60*time.Second, "replay retries", func() bool { return r.sink.Stats().Retries >= 600 })
	qs := settledQueue(t, r.q)
	if qs.Delivered != 0 || qs.Dropped != 0 || qs.InFlight != 3000 || qs.Depth != 0 {
		t.Fatalf("during the outage: queue %+v; want 3000 in flight, none queued, none delivered", qs)
	}
	during := logs.lines()
	if len(during) > 5 {
		t.Errorf("%d log lines during the outage, want a few:\n%s", len(during), strings.Join(during, "\n"))
	}
	if !strings.Contains(logs.buf.String(), "Unknown Topic Or Partition") {
		t.Errorf("the log does not name the condition:\n%s", logs.buf.String())
	}
	createTopic(t, brokers, topic, 1)
	waitFor(t, 60*time.Second, "delivery", r.drained)
	if err := r.closeAndWait(t, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	qs = settledQueue(t, r.q)
	if qs.Delivered != 3000 || qs.Dropped != 0 || r.sink.Stats().DeadLettered != 0 {
		t.Fatalf("queue %+v sink %+v; want all 3000 delivered", qs, r.sink.Stats())
	}
	if d := check(ids, consumeIDs(t, brokers, topic, len(ids), 60*time.Second)); d.missing != 0 {
		t.Fatalf("%d of %d missing", d.missing, d.sent)
	}
	assertPartitionOrder(t, brokers, topic)
}

// assertPartitionOrder checks that each run's sequence numbers arrive
// increasing in the (single) partition, duplicates of a re-send aside.
func assertPartitionOrder(t *testing.T, brokers, topic string) {
	t.Helper()
	last := map[string]uint64{}
	for _, id := range consumeOrdered(t, brokers, topic) {
		run, seq := runOfID(id), seqOfID(id)
		if seq < last[run] {
			// A re-sent batch may repeat earlier ids, never skip ahead: the
			// repeat must be of an id already seen.
			continue
		}
		if seq != last[run]+1 && last[run] != 0 && seq != last[run] {
			t.Fatalf("run %s: %d follows %d", run, seq, last[run])
		}
		last[run] = seq
	}
}

func seqOfID(id string) uint64 {
	var n uint64
	for _, c := range id[strings.LastIndexByte(id, ':')+1:] {
		n = n*10 + uint64(c-'0')
	}
	return n
}

// TestSpoolDropOldestAnnounced: a small spool under drop_oldest through an
// outage. The consumer's gap is exactly what the queue reports as
// spool_full losses, the sink's counters agree, and the queue invariant
// holds: delivered + lost = sent.
func TestSpoolDropOldestAnnounced(t *testing.T) {
	brokers := testutil.KafkaBrokers(t)
	topic, cfg := missingTopicCfg(t, brokers)
	cfg.MaxMessageBytes, cfg.BatchBytes = 4096, 64<<10
	cfg.Spool.SegmentBytes = 64 << 10
	cfg.Spool.MaxBytes = 4 * cfg.Spool.SegmentBytes
	cfg.WhenFull = "drop_oldest"
	cfg.BatchSize = 100
	// Spooled record sets are compressed; uncompressed, 6000 records
	// still overflow the 256 KiB spool, and drop_oldest drops whole sets.
	cfg.Compression = "none"
	r := startSink(t, cfg, "dropold")
	ids := r.push(t, 1, 6000)
	waitFor(t, 60*time.Second, "everything spooled or dropped", func() bool {
		st := r.sink.Stats()
		return st.Spooled == 6000 && r.q.Stats().Depth == 0
	})
	if r.sink.Stats().SpoolDropped == 0 {
		t.Fatalf("the spool dropped nothing: %+v", r.sink.Stats())
	}
	createTopic(t, brokers, topic, 1)
	waitFor(t, 60*time.Second, "delivery", r.drained)
	if err := r.closeAndWait(t, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	st := r.sink.Stats()
	qs := settledQueue(t, r.q)
	u := r.q.TakeUnreported()
	lost := u.Reasons[record.ReasonSpoolFull]
	d := check(ids, consumeIDs(t, brokers, topic, len(ids)-int(lost), 60*time.Second))
	t.Logf("sent %d delivered %d missing %d; announced spool_full %d; sink %+v; queue %+v", d.sent, d.delivered, d.missing, lost, st, qs)
	if uint64(d.missing) != lost || u.Total() != lost {
		t.Fatalf("consumer misses %d, announced %d (%+v)", d.missing, lost, u)
	}
	if st.SpoolDropped != lost || qs.Dropped != lost || qs.Delivered+lost != 6000 {
		t.Fatalf("counters disagree: spool dropped %d, queue %+v, announced %d", st.SpoolDropped, qs, lost)
	}
}

// TestReplayLossesAnnounced covers records lost after they were spooled:
// a record the broker rejects on replay (dead_letter; the stored set it is
// in is decoded and bisected, so only it is lost) and records made
// unreadable in the spool (spool_corrupt: a byte flipped in a stored set
// loses the set, counted exactly by its header), both for this run's
// records (settled as failed with the reason) and for an earlier run's
// (reported with its run id). In every case the consumer's gap equals
// what is announced.
func TestReplayLossesAnnounced(t *testing.T) {
	const topic = "replay"
	const n = 400
	c := fakeCluster(t, "other")
	defer c.Close()
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.MessageTooLarge, Count: -1,
		When: func(r kmsg.Request) bool { return produceCarries(r, marker) }})
	addr := c.ListenAddrs()[0]
	newCfg := func(spoolDir string) Config {
		cfg := testConfig(addr, topic)
		cfg.CreateTopics = false
		cfg.Compression = "none" // so the fault sees the marker
		cfg.BatchSize = 50
		cfg.Spool.Dir = spoolDir
		cfg.Spool.Fsync = "always"
		return cfg
	}
	pushMarked := func(t *testing.T, r *running, from uint64) []string {
		var ids []string
		for seq := from; seq < from+n; seq++ {
			it := testItem(seq)
			if seq == from+n/2 {
				it = &sinks.Item{Seq: seq, Line: append(append([]byte(`{"m":"`), marker...), "\"}\n"...)}
			}
			if err := r.q.Push(t.Context(), it); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, eventID(r.runID, seq))
		}
		return ids
	}

	// Run 1 spools n records (one marked) while the topic is missing and
	// stops: they are handed to run 2.
	spoolDir := t.TempDir()
	r1 := startSink(t, newCfg(spoolDir), "one")
	ids1 := pushMarked(t, r1, 1)
	waitFor(t, 30*time.Second, "run one spooled", func() bool { return r1.sink.Stats().Spooled == n })
	if err := r1.closeAndWait(t, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if st := r1.sink.Stats(); st.HandedOff != n {
		t.Fatalf("run one handed off %d, want %d", st.HandedOff, n)
	}
	// Damage one of run one's records on disk.
	corruptOneRecord(t, spoolDir, []byte(`"sequence":7,`), false)

	// Run 2 spools its own n records (one marked), damages one of them in
	// place, then the topic appears and everything is replayed.
	r2 := startSink(t, newCfg(spoolDir), "two")
	ids2 := pushMarked(t, r2, 1)
	waitFor(t, 30*time.Second, "run two spooled", func() bool { return r2.sink.Stats().Spooled == n })
	corruptOneRecord(t, spoolDir, []byte(`"sequence":300,`), true)
	createTopic(t, addr, topic, 1)
	waitFor(t, 60*time.Second, "delivery", r2.drained)
	if err := r2.closeAndWait(t, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	st := r2.sink.Stats()
	qs := settledQueue(t, r2.q)
	u := r2.q.TakeUnreported()
	t.Logf("sink %+v queue %+v unreported %+v", st, qs, u)
	// The damaged set's records: at least the one damaged, at most a
	// batch (batch_size 50).
	corrupt1 := u.Earlier[queue.EarlierLoss{Reason: record.ReasonSpoolCorrupt, RunID: "one"}]
	corrupt2 := u.Reasons[record.ReasonSpoolCorrupt]
	for run, k := range map[string]uint64{"one": corrupt1, "two": corrupt2} {
		if k < 1 || k > 50 {
			t.Errorf("run %s: spool_corrupt announced %d, want 1 to 50 (one damaged set)", run, k)
		}
	}
	if u.Reasons[record.ReasonDeadLetter] != 1 {
		t.Errorf("run two: dead_letter announced %d, want 1", u.Reasons[record.ReasonDeadLetter])
	}
	if e := u.Earlier[queue.EarlierLoss{Reason: record.ReasonDeadLetter, RunID: "one"}]; e != 1 {
		t.Errorf("run one's records: dead_letter announced %d, want 1", e)
	}
	if qs.Delivered != n-1-corrupt2 || qs.Dropped != 1+corrupt2 || st.ReplayDead != 2 || st.Replayed != 2*n-2-corrupt1-corrupt2 ||
		st.SpoolCorrupt != corrupt1+corrupt2 {
		t.Errorf("queue %+v sink %+v; want %d delivered, %d dropped, 2 dead on replay, %d replayed", qs, st, n-1-corrupt2, 1+corrupt2, 2*n-2-corrupt1-corrupt2)
	}
	seen := consumeKfake(t, c, topic)
	for _, run := range []struct {
		ids  []string
		lost uint64
	}{{ids1, 1 + corrupt1}, {ids2, 1 + corrupt2}} {
		if d := check(run.ids, seen); uint64(d.missing) != run.lost {
			t.Errorf("consumer misses %d of a run's %d records, announced %d", d.missing, d.sent, run.lost)
		}
	}
}

// corruptOneRecord flips a byte inside the first spooled record whose
// bytes contain needle, searching the newest segments first when newest.
func corruptOneRecord(t *testing.T, dir string, needle []byte, newest bool) {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	sort.Strings(segs)
	if newest {
		slices.Reverse(segs)
	}
	for _, seg := range segs {
		b, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(b, needle)
		if i < 0 {
			continue
		}
		f, err := os.OpenFile(seg, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt([]byte{b[i] ^ 0xff}, int64(i)); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("no spooled record contains %q", needle)
}

// TestSpoolKeysOutage: records spooled through an outage (the topic is
// missing) with key = "none" (stored as record sets, each replayed to a
// partition round robin) and key = "path" (stored one by one, replayed to
// their own partitions) all arrive once a topic of 4 partitions exists.
func TestSpoolKeysOutage(t *testing.T) {
	brokers := testutil.KafkaBrokers(t)
	for _, key := range []string{"none", "path"} {
		t.Run(key, func(t *testing.T) {
			topic, cfg := missingTopicCfg(t, brokers)
			cfg.Key = key
			cfg.BatchSize = 100
			r := startSink(t, cfg, "keys")
			ids := r.push(t, 1, 2000)
			waitFor(t, 60*time.Second, "records spooled", func() bool { return r.sink.Stats().Spooled == 2000 })
			createTopic(t, brokers, topic, 4)
			waitFor(t, 60*time.Second, "delivery", r.drained)
			if err := r.closeAndWait(t, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			if qs := settledQueue(t, r.q); qs.Delivered != 2000 || qs.Dropped != 0 {
				t.Fatalf("queue %+v sink %+v; want all 2000 delivered", qs, r.sink.Stats())
			}
			if d := check(ids, consumeIDs(t, brokers, topic, len(ids), 60*time.Second)); d.missing != 0 {
				t.Fatalf("%d of %d missing", d.missing, d.sent)
			}
		})
	}
}
