package kafka

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/pipeline/queue"
	"github.com/fanaudit/fanaudit/sinks"
)

// BenchmarkSink measures throughput to the real broker with acks=all and
// the given compression, and the time from Queue.Push to broker ack: at
// saturation (rate 0, so latency is mostly queueing) and at a fixed rate.
func BenchmarkSink(b *testing.B) {
	brokers := sharedBrokers(b)
	for _, bc := range []struct {
		name        string
		compression string
		perMs       int // events pushed per millisecond; 0 = as fast as possible
	}{
		{"zstd", "zstd", 0},
		{"lz4", "lz4", 0},
		{"none", "none", 0},
		{"zstd-5k-per-s", "zstd", 5},
		{"zstd-50k-per-s", "zstd", 50},
	} {
		compression := bc.compression
		b.Run(bc.name, func(b *testing.B) {
			topic := uniqueTopic(b)
			createTopic(b, brokers, topic, 1)
			cfg := testConfig(brokers, topic)
			cfg.Compression = compression
			s, err := New(cfg, testHost, "bench", testLogger(b))
			if err != nil {
				b.Fatal(err)
			}
			pushed := make([]time.Time, b.N+1)
			lat := make([]time.Duration, 0, b.N)
			var mu sync.Mutex
			all := make(chan struct{})
			s.onAck = func(items []*sinks.Item) {
				now := time.Now()
				mu.Lock()
				for _, it := range items {
					lat = append(lat, now.Sub(pushed[it.Seq]))
				}
				if len(lat) == b.N {
					close(all)
				}
				mu.Unlock()
			}
			items := make([]*sinks.Item, b.N+1)
			for i := 1; i <= b.N; i++ {
				items[i] = testItem(uint64(i))
			}
			q := queue.New("kafka", 8192, sinks.Block)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			b.ResetTimer()
			start := time.Now()
			go func() { done <- s.Run(ctx, q) }()
			var tick *time.Ticker
			if bc.perMs > 0 {
				tick = time.NewTicker(time.Millisecond)
				defer tick.Stop()
			}
			for i := 1; i <= b.N; i++ {
				if tick != nil && i%bc.perMs == 0 {
					<-tick.C
				}
				mu.Lock()
				pushed[i] = time.Now()
				mu.Unlock()
				if err := q.Push(ctx, items[i]); err != nil {
					b.Fatal(err)
				}
			}
			<-all
			elapsed := time.Since(start)
			b.StopTimer()
			q.Close()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			slices.Sort(lat)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
			b.ReportMetric(float64(lat[len(lat)*50/100].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[min(len(lat)*99/100, len(lat)-1)].Microseconds())/1000, "p99-ms")
			if st := s.Stats(); st.Spooled != 0 || st.Acked != uint64(b.N) {
				b.Fatalf("stats %+v", st)
			}
		})
	}
}

// BenchmarkReplay measures how fast a spool filled during an outage drains
// to the real broker once it is back (acks=all, zstd).
func BenchmarkReplay(b *testing.B) {
	brokers := sharedBrokers(b)
	topic := uniqueTopic(b)
	createTopic(b, brokers, topic, 1)
	dir := b.TempDir()
	sp, err := openSpool(Spool{Dir: dir, MaxBytes: 8 << 30, SegmentBytes: 16 << 20, Fsync: "never"}, sinks.Block, nil)
	if err != nil {
		b.Fatal(err)
	}
	recs := make([]spoolRec, 0, 1000)
	for i := 1; i <= b.N; i++ {
		v := testLine(uint64(i))
		recs = append(recs, spoolRec{ID: eventID("replay", uint64(i)), Key: []byte(testHost.ID), Value: v[:len(v)-1]})
		if len(recs) == cap(recs) || i == b.N {
			if err := sp.append(context.Background(), recs); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	if err := sp.close(); err != nil {
		b.Fatal(err)
	}
	cfg := testConfig(brokers, topic)
	cfg.Spool.Dir = dir
	s, err := New(cfg, testHost, "bench", testLogger(b))
	if err != nil {
		b.Fatal(err)
	}
	q := queue.New("kafka", 16, sinks.Block)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	b.ResetTimer()
	start := time.Now()
	go func() { done <- s.Run(ctx, q) }()
	for s.Stats().Replayed < uint64(b.N) {
		time.Sleep(5 * time.Millisecond) // polling the broker-driven progress
	}
	elapsed := time.Since(start)
	b.StopTimer()
	q.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}
