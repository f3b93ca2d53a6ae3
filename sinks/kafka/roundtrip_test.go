package kafka

import (
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// TestRoundTrip feeds known events through a queue into the sink against
// the real broker and checks, with kcat as the independent consumer, that
// every event id arrives.
func TestRoundTrip(t *testing.T) {
	brokers := testutil.KafkaBrokers(t)
	tests := []struct {
		name        string
		key         string
		compression string
		partitions  int
		n           uint64
	}{
		{"zstd host_id", "host_id", "zstd", 1, 5000},
		{"lz4 path", "path", "lz4", 3, 2000},
		{"snappy none", "none", "snappy", 3, 2000},
		{"gzip host_id", "host_id", "gzip", 1, 1000},
		{"uncompressed", "host_id", "none", 1, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topic := uniqueTopic(t)
			createTopic(t, brokers, topic, tt.partitions)
			cfg := testConfig(brokers, topic)
			cfg.Key, cfg.Compression = tt.key, tt.compression
			r := startSink(t, cfg, "run1")
			ids := r.push(t, 1, tt.n)
			if err := r.closeAndWait(t, 60*time.Second); err != nil {
				t.Fatalf("Run: %v", err)
			}
			qs := settledQueue(t, r.q)
			if qs.Delivered != tt.n || qs.InFlight != 0 || qs.Dropped != 0 {
				t.Errorf("queue %+v, want all %d delivered", qs, tt.n)
			}
			d := check(ids, consumeIDs(t, brokers, topic, len(ids), 60*time.Second))
			t.Logf("sent %d delivered %d duplicates %d missing %d; sink %+v", d.sent, d.delivered, d.duplicates, d.missing, r.sink.Stats())
			if d.missing != 0 {
				t.Fatalf("%d of %d event ids missing", d.missing, d.sent)
			}
		})
	}
}
