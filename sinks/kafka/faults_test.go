package kafka

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/testutil"
	"github.com/fanaudit/fanaudit/sinks"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// marker appears in the value of exactly one item, so a fault can target
// the produce requests that carry it.
var marker = []byte("FAULT-TARGET")

func produceCarries(req kmsg.Request, b []byte) bool {
	pr, ok := req.(*kmsg.ProduceRequest)
	if !ok {
		return false
	}
	for _, t := range pr.Topics {
		for _, p := range t.Partitions {
			if bytes.Contains(p.Records, b) {
				return true
			}
		}
	}
	return false
}

// TestProtocolFaults injects produce errors with kfake and checks the
// documented behaviour: retriable errors are retried (through the spool
// when there is one) and everything arrives; MessageTooLarge rejects only
// the offending record, which is dead-lettered and counted as failed.
func TestProtocolFaults(t *testing.T) {
	const topic = "faults"
	const n = 500
	tests := []struct {
		name      string
		spool     bool
		inject    func(c *kfake.Cluster)
		wantDead  int
		wantRetry bool
	}{
		{"not enough replicas, spool", true, func(c *kfake.Cluster) {
			c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.NotEnoughReplicas, Count: 3})
		}, 0, true},
		{"not enough replicas, memory retry", false, func(c *kfake.Cluster) {
			c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.NotEnoughReplicas, Count: 3})
		}, 0, true},
		{"not leader for partition, spool", true, func(c *kfake.Cluster) {
			c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.NotLeaderForPartition, Count: 3})
		}, 0, true},
		{"not leader for partition, memory retry", false, func(c *kfake.Cluster) {
			c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.NotLeaderForPartition, Count: 3})
		}, 0, true},
		{"message too large", true, func(c *kfake.Cluster) {
			c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.MessageTooLarge, Count: -1,
				When: func(r kmsg.Request) bool { return produceCarries(r, marker) }})
		}, 1, false},
		{"dropped connection, spool", true, func(c *kfake.Cluster) {
			c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
				return nil, errors.New("drop the connection"), true
			})
		}, 0, true},
		{"dropped connection, memory retry", false, func(c *kfake.Cluster) {
			c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
				return nil, errors.New("drop the connection"), true
			})
		}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := fakeCluster(t, topic)
			defer c.Close()
			tt.inject(c)
			cfg := testConfig(c.ListenAddrs()[0], topic)
			cfg.Compression = "none" // so faults can see the marker
			cfg.WriteTimeout = Duration{2 * time.Second}
			cfg.DeadLetterFile = filepath.Join(t.TempDir(), "dead.jsonl")
			if tt.spool {
				cfg.Spool.Dir = t.TempDir()
			}
			r := startSink(t, cfg, "faults")
			var ids []string
			for seq := uint64(1); seq <= n; seq++ {
				it := testItem(seq)
				if seq == n/2 {
					it.Line = append(append([]byte(`{"m":"`), marker...), "\"}\n"...)
				}
				if err := r.q.Push(t.Context(), it); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, eventID("faults", seq))
			}
			waitFor(t, 60*time.Second, "delivery", r.drained)
			if err := r.closeAndWait(t, 30*time.Second); err != nil {
				t.Fatalf("Run: %v", err)
			}
			st := r.sink.Stats()
			qs := settledQueue(t, r.q)
			t.Logf("sink %+v queue %+v", st, qs)
			if int(st.DeadLettered) != tt.wantDead {
				t.Errorf("dead-lettered %d, want %d", st.DeadLettered, tt.wantDead)
			}
			if tt.wantRetry && st.Retries == 0 {
				t.Error("no retry recorded")
			}
			if qs.Dropped != uint64(tt.wantDead) {
				t.Errorf("queue dropped %d, want %d", qs.Dropped, tt.wantDead)
			}
			if u := r.q.TakeUnreported(); u.Reasons["dead_letter"] != uint64(tt.wantDead) || u.Reasons["sink_error"] != 0 {
				t.Errorf("unreported %+v, want %d dead_letter", u, tt.wantDead)
			}
			dead := readDeadLetters(t, cfg.DeadLetterFile)
			if len(dead) != tt.wantDead {
				t.Fatalf("dead-letter file has %d lines, want %d", len(dead), tt.wantDead)
			}
			if tt.wantDead == 1 && dead[0].EventID != eventID("faults", n/2) {
				t.Errorf("dead letter for %s, want %s", dead[0].EventID, eventID("faults", n/2))
			}
			seen := consumeKfake(t, c, topic)
			want := ids
			if tt.wantDead == 1 {
				want = append(append([]string{}, ids[:n/2-1]...), ids[n/2:]...)
			}
			if d := check(want, seen); d.missing != 0 {
				t.Fatalf("%d of %d ids missing", d.missing, d.sent)
			}
		})
	}
}

