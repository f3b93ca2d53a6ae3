package kafka

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/pipeline/queue"
	"github.com/fanaudit/fanaudit/sinks"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestDirectFailureAfterSpooled: the first batch goes straight to the
// broker, whose answer kfake holds back until every later batch is in the
// spool (a window of one batch sends them there), then drops the
// connection. The failed batch is older than everything in the spool, so
// it is retried from memory while the replayer holds the spool back:
//   - broker back: it arrives before the spooled batches, every record in
//     event.sequence order, nothing spooled for it;
//   - stop during the outage: it is spooled behind them (the documented
//     reordering), the queue settles everything as handed off with no loss,
//     and the next run delivers all of it.
func TestDirectFailureAfterSpooled(t *testing.T) {
	const topic = "memretry"
	const n, first = 300, 10 // first: the direct batch (batch_size)
	for _, stop := range []bool{false, true} {
		name := "broker back"
		if stop {
			name = "stop during the outage"
		}
		t.Run(name, func(t *testing.T) {
			c := fakeCluster(t, topic)
			defer c.Close()
			release := make(chan struct{})
			var held, outage atomic.Bool
			outage.Store(stop)
			c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
				c.KeepControl()
				if held.CompareAndSwap(false, true) {
					c.SleepControl(func() { <-release })
					return nil, errors.New("drop the connection"), true
				}
				if outage.Load() {
					return nil, errors.New("drop the connection"), true
				}
				return nil, nil, false
			})
			cfg := testConfig(c.ListenAddrs()[0], topic)
			cfg.WriteTimeout = Duration{60 * time.Second} // the held request fails when the test says
			cfg.BatchSize = first
			// Room for one direct batch at a time: the rest is spooled.
			cfg.MaxMessageBytes, cfg.BatchBytes, cfg.MaxInFlightByte = 4096, 6000, 6000
			spoolDir := t.TempDir()
			cfg.Spool.Dir = spoolDir
			s, err := New(cfg, testHost, "mem", testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			// Queued before Run, so the first batch is exactly the first
			// batch_size records.
			q := queue.New("kafka", 4096, sinks.Block)
			for seq := uint64(1); seq <= n; seq++ {
				if err := q.Push(t.Context(), testItem(seq)); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r := &running{sink: s, runID: "mem", q: q, done: make(chan error, 1), stop: cancel}
			go func() { r.done <- s.Run(ctx, q) }()
			t.Cleanup(func() {
				cancel()
				q.Close()
				<-r.done
			})
			waitFor(t, 30*time.Second, "later batches spooled", func() bool { return s.Stats().Spooled == n-first })
			close(release)
			waitFor(t, 30*time.Second, "the first batch retried from memory", func() bool {
				st := s.Stats()
				// Stopping: at least one more failed attempt from memory.
				return st.MemoryRetried == first && (!stop || st.Retries >= 2*first)
			})
			if !stop {
				waitFor(t, 60*time.Second, "delivery", r.drained)
			}
			if err := r.closeAndWait(t, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			st := s.Stats()
			qs := settledQueue(t, q)
			t.Logf("sink %+v queue %+v", st, qs)
			if qs.Delivered != n || qs.Dropped != 0 || qs.InFlight != 0 {
				t.Fatalf("queue %+v: want all %d settled as delivered, none lost", qs, n)
			}
			if u := q.TakeUnreported(); len(u.Reasons) != 0 {
				t.Fatalf("losses reported: %+v", u)
			}
			var want []uint64
			if !stop {
				if st.Spooled != n-first || st.Acked != first || st.Replayed != n-first || st.HandedOff != 0 {
					t.Fatalf("stats %+v: want %d acked from memory, %d spooled and replayed", st, first, n-first)
				}
				for seq := uint64(1); seq <= n; seq++ {
					want = append(want, seq)
				}
			} else {
				if st.Spooled != n || st.Acked != 0 || st.HandedOff != n {
					t.Fatalf("stats %+v: want all %d spooled and handed off", st, n)
				}
				// The next run, broker back, replays the spool in its order:
				// the batch retried from memory was spooled behind the rest.
				outage.Store(false)
				cfg2 := cfg
				s2, err := New(cfg2, testHost, "mem2", testLogger(t))
				if err != nil {
					t.Fatal(err)
				}
				r2 := startExisting(t, s2, "mem2")
				waitFor(t, 60*time.Second, "replay of the first run", func() bool { return s2.Stats().Replayed == n })
				if err := r2.closeAndWait(t, 30*time.Second); err != nil {
					t.Fatal(err)
				}
				if st2 := s2.Stats(); st2.LostEarlier != 0 || st2.DeadLettered != 0 || st2.SpoolPending != 0 {
					t.Fatalf("second run %+v: want nothing lost, spool empty", st2)
				}
				for seq := uint64(first + 1); seq <= n; seq++ {
					want = append(want, seq)
				}
				for seq := uint64(1); seq <= first; seq++ {
					want = append(want, seq)
				}
			}
			var got []uint64
			seen := map[uint64]bool{}
			for _, id := range consumeOrdered(t, c.ListenAddrs()[0], topic) {
				if seq := seqOfID(id); !seen[seq] {
					seen[seq] = true
					got = append(got, seq)
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("partition order %v\nwant %v", got, want)
			}
		})
	}
}
