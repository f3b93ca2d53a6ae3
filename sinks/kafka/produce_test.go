package kafka

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestEncodeBatch decodes the record batches the producer encodes with
// kafka-go's own decoder, for every codec: same records, keys (null when
// empty), values, headers and offsets, in order; the CRC is checked by
// the decoder.
func TestEncodeBatch(t *testing.T) {
	msgs := []kafkago.Message{
		{Key: []byte("host"), Value: []byte(`{"a":1}`), Headers: []kafkago.Header{{Key: HeaderEventID, Value: []byte("h:b:r:1")}}},
		{Key: nil, Value: bytes.Repeat([]byte("x"), 70000), Headers: []kafkago.Header{{Key: HeaderEventID, Value: []byte("h:b:r:2")}}},
		{Key: []byte("host"), Value: []byte{}, Headers: nil},
		{Key: []byte("k"), Value: []byte(`{"b":"é\n"}`), Headers: []kafkago.Header{{Key: "a", Value: nil}, {Key: "b", Value: []byte("2")}}},
	}
	for _, comp := range []string{"zstd", "lz4", "snappy", "gzip", "none"} {
		for _, idx := range [][]int{{0, 1, 2, 3}, {3}, {1, 3}} {
			t.Run(fmt.Sprintf("%s/%v", comp, idx), func(t *testing.T) {
				cfg := Defaults()
				cfg.Compression = comp
				p, err := newProducer(&kafkago.Transport{}, []string{"127.0.0.1:1"}, cfg, &kafkago.Murmur2Balancer{})
				if err != nil {
					t.Fatal(err)
				}
				defer p.close()
				now := time.UnixMilli(1700000000123)
				b, err := p.encodeRecordSet([]byte("prefix"), msgs, idx, now, p.comp)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.HasPrefix(b, []byte("prefix")) {
					t.Fatal("encodeBatch overwrote what dst held")
				}
				b = b[len("prefix"):]
				if crc := crc32.Checksum(b[4+rbAttrsAt:], crc32c); crc != binary.BigEndian.Uint32(b[4+rbCRCAt:]) {
					t.Fatal("batch CRC does not match") // kafka-go's decoder does not check it; brokers do
				}
				var rs protocol.RecordSet
				if _, err := rs.ReadFrom(bytes.NewReader(b)); err != nil { // as sent: size, then the batch
					t.Fatal(err)
				}
				if rs.Version != 2 || int(rs.Attributes.Compression()) != int(p.comp) {
					t.Fatalf("version %d compression %d, want 2 and %d", rs.Version, rs.Attributes.Compression(), p.comp)
				}
				for n, i := range idx {
					r, err := rs.Records.ReadRecord()
					if err != nil {
						t.Fatalf("record %d: %v", n, err)
					}
					want := msgs[i]
					if r.Offset != int64(n) || !r.Time.Equal(now) {
						t.Errorf("record %d: offset %d time %v, want %d %v", n, r.Offset, r.Time, n, now)
					}
					key := readAll(t, r.Key)
					if len(want.Key) == 0 && r.Key != nil || !bytes.Equal(key, want.Key) {
						t.Errorf("record %d: key %q (nil %v), want %q", n, key, r.Key == nil, want.Key)
					}
					if v := readAll(t, r.Value); !bytes.Equal(v, want.Value) {
						t.Errorf("record %d: value of %d bytes, want %d", n, len(v), len(want.Value))
					}
					if len(r.Headers) != len(want.Headers) {
						t.Fatalf("record %d: %d headers, want %d", n, len(r.Headers), len(want.Headers))
					}
					for j, h := range r.Headers {
						if h.Key != want.Headers[j].Key || !bytes.Equal(h.Value, want.Headers[j].Value) {
							t.Errorf("record %d header %d: %s=%q, want %s=%q", n, j, h.Key, h.Value, want.Headers[j].Key, want.Headers[j].Value)
						}
					}
				}
				if _, err := rs.Records.ReadRecord(); !errors.Is(err, io.EOF) {
					t.Fatalf("after the last record: %v, want EOF", err)
				}
			})
		}
	}
}

func readAll(t *testing.T, b protocol.Bytes) []byte {
	t.Helper()
	if b == nil {
		return nil
	}
	v, err := protocol.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestProduceChunksInOrder sends one partition's messages as several
// requests (batch_size 7), each encoded while the one before is in
// flight: the requests go out one at a time and in order, and when one
// fails the later ones are not sent, so retrying never reorders records.
func TestProduceChunksInOrder(t *testing.T) {
	const topic = "chunks"
	c := fakeCluster(t, topic)
	defer c.Close()
	mark := markOf
	var mu sync.Mutex
	var sent [][]int // the messages each produce request carried, in arrival order
	c.ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		var carried []int
		for i := range 30 {
			if produceCarries(r, mark(i)) {
				carried = append(carried, i)
			}
		}
		mu.Lock()
		sent = append(sent, carried)
		mu.Unlock()
		return nil, nil, false
	})
	// The request carrying message 14 (the third) fails once.
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.NotEnoughReplicas, Count: 1,
		When: func(r kmsg.Request) bool { return produceCarries(r, mark(14)) }})
	p, msgs := markedProducer(t, c, topic)
	chunks := func(from, to int) [][]int {
		var out [][]int
		for i := from; i < to; i += 7 {
			var c []int
			for j := i; j < min(i+7, to); j++ {
				c = append(c, j)
			}
			out = append(out, c)
		}
		return out
	}
	res := make([]error, len(msgs))
	p.produce(t.Context(), msgs, res, nil)
	for i, err := range res {
		if i < 14 && err != nil || i >= 14 && !errors.Is(err, kafkago.NotEnoughReplicas) {
			t.Errorf("message %d: %v, want %s", i, err, map[bool]string{true: "acknowledged", false: "NotEnoughReplicas"}[i < 14])
		}
	}
	mu.Lock()
	got := fmt.Sprint(sent)
	mu.Unlock()
	if want := fmt.Sprint(chunks(0, 21)); got != want {
		t.Fatalf("requests %s, want %s (nothing after the failed one)", got, want)
	}
	res = res[:16]
	p.produce(t.Context(), msgs[14:], res, nil)
	for i, err := range res {
		if err != nil {
			t.Errorf("retried message %d: %v", 14+i, err)
		}
	}
	mu.Lock()
	got = fmt.Sprint(sent[3:])
	mu.Unlock()
	if want := fmt.Sprint(chunks(14, 30)); got != want {
		t.Fatalf("retry requests %s, want %s", got, want)
	}
}

// markOf is the value of message i of markedProducer's messages.
func markOf(i int) []byte { return fmt.Appendf(nil, "<m%03d>", i) }

// markedProducer is a producer for topic on c that sends requests of 7
// records, uncompressed (so that kfake sees the marks), and 30 messages
// with the values markOf(i), for one partition.
func markedProducer(t *testing.T, c *kfake.Cluster, topic string) (*producer, []kafkago.Message) {
	t.Helper()
	cfg := testConfig(c.ListenAddrs()[0], topic)
	cfg.Compression = "none"
	cfg.BatchSize = 7
	p, err := newProducer(&kafkago.Transport{}, cfg.Brokers, cfg, &kafkago.Murmur2Balancer{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	msgs := make([]kafkago.Message, 30)
	for i := range msgs {
		msgs[i] = kafkago.Message{Key: []byte("host"), Value: markOf(i)}
	}
	return p, msgs
}
