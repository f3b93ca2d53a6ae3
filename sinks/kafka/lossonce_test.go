package kafka

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/pipeline/queue"
	"github.com/fanaudit/fanaudit/internal/record"
	"github.com/fanaudit/fanaudit/internal/testutil"
	"github.com/fanaudit/fanaudit/sinks"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestEarlierDeadLetterAnnouncedOnce: run one spools 400 records, one
// of which the broker refuses for good. Run two replays the set holding
// it (dead-lettering that record) but stops while a set of the same read
// is still refused by an outage: the set after it (the replayer must
// commit the settled set before the next, or run three reads it again),
// or the same set (whose other records the outage holds up: nothing of
// an unfinished set may be settled). Run three replays the rest. The dead
// letter is announced once in all.
func TestEarlierDeadLetterAnnouncedOnce(t *testing.T) {
	for _, markSeq := range []uint64{20, 55} {
		t.Run(fmt.Sprint("seq=", markSeq), func(t *testing.T) { testEarlierDeadLetterAnnouncedOnce(t, markSeq) })
	}
}

func testEarlierDeadLetterAnnouncedOnce(t *testing.T, markSeq uint64) {
	const topic = "dlonce"
	const n = 400
	c := fakeCluster(t, topic)
	defer c.Close()
	var down, block2 atomic.Bool
	down.Store(true)
	block2.Store(true)
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.MessageTooLarge, Count: -1,
		When: func(r kmsg.Request) bool { return !down.Load() && produceCarries(r, marker) }})
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.NotLeaderForPartition, Count: -1,
		When: func(r kmsg.Request) bool {
			return down.Load() || block2.Load() && produceCarries(r, []byte(`"sequence":60,`))
		}})
	addr := c.ListenAddrs()[0]
	spoolDir := t.TempDir()
	newCfg := func() Config {
		cfg := testConfig(addr, topic)
		cfg.Compression = "none" // so the faults see the records
		cfg.BatchSize = 50
		cfg.Spool.Dir = spoolDir
		cfg.Spool.Fsync = "always"
		return cfg
	}
	r1 := startSink(t, newCfg(), "one")
	var ids []string
	for seq := uint64(1); seq <= n; seq++ {
		it := testItem(seq)
		if seq == markSeq {
			it = &sinks.Item{Seq: seq, Line: append(append([]byte(`{"m":"`), marker...), "\"}\n"...)}
		}
		if err := r1.q.Push(t.Context(), it); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, eventID("one", seq))
	}
	waitFor(t, 30*time.Second, "run one spooled", func() bool { return r1.sink.Stats().Spooled == n })
	if err := r1.closeAndWait(t, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	down.Store(false)

	key := queue.EarlierLoss{Reason: record.ReasonDeadLetter, RunID: "one"}
	r2 := startSink(t, newCfg(), "two")
	waitFor(t, 30*time.Second, "run two dead-lettered run one's record", func() bool { return r2.sink.Stats().ReplayDead == 1 })
	retries := r2.sink.Stats().Retries
	waitFor(t, 30*time.Second, "run two retrying the next set", func() bool { return r2.sink.Stats().Retries > retries })
	if err := r2.closeAndWait(t, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	announced := r2.q.TakeUnreported().Earlier[key]

	block2.Store(false)
	r3 := startSink(t, newCfg(), "three")
	waitFor(t, 60*time.Second, "delivery", r3.drained)
	if err := r3.closeAndWait(t, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	announced += r3.q.TakeUnreported().Earlier[key]
	d := check(ids, consumeKfake(t, c, topic))
	t.Logf("run one's records: %d missing at the consumer, dead_letter announced %d (runs two and three)", d.missing, announced)
	if uint64(d.missing) != announced {
		t.Errorf("consumer misses %d of run one's records, announced %d", d.missing, announced)
	}
}

// TestRewindGoneSettled: the replayer read two sets of the oldest
// segment and the broker acknowledged the first (settled as delivered,
// and committed, as the replayer does, before or after drop_oldest
// removes the segment); then the sink stops (rewind) before the second is
// acknowledged. Only the second set's records may be announced lost:
// every record appended is delivered, lost or handed off, once.
func TestRewindGoneSettled(t *testing.T) {
	for _, dropFirst := range []bool{false, true} {
		t.Run(fmt.Sprint("dropFirst=", dropFirst), func(t *testing.T) { testRewindGoneSettled(t, dropFirst) })
	}
}

func testRewindGoneSettled(t *testing.T, dropFirst bool) {
	var lost, appended int64
	s, add := dropRun(t, &lost, &appended, 2)
	rs, _, err := s.next(20, 1<<20)
	if err != nil || len(rs) != 2 {
		t.Fatalf("next: %d sets, %v", len(rs), err)
	}
	settled := s.settleRun(int64(rs[0].N)) // the first set acknowledged
	received := int64(rs[0].N)             // what the consumer gets
	first := s.segs[0].id
	if !dropFirst {
		if err := s.commit(rs[:1], rs[0].end); err != nil { // as the replayer does
			t.Fatal(err)
		}
	}
	for s.segs[0].id == first {
		add()
	}
	if dropFirst {
		if err := s.commit(rs[:1], rs[0].end); err != nil {
			t.Fatal(err)
		}
	}
	s.rewind() // the sink stops before the second set is acknowledged
	replay(t, s, 20, func(rs []spooled) {
		settled += s.settleRun(int64(countSpooled(rs)))
		received += int64(countSpooled(rs))
	})
	handed := s.takeRunOwed()
	t.Logf("appended %d: settled %d + lost %d + handed off %d; received %d", appended, settled, lost, handed, received)
	if received+lost != appended {
		t.Errorf("appended %d, but the consumer receives %d and %d are announced lost", appended, received, lost)
	}
	if settled+lost+handed != appended {
		t.Fatalf("appended %d, but settled %d + announced lost %d + handed off %d = %d", appended, settled, lost, handed, settled+lost+handed)
	}
}

// damageSecondSet flips a byte in the payload of the segment's second
// set (its header stays intact, so its count is known).
func damageSecondSet(t *testing.T, seg string) {
	t.Helper()
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, setMagicB)
	j := i + 1 + bytes.Index(b[i+1:], setMagicB)
	f, err := os.OpenFile(seg, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{b[j+setHeader+40] ^ 0xff}, int64(j+setHeader+40)); err != nil {
		t.Fatal(err)
	}
}

// TestThisRunDamagedHandedOff: a set of this run is damaged on disk;
// the replayer reads past it and its segment is deleted once the records
// after it are acknowledged, but the sink stops before the replay catches
// up with the writer. The damaged set's records must be announced, by
// this run or the next: appended = settled + announced lost (both runs) +
// read back by the next run.
func TestThisRunDamagedHandedOff(t *testing.T) {
	dir := t.TempDir()
	cfg := testSpoolCfg(dir)
	cfg.SegmentBytes = 16 << 10
	var lost int64
	s := openCounting(t, cfg, sinks.Block, &lost)
	appended := int64(0)
	for len(s.segs) < 3 {
		appendRun(t, s, int(appended), 10, 10)
		appended += 10
	}
	damageSecondSet(t, s.segPath(s.segs[0].id))
	// Replay until the first segment is gone, not to the end.
	settled := int64(0)
	first := s.segs[0].id
	for s.segs[0].id == first {
		rs, pos, err := s.next(20, 1<<20)
		if err != nil || len(rs) == 0 {
			t.Fatalf("next: %d, %v", len(rs), err)
		}
		settled += s.settleRun(int64(countSpooled(rs)))
		if err := s.commit(rs, pos); err != nil {
			t.Fatal(err)
		}
	}
	handed := s.takeRunOwed()
	s.close()

	s2 := openCounting(t, cfg, sinks.Block, &lost)
	defer s2.close()
	readBack := int64(0)
	replay(t, s2, 20, func(rs []spooled) { readBack += int64(countSpooled(rs)) })
	t.Logf("appended %d: settled %d, handed off %d, read back by the next run %d, announced lost %d", appended, settled, handed, readBack, lost)
	if settled+readBack+lost != appended {
		t.Fatalf("appended %d, but settled %d + read back %d + announced lost %d = %d", appended, settled, readBack, lost, settled+readBack+lost)
	}
}

// TestThisRunDamagedDroppedOnce: a set of this run is damaged on disk and
// the replayer reads past it; drop_oldest then removes its segment, after
// the replayer committed past the set (which announced it) or before (the
// replayer's commit then lands in the removed segment). Its records are
// announced once: what the consumer receives plus what is announced lost
// is what was appended.
func TestThisRunDamagedDroppedOnce(t *testing.T) {
	for _, commitFirst := range []bool{true, false} {
		t.Run(fmt.Sprint("commitFirst=", commitFirst), func(t *testing.T) {
			var lost, appended int64
			s, add := dropRun(t, &lost, &appended, 2)
			damageSecondSet(t, s.segPath(s.segs[0].id))
			rs, pos, err := s.next(20, 1<<20) // the first and third sets
			if err != nil || countSpooled(rs) != 20 || pos.seg != s.segs[0].id {
				t.Fatalf("next: %d records at %v, %v", countSpooled(rs), pos, err)
			}
			received := int64(countSpooled(rs))
			settled := s.settleRun(received)
			if commitFirst {
				if err := s.commit(rs, pos); err != nil {
					t.Fatal(err)
				}
				if lost != 10 {
					t.Fatalf("the damaged set's commit announced %d, want 10", lost)
				}
			}
			first := s.segs[0].id
			for s.segs[0].id == first {
				add()
			}
			if !commitFirst {
				if err := s.commit(rs, pos); err != nil {
					t.Fatal(err)
				}
			}
			replay(t, s, 20, func(rs []spooled) {
				received += int64(countSpooled(rs))
				settled += s.settleRun(int64(countSpooled(rs)))
			})
			handed := s.takeRunOwed()
			t.Logf("appended %d: received %d (settled %d), announced lost %d, handed off %d", appended, received, settled, lost, handed)
			if received+lost != appended || settled != received || handed != 0 {
				t.Fatalf("appended %d, but received %d (settled %d) + announced lost %d, handed off %d", appended, received, settled, lost, handed)
			}
		})
	}
}

// TestThisRunTornTailNotAnnounced: a write that fills the disk leaves a
// torn set at the end of its segment; the append fails, so its records
// were never owed to the spool (the sink keeps them). The replayer reads
// past the torn set and commits: nothing may be announced lost for it.
func TestThisRunTornTailNotAnnounced(t *testing.T) {
	mnt := testutil.TmpfsMount(t, "256k")
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, 128<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testSpoolCfg(filepath.Join(mnt, "spool"))
	cfg.SegmentBytes = 1 << 20
	cfg.MaxBytes = 4 << 20
	var lost int64
	s := openCounting(t, cfg, sinks.Block, &lost)
	defer s.close()
	appended := int64(0)
	for {
		// Sets of 50 records, so that one is cut by the end of the space.
		err := s.appendSets(t.Context(), testSets(t, "none", 50, setMsgs(int(appended), 50)))
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
		appended += 50
	}
	if !s.segs[len(s.segs)-1].torn {
		t.Fatal("no torn set left by the failed write")
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	// Into a new segment, after the torn one: more than one read's worth,
	// so that records are still owed when the replayer commits past the
	// torn set.
	for range 3 {
		appendRun(t, s, int(appended), 50, 50)
		appended += 50
	}
	received, settled := int64(0), int64(0)
	replay(t, s, 100, func(rs []spooled) {
		received += int64(countSpooled(rs))
		settled += s.settleRun(int64(countSpooled(rs)))
	})
	t.Logf("appended %d: received %d (settled %d), announced lost %d", appended, received, settled, lost)
	if lost != 0 || received != appended || settled != appended {
		t.Fatalf("appended %d: received %d (settled %d), announced lost %d", appended, received, settled, lost)
	}
}
