package kafka

import (
	"context"
	"testing"

	"github.com/fanaudit/fanaudit/internal/pipeline/queue"
	"github.com/fanaudit/fanaudit/sinks"
	kafkago "github.com/segmentio/kafka-go"
)

// TestBehind checks when the sink counts as behind its queue, which
// makes encodeForSpool spool lz4 sets instead of zstd: two batches
// queued, or more than a quarter of the window waiting to be spooled;
// never with the spool half full. No broker is needed: nothing is sent.
func TestBehind(t *testing.T) {
	cfg := testConfig("127.0.0.1:9", "behind")
	cfg.BatchSize = 10
	cfg.MaxMessageBytes = 1024
	cfg.Spool.Dir = t.TempDir()
	cfg.Spool.SegmentBytes = 64 << 10
	cfg.Spool.MaxBytes = 2 * cfg.Spool.SegmentBytes
	s, err := New(cfg, testHost, "behind", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if s.behind() {
		t.Fatal("behind before Run stored a queue")
	}
	q := queue.New("kafka", 4096, sinks.Block)
	in := sinks.Input(q)
	s.q.Store(&in)
	push := func(from, n uint64) {
		for seq := from; seq < from+n; seq++ {
			if err := q.Push(ctx, testItem(seq)); err != nil {
				t.Fatal(err)
			}
		}
	}
	drain := func() {
		for q.Len() > 0 {
			items, err := q.Next(ctx, make([]*sinks.Item, 0, 64))
			if err != nil {
				t.Fatal(err)
			}
			q.Delivered(len(items))
		}
	}

	push(1, 2*uint64(cfg.BatchSize)-1)
	if s.behind() {
		t.Fatalf("behind with %d items queued (under two batches)", q.Len())
	}
	push(2*uint64(cfg.BatchSize), 1)
	if !s.behind() {
		t.Fatalf("not behind with %d items queued (two batches)", q.Len())
	}
	drain()
	if s.behind() {
		t.Fatal("behind with an empty queue and an empty window")
	}

	quarter := cfg.MaxInFlightByte/4 + 1
	if err := s.spoolWait.acquire(ctx, quarter); err != nil {
		t.Fatal(err)
	}
	if !s.behind() {
		t.Fatal("not behind with more than a quarter of the window waiting to spool")
	}
	s.spoolWait.release(quarter)
	if s.behind() {
		t.Fatal("still behind after the window emptied")
	}

	// The spool half full: not behind, however long the queue.
	push(100, 3*uint64(cfg.BatchSize))
	if !s.behind() {
		t.Fatal("not behind with three batches queued and an empty spool")
	}
	big := make([]byte, 900)
	for s.spool.stats().Bytes < cfg.Spool.MaxBytes/2 {
		if err := s.spool.appendMessages(ctx, []kafkago.Message{{Value: big, Headers: []kafkago.Header{{Key: HeaderEventID, Value: []byte(eventID("behind", 1))}}}}); err != nil {
			t.Fatal(err)
		}
	}
	if s.behind() {
		t.Fatalf("behind with the spool half full (%d of %d bytes)", s.spool.stats().Bytes, cfg.Spool.MaxBytes)
	}
}
