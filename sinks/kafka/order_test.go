package kafka

import (
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// TestOrderDirectAndSpooled: with a window of about one batch, batches
// alternate between the direct path and the spool (the window is full
// while one is in flight). With no failure at all, the partition holds
// the records in event.sequence order: a batch never goes straight to
// the broker while an earlier one is still on its way into the spool.
func TestOrderDirectAndSpooled(t *testing.T) {
	brokers := testutil.KafkaBrokers(t)
	cfg := testConfig(brokers, uniqueTopic(t))
	cfg.Spool.Dir = t.TempDir()
	cfg.MaxMessageBytes = 4096
	cfg.BatchBytes = 4096
	cfg.MaxInFlightByte = 4096
	st := orderRun(t, cfg, 6000)
	if st.Spooled == 0 || st.Acked == 0 {
		t.Fatalf("stats %+v: want batches on both paths", st)
	}
}

// TestOrderDirect: many small batches in flight at once, without a spool:
// they reach their partition in the order they left the queue.
func TestOrderDirect(t *testing.T) {
	brokers := testutil.KafkaBrokers(t)
	cfg := testConfig(brokers, uniqueTopic(t))
	cfg.MaxMessageBytes = 4096
	cfg.BatchBytes = 4096
	orderRun(t, cfg, 6000)
}

// orderRun pushes n records through a sink with cfg, a few at a time with
// two or three batches unsettled, and checks that the topic's single
// partition holds them in event.sequence order.
func orderRun(t *testing.T, cfg Config, n uint64) Stats {
	t.Helper()
	createTopic(t, cfg.Brokers[0], cfg.Topic, 1)
	cfg.BatchTimeout = Duration{time.Millisecond}
	r := startSink(t, cfg, "order")
	var ids []string
	for from := uint64(1); from <= n; from += 5 {
		ids = append(ids, r.push(t, from, 5)...)
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Microsecond) {
			if st := r.q.Stats(); st.Received-st.Delivered <= 20 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("nothing delivered for 30 s")
			}
		}
	}
	waitFor(t, 60*time.Second, "delivery", r.drained)
	if err := r.closeAndWait(t, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	st := r.sink.Stats()
	if d := check(ids, consumeIDs(t, cfg.Brokers[0], cfg.Topic, int(n), 60*time.Second)); d.missing != 0 {
		t.Fatalf("%d of %d missing", d.missing, d.sent)
	}
	var last uint64
	seen := map[uint64]bool{}
	for _, id := range consumeOrdered(t, cfg.Brokers[0], cfg.Topic) {
		seq := seqOfID(id)
		if seen[seq] {
			continue
		}
		seen[seq] = true
		if seq != last+1 {
			t.Fatalf("%d arrived after %d (direct %d, spooled %d records)", seq, last, st.Acked, st.Spooled)
		}
		last = seq
	}
	return st
}