func readDeadLetters(t *testing.T, path string) []deadLetter {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []deadLetter
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var d deadLetter
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			t.Fatalf("dead-letter line %q: %v", sc.Text(), err)
		}
		out = append(out, d)
	}
	return out
}

// fakeCluster starts a kfake cluster of one broker with topic (one
// partition); the caller closes it.
func fakeCluster(t *testing.T, topic string) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topic))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// consumeKfake reads the topic back with kcat against kfake.
func consumeKfake(t *testing.T, c *kfake.Cluster, topic string) map[string]int {
	t.Helper()
	return consumeIDs(t, c.ListenAddrs()[0], topic, 1, 10*time.Second)
}

// TestOversizeRejectedLocally checks that a record over max_message_bytes
// never reaches the broker and is dead-lettered.
func TestOversizeRejectedLocally(t *testing.T) {
	c := fakeCluster(t, "t")
	defer c.Close()
	cfg := testConfig(c.ListenAddrs()[0], "t")
	cfg.MaxMessageBytes = 2048
	cfg.BatchBytes = 4096
	cfg.MaxInFlightByte = 8192
	r := startSink(t, cfg, "big")
	big := &sinks.Item{Seq: 1, Line: append(bytes.Repeat([]byte("x"), 5000), '\n')}
	if err := r.q.Push(t.Context(), big); err != nil {
		t.Fatal(err)
	}
	r.push(t, 2, 10)
	waitFor(t, 30*time.Second, "delivery", r.drained)
	if err := r.closeAndWait(t, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	qs := settledQueue(t, r.q)
	if qs.Dropped != 1 || qs.Delivered != 10 || r.sink.Stats().DeadLettered != 1 {
		t.Fatalf("queue %+v sink %+v; want 1 dropped, 10 delivered", qs, r.sink.Stats())
	}
}

// TestUnknownTopicIsAnOutage checks that a topic the cluster does not
// have (and does not create) is an outage, not a loss: records are spooled
// and stay in flight, nothing is dead-lettered, and once the topic exists
// everything arrives.
func TestUnknownTopicIsAnOutage(t *testing.T) {
	c := fakeCluster(t, "other")
	defer c.Close()
	cfg := testConfig(c.ListenAddrs()[0], "missing")
	cfg.DeadLetterFile = filepath.Join(t.TempDir(), "dead.jsonl")
	cfg.Spool.Dir = t.TempDir()
	r := startSink(t, cfg, "unknown")
	ids := r.push(t, 1, 20)
	waitFor(t, 30*time.Second, "records spooled", func() bool { return r.sink.Stats().Spooled == 20 })
	waitFor(t, 30*time.Second, "a replay retry", func() bool { return r.sink.Stats().Retries > 20 })
	if qs := settledQueue(t, r.q); qs.Delivered != 0 || qs.Dropped != 0 || qs.InFlight != 20 {
		t.Fatalf("during the outage: queue %+v; want all 20 in flight", qs)
	}
	createTopic(t, c.ListenAddrs()[0], "missing", 1)
	waitFor(t, 60*time.Second, "delivery", r.drained)
	if err := r.closeAndWait(t, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if qs := settledQueue(t, r.q); qs.Dropped != 0 || qs.Delivered != 20 || r.sink.Stats().DeadLettered != 0 {
		t.Fatalf("queue %+v sink %+v; want 20 delivered, nothing dead-lettered", qs, r.sink.Stats())
	}
	if d := check(ids, consumeKfake(t, c, "missing")); d.missing != 0 {
		t.Fatalf("%d of %d missing", d.missing, d.sent)
	}
}

// holdFirstProduce makes c hold the first produce request until release
// is closed, then answer it normally; held is closed once it is held.
func holdFirstProduce(c *kfake.Cluster) (held <-chan struct{}, release chan struct{}) {
	release = make(chan struct{})
	h := make(chan struct{})
	var once sync.Once
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		first := false
		once.Do(func() { first = true })
		if !first {
			return nil, nil, false
		}
		close(h)
		c.SleepControl(func() { <-release })
		return nil, nil, false // now let the cluster answer it normally
	})
	return h, release
}

