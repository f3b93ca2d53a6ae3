package kafka

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// TestRecordErrorsDeadLetterOnlyTheirRecords: a compacted topic refuses a
// record without a key, and the broker rejects the whole batch while
// naming that record (record_errors, produce v8). Only that record is
// dead-lettered; the others of its batch are sent again and arrive.
func TestRecordErrorsDeadLetterOnlyTheirRecords(t *testing.T) {
	brokers := testutil.KafkaBrokers(t)
	topic := uniqueTopic(t)
	c := &kafkago.Client{Addr: kafkago.TCP(brokers), Timeout: 30 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.CreateTopics(ctx, &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{{
		Topic: topic, NumPartitions: 1, ReplicationFactor: 1,
		ConfigEntries: []kafkago.ConfigEntry{{ConfigName: "cleanup.policy", ConfigValue: "compact"}},
	}}})
	if err != nil || res.Errors[topic] != nil {
		t.Fatalf("create compacted topic: %v %v", err, res.Errors[topic])
	}
	cfg := testConfig(brokers, topic)
	cfg.Key = "path"
	cfg.BatchSize = 10
	r := startSink(t, cfg, "recerr")
	const n, bad = 30, 13
	var ids []string
	for seq := uint64(1); seq <= n; seq++ {
		it := testItem(seq)
		if seq == bad {
			it.Path = "" // a null key
		} else {
			ids = append(ids, eventID(r.runID, seq))
		}
		if err := r.q.Push(context.Background(), it); err != nil {
			t.Fatal(err)
		}
	}
	seen := consumeIDs(t, brokers, topic, len(ids), 60*time.Second)
	if d := check(ids, seen); d.missing > 0 {
		t.Errorf("%d records of the refused batch never arrived (dead-lettered with the keyless one?)", d.missing)
	}
	if err := r.closeAndWait(t, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	st := settledQueue(t, r.q)
	if st.Dropped != 1 || r.sink.Stats().DeadLettered != 1 {
		t.Errorf("dropped %d, dead-lettered %d; want 1 and 1 (the keyless record)", st.Dropped, r.sink.Stats().DeadLettered)
	}
}

// TestProduceUnsentNotDeadLettered: when a request of a partition's
// sequence is refused for a record in it (invalid), the requests after it
// were never sent: their records get an error that no one dead-letters.
// A request too large passes its error on to the later ones, which
// Sink.send bisects and sends again at once.
func TestProduceUnsentNotDeadLettered(t *testing.T) {
	for _, tt := range []struct {
		err   *kerr.Error
		want  error
		later func(error) bool
	}{
		{kerr.InvalidRecord, kafkago.InvalidRecord, func(err error) bool { return errors.Is(err, errNotSent) && !deadLetterable(err) }},
		{kerr.MessageTooLarge, kafkago.MessageSizeTooLarge, tooLarge},
	} {
		t.Run(tt.err.Message, func(t *testing.T) {
			const topic = "unsent"
			c := fakeCluster(t, topic)
			defer c.Close()
			c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: tt.err, Count: 1,
				When: func(r kmsg.Request) bool { return produceCarries(r, markOf(9)) }})
			p, msgs := markedProducer(t, c, topic)
			res := make([]error, len(msgs))
			p.produce(t.Context(), msgs, res, nil)
			for i, err := range res {
				switch {
				case i < 7 && err != nil:
					t.Errorf("message %d: %v, want acknowledged", i, err)
				case i >= 7 && i < 14 && !errors.Is(err, tt.want):
					t.Errorf("message %d: %v, want %v (its request was refused)", i, err, tt.want)
				case i >= 14 && (err == nil || !tt.later(err)):
					t.Errorf("message %d, never sent: %v", i, err)
				}
			}
		})
	}
}

// TestProduceBatchWithinBatchBytes: without compression, every record
// batch the producer sends fits in batch_bytes, headers and record
// framing included, so a broker whose max.message.bytes is batch_bytes
// (its default is 12 bytes more than ours) never refuses one as too large.
func TestProduceBatchWithinBatchBytes(t *testing.T) {
	const topic = "fits"
	c := fakeCluster(t, topic)
	defer c.Close()
	var mu sync.Mutex
	var sizes []int
	c.ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		mu.Lock()
		defer mu.Unlock()
		for _, tp := range r.(*kmsg.ProduceRequest).Topics {
			for _, p := range tp.Partitions {
				sizes = append(sizes, len(p.Records))
			}
		}
		return nil, nil, false
	})
	cfg := testConfig(c.ListenAddrs()[0], topic)
	cfg.Compression = "none"
	p, err := newProducer(&kafkago.Transport{}, cfg.Brokers, cfg, &kafkago.Murmur2Balancer{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	// Records the size of real ones, with their event id header.
	msgs := make([]kafkago.Message, 3000)
	value := bytes.Repeat([]byte("v"), 1215)
	for i := range msgs {
		msgs[i] = kafkago.Message{Key: []byte(testHost.ID), Value: value,
			Headers: []kafkago.Header{{Key: HeaderEventID, Value: []byte(eventID("fits", uint64(i+1)))}}}
	}
	res := make([]error, len(msgs))
	p.produce(t.Context(), msgs, res, nil)
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) == 0 {
		t.Fatal("no produce request")
	}
	for i, n := range sizes {
		if int64(n) > cfg.BatchBytes {
			t.Errorf("request %d of %d: a record batch of %d bytes, batch_bytes is %d", i+1, len(sizes), n, cfg.BatchBytes)
		}
	}
}

// TestReplaySettleSkipsSeals: a seal record replayed from the spool is no
// queue item of any run: acknowledged or dead-lettered, it settles
// nothing and announces no earlier run's loss.
func TestReplaySettleSkipsSeals(t *testing.T) {
	s := &Sink{idPrefixB: []byte("h:b:now:")}
	msg := func(id string) *kafkago.Message {
		return &kafkago.Message{Headers: []kafkago.Header{{Key: HeaderEventID, Value: []byte(id)}}}
	}
	var set replaySettle
	set.add(s, msg(sealIDPrefix+"h:b:now:3"), true)
	set.add(s, msg(sealIDPrefix+"h:b:before:1"), true)
	set.add(s, msg(sealIDPrefix+"h:b:now:4"), false)
	set.add(s, msg("h:b:now:7"), true)
	set.add(s, msg("h:b:before:9"), true)
	if set.acked != 0 || set.dead != 1 || len(set.earlierDead) != 1 || set.earlierDead["before"] != 1 {
		t.Fatalf("settled %+v; want this run's one dead letter and one earlier run's, no seal", set)
	}
}
