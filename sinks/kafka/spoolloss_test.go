package kafka

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/pipeline/queue"
	"github.com/fanaudit/fanaudit/internal/record"
	"github.com/fanaudit/fanaudit/internal/testutil"
	"github.com/fanaudit/fanaudit/sinks"
	kafkago "github.com/segmentio/kafka-go"
)

// TestDecodeRecordSetCodecs: a stored set the broker refuses is decoded
// (decodeRecordSet) so that only its offending records are dead-lettered;
// that works for every compression the sink offers.
func TestDecodeRecordSetCodecs(t *testing.T) {
	msgs := setMsgs(0, 40)
	for _, comp := range []string{"zstd", "lz4", "snappy", "gzip", "none"} {
		sets := testSets(t, comp, 40, msgs)
		if len(sets) != 1 {
			t.Fatalf("%s: %d sets", comp, len(sets))
		}
		got, err := decodeRecordSet(sets[0].Set)
		if err != nil {
			t.Fatalf("%s: %v", comp, err)
		}
		if len(got) != 40 {
			t.Fatalf("%s: %d records", comp, len(got))
		}
		for i := range got {
			if !bytes.Equal(got[i].Value, msgs[i].Value) || !bytes.Equal(got[i].Key, msgs[i].Key) || !bytes.Equal(got[i].Headers[0].Value, msgs[i].Headers[0].Value) {
				t.Fatalf("%s: record %d differs", comp, i)
			}
		}
	}
}

// TestReplayRefusedSetDeadLettersOnlyItsRecord: records spooled while the topic is missing;
// the topic then appears with a max.message.bytes that one record (under
// the sink's max_message_bytes) exceeds. The stored set holding it is
// refused; only that record may be lost, announced as dead_letter.
func TestReplayRefusedSetDeadLettersOnlyItsRecord(t *testing.T) {
	brokers := testutil.KafkaBrokers(t)
	for _, comp := range []string{"zstd", "none"} {
		t.Run(comp, func(t *testing.T) {
			topic, cfg := missingTopicCfg(t, brokers)
			cfg.Compression = comp
			cfg.BatchSize = 50
			r := startSink(t, cfg, "refused")
			const n = 400
			var ids []string
			big := make([]byte, 30000)
			rand.Read(big)
			for seq := uint64(1); seq <= n; seq++ {
				it := testItem(seq)
				if seq == 123 {
					it = &sinks.Item{Seq: seq, Line: []byte(`{"big":"` + base64.StdEncoding.EncodeToString(big) + "\"}\n")}
				}
				if err := r.q.Push(t.Context(), it); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, eventID("refused", seq))
			}
			waitFor(t, 30*time.Second, "spooled", func() bool { return r.sink.Stats().Spooled == n })
			c := &kafkago.Client{Addr: kafkago.TCP(brokers), Timeout: 30 * time.Second}
			res, err := c.CreateTopics(t.Context(), &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{{
				Topic: topic, NumPartitions: 1, ReplicationFactor: 1,
				ConfigEntries: []kafkago.ConfigEntry{{ConfigName: "max.message.bytes", ConfigValue: "20000"}},
			}}})
			if err != nil || res.Errors[topic] != nil {
				t.Fatalf("create topic: %v %v", err, res.Errors[topic])
			}
			waitFor(t, 60*time.Second, "delivery", r.drained)
			if err := r.closeAndWait(t, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			qs := settledQueue(t, r.q)
			st := r.sink.Stats()
			u := r.q.TakeUnreported()
			t.Logf("queue %+v sink %+v unreported %+v", qs, st, u)
			if qs.Delivered != n-1 || qs.Dropped != 1 || u.Reasons[record.ReasonDeadLetter] != 1 || st.ReplayDead != 1 {
				t.Errorf("want %d delivered, 1 dead letter", n-1)
			}
			d := check(ids, consumeIDs(t, brokers, topic, n-1, 60*time.Second))
			if d.missing != 1 {
				t.Errorf("consumer misses %d, want 1", d.missing)
			}
		})
	}
}

