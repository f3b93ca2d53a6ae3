package kafka

import (
	"bytes"
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/pipeline/queue"
	"github.com/fanaudit/fanaudit/internal/testutil"
	"github.com/fanaudit/fanaudit/sinks"
)

// benchLines returns the records a benchmark sends: the lines of
// $FANAUDIT_KAFKA_PAYLOAD (real fanaudit records, one per line, as given
// to ProducerPerformance's --payload-file) or synthetic test lines.
func benchLines(b *testing.B) [][]byte {
	path := os.Getenv("FANAUDIT_KAFKA_PAYLOAD")
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	var out [][]byte
	for _, l := range bytes.SplitAfter(data, []byte("\n")) {
		if len(l) > 1 {
			out = append(out, l)
		}
	}
	return out
}

// BenchmarkSink measures throughput to the real broker with acks=all and
// the given compression, and the time from Queue.Push to broker ack: at
// saturation (rate 0, so latency is mostly queueing) and at a fixed rate.
// FANAUDIT_KAFKA_PAYLOAD=FILE sends real records (see benchLines).
func BenchmarkSink(b *testing.B) {
	brokers := testutil.KafkaBrokers(b)
	lines := benchLines(b)
	for _, bc := range []struct {
		name        string
		compression string
		perMs       int // events pushed per millisecond; 0 = as fast as possible
	}{
		{"zstd", "zstd", 0},
		{"lz4", "lz4", 0},
		{"snappy", "snappy", 0},
		{"none", "none", 0},
		{"zstd-5k-per-s", "zstd", 5},
		{"zstd-100k-per-s", "zstd", 100},
		{"lz4-100k-per-s", "lz4", 100},
	} {
		if f := os.Getenv("FANAUDIT_KAFKA_BENCH"); f != "" && !strings.Contains(","+f+",", ","+bc.name+",") {
			continue
		}
		compression := bc.compression
		b.Run(bc.name, func(b *testing.B) {
			topic := uniqueTopic(b)
			createTopic(b, brokers, topic, 1)
			cfg := testConfig(brokers, topic)
			cfg.Compression = compression
			if v, err := strconv.Atoi(os.Getenv("FANAUDIT_KAFKA_BATCH")); err == nil {
				cfg.BatchSize = v
				cfg.BatchBytes = max(cfg.BatchBytes, int64(v)*1024)
				cfg.MaxInFlightByte = max(cfg.MaxInFlightByte, 4*cfg.BatchBytes)
			}
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
				if len(lines) > 0 {
					items[i].Line = lines[i%len(lines)]
				}
			}
			q := queue.New("kafka", 8192, sinks.Block)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			var ru0 syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			cpu0 := time.Duration(ru0.Utime.Nano() + ru0.Stime.Nano())
			b.ResetTimer()
			start := time.Now()
			go func() { done <- s.Run(ctx, q) }()
			var tick *time.Ticker
			if bc.perMs > 0 {
				tick = time.NewTicker(time.Millisecond)
				defer tick.Stop()
			}
			for i := 1; i <= b.N; i++ {
				// Paced: keep to the schedule (i events by i/perMs ms after
				// start), catching up after a late tick instead of losing it.
				for tick != nil && time.Since(start) < time.Duration(i/bc.perMs)*time.Millisecond {
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
			var ru syscall.Rusage
			if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
				cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
				b.ReportMetric(float64(cpu-cpu0)/float64(b.N), "cpu-ns/event")
			}
			if st := s.Stats(); st.Spooled != 0 || st.Acked != uint64(b.N) {
				b.Fatalf("stats %+v", st)
			}
		})
	}
}

// BenchmarkReplay measures how fast a spool filled during an outage drains
// to the real broker once it is back (acks=all, zstd).
func BenchmarkReplay(b *testing.B) {
	brokers := testutil.KafkaBrokers(b)
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
