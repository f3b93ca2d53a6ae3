package kafka

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// waitFor polls cond until it holds or the deadline passes; it is for
// conditions that depend on an external process (the broker).
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// drained reports that every pushed item was settled and the spool is empty.
func (r *running) drained() bool {
	qs := r.q.Stats()
	return qs.Depth == 0 && qs.InFlight == 0 && r.sink.Stats().SpoolPending == 0
}

// pusher pushes items at a steady rate until stopped.
type pusher struct {
	r    *running
	mu   sync.Mutex
	ids  []string
	next uint64
}

func (p *pusher) run(ctx context.Context, perTick int, every time.Duration) error {
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C:
		}
		for range perTick {
			p.mu.Lock()
			p.next++
			seq := p.next
			p.mu.Unlock()
			if err := p.r.q.Push(ctx, testItem(seq)); err != nil {
				if errors.Is(err, context.Canceled) {
					p.mu.Lock()
					p.next--
					p.mu.Unlock()
					return nil
				}
				return err
			}
			p.mu.Lock()
			p.ids = append(p.ids, eventID(p.r.runID, seq))
			p.mu.Unlock()
		}
	}
}

func (p *pusher) sent() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.ids...)
}

// outageDown is how long the broker stays dead; FANAUDIT_KAFKA_OUTAGE
// shortens it for local iteration.
func outageDown() time.Duration {
	if v, err := time.ParseDuration(os.Getenv("FANAUDIT_KAFKA_OUTAGE")); err == nil {
		return v
	}
	return 30 * time.Second
}

// TestBrokerCrash kills the broker with SIGKILL under load, keeps it down,
// restarts it on the same data directory and checks that no event id is
// missing. Duplicates are reported, not hidden.
func TestBrokerCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: 30 s outage")
	}
	b := startOwnBroker(t)
	topic := uniqueTopic(t)
	createTopic(t, b.addr, topic, 1)
	cfg := testConfig(b.addr, topic)
	cfg.Spool.Dir = t.TempDir()
	cfg.Spool.Fsync = "interval"
	r := startSink(t, cfg, "crash")
	p := &pusher{r: r}
	pctx, stopPush := context.WithCancel(context.Background())
	pushed := make(chan error, 1)
	go func() { pushed <- p.run(pctx, 20, 10*time.Millisecond) }() // ~2000 events/s
	defer stopPush()

	waitFor(t, 30*time.Second, "first acks", func() bool { return r.sink.Stats().Acked > 2000 })
	b.kill()
	killedAt := time.Now()
	t.Logf("broker killed after %d acks", r.sink.Stats().Acked)
	waitFor(t, 30*time.Second, "spooling", func() bool { return r.sink.Stats().Spooled > 0 })
	down := outageDown()
	select {
	case <-time.After(time.Until(killedAt.Add(down))):
	case err := <-pushed:
		t.Fatalf("pusher stopped during the outage: %v", err)
	}
	b.restart()
	t.Logf("broker restarted after %s down; spool pending %d", time.Since(killedAt).Round(time.Second), r.sink.Stats().SpoolPending)
	waitFor(t, 60*time.Second, "post-restart acks", func() bool { return r.sink.Stats().Replayed > 0 })
	stopPush()
	if err := <-pushed; err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, "spool drained", r.drained)
	if err := r.closeAndWait(t, 30*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	ids := p.sent()
	d := check(ids, consumeIDs(t, b.addr, topic, len(ids), 60*time.Second))
	st := r.sink.Stats()
	t.Logf("broker crash: sent %d delivered %d duplicates %d missing %d (down %s); sink %+v", d.sent, d.delivered, d.duplicates, d.missing, down, st)
	settledQueue(t, r.q)
	if d.missing != 0 {
		t.Fatalf("%d of %d event ids missing", d.missing, d.sent)
	}
	if st.Spooled == 0 || st.Replayed == 0 {
		t.Errorf("outage did not go through the spool: %+v", st)
	}
}