// TestEarlierCorruptAnnouncedOnce: run one spools (topic missing) and
// hands off; one of its stored sets is damaged on disk. Run two reads past
// it (announcing its records lost, naming run one) but stops before the
// broker takes anything; run three replays. The damaged set's records are
// announced once in all, equal to the consumer's gap.
func TestEarlierCorruptAnnouncedOnce(t *testing.T) {
	brokers := testutil.KafkaBrokers(t)
	topic := uniqueTopic(t)
	spoolDir := t.TempDir()
	newCfg := func() Config {
		cfg := testConfig(brokers, topic)
		cfg.CreateTopics = false
		cfg.Compression = "none" // so the damage can find its record
		cfg.BatchSize = 50
		cfg.Spool.Dir = spoolDir
		cfg.Spool.Fsync = "always"
		return cfg
	}
	const n = 400
	r1 := startSink(t, newCfg(), "one")
	ids := r1.push(t, 1, n)
	waitFor(t, 30*time.Second, "run one spooled", func() bool { return r1.sink.Stats().Spooled == n })
	if err := r1.closeAndWait(t, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	corruptOneRecord(t, spoolDir, []byte(`"sequence":7,`), false)

	var announced uint64
	key := queue.EarlierLoss{Reason: record.ReasonSpoolCorrupt, RunID: "one"}
	r2 := startSink(t, newCfg(), "two")
	// The damaged set is the first; the replay attempts that fail (the
	// topic is missing) send what was read past it.
	waitFor(t, 30*time.Second, "run two read past the damage", func() bool { return r2.sink.Stats().Retries > 0 })
	if err := r2.closeAndWait(t, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	announced += r2.q.TakeUnreported().Earlier[key]

	r3 := startSink(t, newCfg(), "three")
	createTopic(t, brokers, topic, 1)
	waitFor(t, 60*time.Second, "delivery", r3.drained)
	if err := r3.closeAndWait(t, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	announced += r3.q.TakeUnreported().Earlier[key]
	d := check(ids, consumeIDs(t, brokers, topic, n-50, 60*time.Second))
	t.Logf("run one's records: %d missing at the consumer, %d announced spool_corrupt (runs two and three)", d.missing, announced)
	if uint64(d.missing) != announced {
		t.Errorf("consumer misses %d of run one's records, announced %d", d.missing, announced)
	}
}

// TestSpoolDropOldestEarlierDamagedSet: an earlier run's segments hold a
// damaged set (header intact, so its count is known: a flipped byte, or
// the torn tail a crash leaves) and are dropped by drop_oldest before the
// replayer reads them: the damaged set's records are announced with the
// rest of the segments'.
func TestSpoolDropOldestEarlierDamagedSet(t *testing.T) {
	for _, tt := range []struct {
		name   string
		damage func(segs []string)
	}{
		{"payload byte", func(segs []string) {
			b, err := os.ReadFile(segs[0])
			if err != nil {
				t.Fatal(err)
			}
			b[bytes.Index(b, setMagicB)+setHeader+40] ^= 0xff
			if err := os.WriteFile(segs[0], b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"torn tail", func(segs []string) {
			last := segs[len(segs)-1]
			st, err := os.Stat(last)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(last, st.Size()-5); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testSpoolCfg(dir)
			cfg.SegmentBytes = 16 << 10
			s1, err := openSpool(cfg, sinks.Block, nil)
			if err != nil {
				t.Fatal(err)
			}
			appended := int64(0)
			for i := range 60 {
				if err := s1.appendSets(t.Context(), testSets(t, "none", 10, setMsgs(i*10, 10))); err != nil {
					t.Fatal(err)
				}
				appended += 10
			}
			s1.close()
			segs, _ := filepath.Glob(filepath.Join(dir, "seg-*.log"))
			slices.Sort(segs)
			tt.damage(segs)

			s2, lost := openDropByRun(t, cfg)
			// This run's sets push the earlier run's segments out before
			// any read.
			for i := 0; s2.segs[0].run != ""; i++ {
				msgs := setMsgs(i*10, 10)
				for k := range msgs {
					msgs[k].Headers[0].Value = fmt.Appendf(nil, "h:b:now:%d", i*10+k)
				}
				if err := s2.appendSets(t.Context(), testSets(t, "none", 10, msgs)); err != nil {
					t.Fatal(err)
				}
			}
			earlier := replayEarlier(t, s2)
			if earlier+lost["r"] != appended {
				t.Fatalf("earlier run: %d spooled; %d read back + %d announced lost = %d", appended, earlier, lost["r"], earlier+lost["r"])
			}
		})
	}
}
