package kafka

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/pipeline/queue"
	"github.com/fanaudit/fanaudit/internal/testutil"
	"github.com/fanaudit/fanaudit/sinks"
	"github.com/segmentio/kafka-go/compress"
)

// TestSpoolCodecWhenBehind checks the per-batch codec against the real
// broker: with compression = "zstd", a batch encoded for the spool while
// the sink is caught up is a zstd set, one encoded while the sink is
// behind (two batches queued) an lz4 set; the broker takes both into a
// topic with the default compression.type (producer), and both our
// reader (ReadTopic, as verify uses it) and kcat read every record back
// in order, byte for byte.
func TestSpoolCodecWhenBehind(t *testing.T) {
	brokers := testutil.KafkaBrokers(t)
	topic := uniqueTopic(t)
	createTopic(t, brokers, topic, 1)
	cfg := testConfig(brokers, topic)
	cfg.BatchSize = 100
	s, err := New(cfg, testHost, "codec", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	q := queue.New("kafka", 4096, sinks.Block)
	in := sinks.Input(q)
	s.q.Store(&in)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	seq := uint64(1)
	push := func(n int) {
		for range n {
			if err := q.Push(ctx, testItem(seq)); err != nil {
				t.Fatal(err)
			}
			seq++
		}
	}
	codecOf := func(set []byte) compress.Compression {
		return compress.Compression(binary.BigEndian.Uint16(set[4+rbAttrsAt:]) & 7)
	}
	var want [][]byte
	var ids []string
	for _, c := range []struct {
		queued int // items queued beyond the batch when it is encoded
		codec  compress.Compression
	}{
		{0, compress.Zstd},
		{2 * cfg.BatchSize, compress.Lz4},
		{0, compress.Zstd},
	} {
		push(cfg.BatchSize + c.queued)
		b, err := s.gather(ctx, q)
		if err != nil || b == nil || len(b.msgs) != cfg.BatchSize {
			t.Fatalf("gather: %v (%d queued)", err, q.Len())
		}
		sets := s.encodeForSpool(b)
		if len(sets) == 0 {
			t.Fatal("no sets encoded")
		}
		for _, st := range sets {
			if got := codecOf(st.Set); got != c.codec {
				t.Errorf("%d queued behind the batch: set compressed with codec %d, want %d", c.queued, got, c.codec)
			}
			if r := s.prod.produceSet(ctx, st.Key, st.Set); r.err != nil {
				t.Fatalf("produce set: %v", r.err)
			}
		}
		for i := range b.msgs {
			want = append(want, b.msgs[i].Value)
			ids = append(ids, string(b.msgs[i].Headers[0].Value))
		}
		q.Delivered(len(b.items))
		for q.Len() > 0 { // the batches queued behind it
			more, err := q.Next(ctx, make([]*sinks.Item, 0, cfg.BatchSize))
			if err != nil {
				t.Fatal(err)
			}
			q.Delivered(len(more))
		}
	}
	if n := s.spooledLz4.Load(); n != uint64(cfg.BatchSize) {
		t.Errorf("spooledLz4 = %d, want %d", n, cfg.BatchSize)
	}

	var got [][]byte
	if err := ReadTopic(ctx, cfg, func(_ int, off int64, v []byte) error {
		if off != int64(len(got)) {
			return fmt.Errorf("offset %d, want %d", off, len(got))
		}
		got = append(got, bytes.Clone(v))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("ReadTopic read %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("record %d read back as %q, want %q", i, got[i], want[i])
		}
	}
	if d := check(ids, consumeIDs(t, brokers, topic, len(ids), 60*time.Second)); d.missing != 0 || d.duplicates != 0 {
		t.Fatalf("kcat: %d of %d event ids missing, %d duplicates", d.missing, d.sent, d.duplicates)
	}
}