// TestRestartDuringOutage stops the agent while the broker is unreachable
// and starts a new one on the same spool directory: the spooled events are
// delivered after the restart, before the new run's events.
func TestRestartDuringOutage(t *testing.T) {
	brokers := testutil.KafkaBrokers(t)
	deadAddr := "127.0.0.1:" + strconv.Itoa(freePort(t)) // nothing listens here
	tests := []struct {
		name string
		stop func(t *testing.T, r *running) error
	}{
		{"queue closed (SIGTERM drain)", func(t *testing.T, r *running) error { return r.closeAndWait(t, 30*time.Second) }},
		{"context cancelled", func(t *testing.T, r *running) error {
			waitFor(t, 30*time.Second, "queue taken", func() bool { return r.q.Stats().Depth == 0 })
			r.stop()
			err := <-r.done
			r.done <- err // for the cleanup
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topic := uniqueTopic(t)
			createTopic(t, brokers, topic, 1)
			spoolDir := t.TempDir()

			cfg1 := testConfig(deadAddr, topic)
			cfg1.Spool.Dir = spoolDir
			cfg1.WriteTimeout = Duration{time.Second}
			r1 := startSink(t, cfg1, "first")
			ids := r1.push(t, 1, 3000)
			err := tt.stop(t, r1)
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Fatalf("first Run: %v", err)
			}
			qs := settledQueue(t, r1.q)
			if qs.InFlight != 0 || qs.Dropped != 0 || qs.Delivered != 3000 {
				t.Fatalf("first run left %+v; want everything spooled", qs)
			}
			if st := r1.sink.Stats(); st.HandedOff != 3000 {
				t.Fatalf("handed off %d records to the next run, want 3000 (%+v)", st.HandedOff, st)
			}
			if st := r1.sink.Stats(); st.SpoolPending != 3000 {
				t.Fatalf("spool holds %d records, want 3000 (%+v)", st.SpoolPending, st)
			}

			cfg2 := testConfig(brokers, topic)
			cfg2.Spool.Dir = spoolDir
			r2 := startSink(t, cfg2, "second")
			ids = append(ids, r2.push(t, 1, 1000)...)
			waitFor(t, 60*time.Second, "spool drained", r2.drained)
			if err := r2.closeAndWait(t, 30*time.Second); err != nil {
				t.Fatalf("second Run: %v", err)
			}
			seen := consumeIDs(t, brokers, topic, len(ids), 60*time.Second)
			d := check(ids, seen)
			t.Logf("sent %d delivered %d duplicates %d missing %d; second sink %+v", d.sent, d.delivered, d.duplicates, d.missing, r2.sink.Stats())
			if d.missing != 0 {
				t.Fatalf("%d event ids missing", d.missing)
			}
			assertOrder(t, brokers, topic)
		})
	}
}

// assertOrder checks that the first run's events precede the second's and
// that each run's sequence numbers are increasing in the partition.
func assertOrder(t *testing.T, brokers, topic string) {
	t.Helper()
	seen := consumeOrdered(t, brokers, topic)
	lastRun, last := "", uint64(0)
	for _, id := range seen {
		parts := strings.Split(id, ":")
		run := parts[2]
		seq, _ := strconv.ParseUint(parts[3], 10, 64)
		switch {
		case run == lastRun && seq <= last:
			// A duplicate re-send; allowed, but must not reorder forward.
			continue
		case run != lastRun && lastRun == "second":
			t.Fatalf("event %s of run %s after run second began", id, run)
		}
		lastRun, last = run, seq
	}
}

func consumeOrdered(t *testing.T, brokers, topic string) []string {
	t.Helper()
	out, err := kcatOutput(brokers, topic)
	if err != nil {
		t.Fatalf("kcat: %v", err)
	}
	var ids []string
	for _, line := range strings.Split(out, "\n") {
		for _, h := range strings.Split(line, ",") {
			if id, ok := strings.CutPrefix(h, HeaderEventID+"="); ok {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

func kcatOutput(brokers, topic string) (string, error) {
	cmd := exec.Command("kcat", "-C", "-b", brokers, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%h\n")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("kcat: %w", err)
	}
	return string(out), nil
}