// releaseAndClose lets the held request go, waits until every record is
// settled and closes the sink; it returns the sink's stats.
func releaseAndClose(t *testing.T, r *running, release chan struct{}) Stats {
	t.Helper()
	close(release)
	waitFor(t, 30*time.Second, "delivery", r.drained)
	if err := r.closeAndWait(t, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	st := r.sink.Stats()
	t.Logf("sink %+v", st)
	return st
}

// TestWindowFullSpools holds the first produce request at the broker so
// the in-flight window fills: later batches must go to the spool instead
// of blocking the queue, and everything arrives once the broker answers.
func TestWindowFullSpools(t *testing.T) {
	const topic = "slow"
	c := fakeCluster(t, topic)
	defer c.Close()
	held, release := holdFirstProduce(c)
	cfg := testConfig(c.ListenAddrs()[0], topic)
	cfg.MaxMessageBytes, cfg.BatchBytes, cfg.MaxInFlightByte, cfg.BatchSize = 2048, 4096, 4096, 10
	cfg.Spool.Dir = t.TempDir()
	r := startSink(t, cfg, "slow")
	ids := r.push(t, 1, 200)
	<-held
	// The queue must empty into the spool while the broker still stalls.
	waitFor(t, 30*time.Second, "queue emptied into the spool while the broker stalls", func() bool {
		return r.sink.Stats().Spooled > 0 && r.q.Stats().Depth == 0
	})
	releaseAndClose(t, r, release)
	if d := check(ids, consumeKfake(t, c, topic)); d.missing != 0 {
		t.Fatalf("%d of %d missing", d.missing, d.sent)
	}
}

// TestSpoolDiskFullSendsFromMemory: batches bound for the spool (the
// first request is held at the broker, so the window is full) are encoded
// as record sets; when the spool's disk is full they are sent from memory
// instead, and everything arrives once the broker answers.
func TestSpoolDiskFullSendsFromMemory(t *testing.T) {
	const topic = "diskfull"
	c := fakeCluster(t, topic)
	defer c.Close()
	held, release := holdFirstProduce(c)
	cfg := testConfig(c.ListenAddrs()[0], topic)
	cfg.MaxMessageBytes, cfg.BatchBytes, cfg.MaxInFlightByte, cfg.BatchSize = 2048, 4096, 4096, 10
	cfg.Compression = "none" // so 200 records do not fit the 16 KiB disk
	cfg.Spool.Dir = filepath.Join(testutil.TmpfsMount(t, "16k"), "spool")
	r := startSink(t, cfg, "diskfull")
	ids := r.push(t, 1, 200)
	<-held
	waitFor(t, 30*time.Second, "queue emptied while the broker stalls and the disk is full", func() bool {
		return r.q.Stats().Depth == 0
	})
	st := releaseAndClose(t, r, release)
	if st.Spooled >= 190 {
		t.Fatalf("spooled %d of 200 records on a 16 KiB disk: the disk never filled", st.Spooled)
	}
	if qs := settledQueue(t, r.q); qs.Delivered != 200 || qs.Dropped != 0 {
		t.Fatalf("queue %+v, want 200 delivered", qs)
	}
	if d := check(ids, consumeKfake(t, c, topic)); d.missing != 0 {
		t.Fatalf("%d of %d missing", d.missing, d.sent)
	}
}

// TestSilentBrokerNeverHangs points the sink at a listener that accepts
// connections and never answers: every call must end at write_timeout, the
// records must be spooled, and Run must return once the queue closes.
func TestSilentBrokerNeverHangs(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var conns sync.WaitGroup
	conns.Add(1)
	go func() {
		defer conns.Done()
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c) // read nothing, answer nothing
		}
	}()
	cfg := testConfig(l.Addr().String(), "t")
	cfg.WriteTimeout = Duration{500 * time.Millisecond}
	cfg.Spool.Dir = t.TempDir()
	r := startSink(t, cfg, "silent")
	r.push(t, 1, 100)
	waitFor(t, 20*time.Second, "records spooled", func() bool { return r.sink.Stats().Spooled == 100 })
	start := time.Now()
	if err := r.closeAndWait(t, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("Run returned %s after the queue closed; sink %+v", time.Since(start).Round(time.Millisecond), r.sink.Stats())
	if qs := settledQueue(t, r.q); qs.Delivered != 100 {
		t.Fatalf("queue %+v", qs)
	}
	l.Close()
	conns.Wait()
}
