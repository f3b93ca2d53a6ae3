package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/record"
	"github.com/fanaudit/fanaudit/sinks"
)

func testSpoolCfg(dir string) Spool {
	return Spool{Dir: dir, MaxBytes: 1 << 20, SegmentBytes: 4096, Fsync: "always", FsyncInterval: Duration{time.Second}}
}

func recs(from, n int) []spoolRec {
	out := make([]spoolRec, n)
	for i := range out {
		out[i] = spoolRec{ID: fmt.Sprintf("h:b:r:%d", from+i), Key: []byte("h"), Value: []byte(fmt.Sprintf(`{"n":%d}`, from+i))}
	}
	return out
}

// drain reads and commits everything, returning the ids in order.
func drain(t *testing.T, s *spool) []string {
	t.Helper()
	var ids []string
	replay(t, s, 7, func(rs []spooled) {
		for _, r := range rs {
			ids = append(ids, string(r.ID))
		}
	})
	return ids
}

// replay reads (maxN records a read) and commits until the spool is
// empty, handing each read to seen before its commit, as the replayer
// settles a read before it commits it; the last, empty read too. The
// spool reuses its read buffer on the next read: seen copies what it
// keeps.
func replay(t *testing.T, s *spool, maxN int, seen func(rs []spooled)) {
	t.Helper()
	for {
		rs, pos, err := s.next(maxN, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		seen(rs)
		if err := s.commit(rs, pos); err != nil {
			t.Fatal(err)
		}
		if len(rs) == 0 {
			return
		}
	}
}

// openDropByRun opens a drop_oldest spool on cfg with MaxBytes of three
// segments, closed when the test ends; lost adds up its announced losses
// by run.
func openDropByRun(t *testing.T, cfg Spool) (s *spool, lost map[string]int64) {
	t.Helper()
	cfg.MaxBytes = 3 * cfg.SegmentBytes
	lost = map[string]int64{}
	s, err := openSpool(cfg, sinks.DropOldest, func(reason, run string, k int64) { lost[run] += k })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.close() })
	return s, lost
}

// replayEarlier replays everything (7 records a read), settling this
// run's records as the replayer does, and returns how many of the earlier
// run's records (run r) it read back.
func replayEarlier(t *testing.T, s *spool) int64 {
	t.Helper()
	earlier := int64(0)
	replay(t, s, 7, func(rs []spooled) {
		ours := int64(0)
		for _, r := range rs {
			if runOfID(string(r.ID)) == "r" {
				earlier += int64(r.records())
			} else {
				ours += int64(r.records())
			}
		}
		s.settleRun(ours)
	})
	return earlier
}

// firstSegment is the path and the contents of the first segment of the
// spool in dir.
func firstSegment(t *testing.T, dir string) (seg string, b []byte) {
	t.Helper()
	seg = filepath.Join(dir, "seg-00000000000000000001.log")
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	return seg, b
}

// openCounting opens a spool whose announced losses add up in *lost.
func openCounting(t *testing.T, cfg Spool, policy sinks.Policy, lost *int64) *spool {
	t.Helper()
	s, err := openSpool(cfg, policy, func(reason, run string, n int64) { *lost += n })
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func wantIDs(from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("h:b:r:%d", from+i)
	}
	return out
}

func TestSpoolOrderAndRestart(t *testing.T) {
	tests := []struct {
		name      string
		write     int
		ackBefore int // records read and committed before the restart
	}{
		{"empty", 0, 0},
		{"one segment", 10, 0},
		{"many segments", 500, 0},
		{"partly acked", 500, 123},
		{"fully acked", 50, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := openSpool(testSpoolCfg(dir), sinks.Block, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.append(context.Background(), recs(0, tt.write)); err != nil {
				t.Fatal(err)
			}
			acked := 0
			for acked < tt.ackBefore {
				rs, pos, err := s.next(min(7, tt.ackBefore-acked), 1<<20)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.commit(rs, pos); err != nil {
					t.Fatal(err)
				}
				acked += len(rs)
			}
			// An unacknowledged read must come back after the restart.
			if _, _, err := s.next(3, 1<<20); err != nil {
				t.Fatal(err)
			}
			if err := s.close(); err != nil {
				t.Fatal(err)
			}
			s2, err := openSpool(testSpoolCfg(dir), sinks.Block, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := s2.stats().Pending; got != int64(tt.write-tt.ackBefore) {
				t.Errorf("pending after restart = %d, want %d", got, tt.write-tt.ackBefore)
			}
			if err := s2.append(context.Background(), recs(tt.write, 5)); err != nil {
				t.Fatal(err)
			}
			got := drain(t, s2)
			want := wantIDs(tt.ackBefore, tt.write-tt.ackBefore+5)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("replayed %d ids %v…, want %d %v…", len(got), head(got), len(want), head(want))
			}
			if !s2.empty() {
				t.Error("spool not empty after draining")
			}
			if st := s2.stats(); st.Bytes != 0 {
				t.Errorf("spool keeps %d bytes after draining", st.Bytes)
			}
			s2.close()
		})
	}
}

func head(s []string) []string { return s[:min(3, len(s))] }

func TestSpoolCorruptRecordSkipped(t *testing.T) {
	tests := []struct {
		name    string
		corrupt func(b []byte) []byte
		lost    int
	}{
		{"flipped payload byte", func(b []byte) []byte { b[len(b)/2] ^= 0xff; return b }, 1},
		{"torn tail", func(b []byte) []byte { return b[:len(b)-3] }, 1},
		{"garbage length", func(b []byte) []byte { b[5] = 0xff; return b }, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := openSpool(testSpoolCfg(dir), sinks.Block, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.append(context.Background(), recs(0, 20)); err != nil {
				t.Fatal(err)
			}
			s.close()
			seg, b := firstSegment(t, dir)
			if err := os.WriteFile(seg, tt.corrupt(b), 0o600); err != nil {
				t.Fatal(err)
			}
			s2, err := openSpool(testSpoolCfg(dir), sinks.Block, nil)
			if err != nil {
				t.Fatal(err)
			}
			got := drain(t, s2)
			if len(got) != 20-tt.lost || s2.stats().Corrupt == 0 {
				t.Fatalf("got %d records and %d corrupt, want %d and ≥1", len(got), s2.stats().Corrupt, 20-tt.lost)
			}
			s2.close()
		})
	}
}

func TestSpoolWhenFull(t *testing.T) {
	tests := []struct {
		policy   sinks.Policy
		wantErr  error
		wantDrop bool
	}{
		{sinks.DropNewest, errSpoolFull, false},
		{sinks.DropOldest, nil, true},
		{sinks.Block, context.DeadlineExceeded, false},
	}
	for _, tt := range tests {
		t.Run(tt.policy.String(), func(t *testing.T) {
			cfg := testSpoolCfg(t.TempDir())
			cfg.MaxBytes = 3 * cfg.SegmentBytes
			s, err := openSpool(cfg, tt.policy, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.close()
			var last error
			for i := 0; i < 1000 && last == nil; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
				last = s.append(ctx, recs(i*10, 10))
				cancel()
				if tt.wantDrop && s.stats().Dropped > 0 {
					break
				}
			}
			if tt.wantErr != nil && !errors.Is(last, tt.wantErr) {
				t.Fatalf("append on a full spool: %v, want %v", last, tt.wantErr)
			}
			if st := s.stats(); st.Bytes > cfg.MaxBytes {
				t.Fatalf("spool holds %d bytes, cap %d", st.Bytes, cfg.MaxBytes)
			}
			if tt.wantDrop {
				st := s.stats()
				if st.Dropped == 0 {
					t.Fatal("drop_oldest dropped nothing")
				}
				got := drain(t, s)
				if int64(len(got)) != st.Pending {
					t.Fatalf("drained %d, pending said %d", len(got), st.Pending)
				}
			}
		})
	}
}

// TestSpoolBatchRoundTrip writes batches with one append each and reads
// them back in chunks: records in order, byte for byte, across segments
// and across reads (records larger than a read), with a corrupt record or
// a garbage stretch in the middle skipped and announced through onLoss
// exactly once, under the run that wrote it.
func TestSpoolBatchRoundTrip(t *testing.T) {
	big := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 3*readChunkMin+i) }
	mk := func(n int, large map[int]bool) []spoolRec {
		out := recs(0, n)
		for i := range large {
			out[i].Value = big(i)
		}
		return out
	}
	type damage func(t *testing.T, seg string, b []byte) []byte
	flip := func(rec int, value []byte) damage { // flips a byte inside record rec's value
		return func(t *testing.T, seg string, b []byte) []byte {
			i := bytes.Index(b, value)
			if i < 0 {
				t.Fatalf("record %d not in %s", rec, seg)
			}
			b[i+len(value)/2] ^= 0xff
			return b
		}
	}
	garbage := func(after []byte, n int) damage { // n bytes of noise inserted after a record
		return func(t *testing.T, seg string, b []byte) []byte {
			i := bytes.Index(b, after)
			if i < 0 {
				t.Fatalf("%q not in %s", after, seg)
			}
			i += len(after)
			noise := bytes.Repeat([]byte{0x5a, 0xa5, 0x00}, n/3)
			return append(b[:i:i], append(noise, b[i:]...)...)
		}
	}
	tests := []struct {
		name     string
		recs     []spoolRec
		segBytes int64
		maxN     int
		damage   damage // applied to the first segment
		lost     []int  // records that must not come back
		earlier  bool   // the damage is found by the next run
	}{
		{name: "small records, many segments", recs: mk(300, nil), segBytes: 4096, maxN: 1000},
		{name: "small records, one segment, small batches", recs: mk(300, nil), segBytes: 16 << 20, maxN: 7},
		{name: "records larger than a read", recs: mk(20, map[int]bool{3: true, 4: true, 11: true}), segBytes: 16 << 20, maxN: 5},
		{name: "corrupt record in the middle, this run", recs: mk(300, nil), segBytes: 16 << 20, maxN: 64,
			damage: flip(150, []byte(`{"n":150}`)), lost: []int{150}},
		{name: "corrupt record in the middle, earlier run", recs: mk(300, nil), segBytes: 16 << 20, maxN: 64,
			damage: flip(150, []byte(`{"n":150}`)), lost: []int{150}, earlier: true},
		{name: "corrupt large record, earlier run", recs: mk(20, map[int]bool{5: true, 6: true}), segBytes: 16 << 20, maxN: 4,
			damage: flip(5, big(5)[:100]), lost: []int{5}, earlier: true},
		{name: "garbage stretch longer than a read, earlier run", recs: mk(300, nil), segBytes: 16 << 20, maxN: 7,
			damage: garbage([]byte(`{"n":100}`), 3*readChunkMin), earlier: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testSpoolCfg(dir)
			cfg.SegmentBytes, cfg.MaxBytes = tt.segBytes, 1<<30
			type loss struct {
				reason, run string
				n           int64
			}
			var losses []loss
			onLoss := func(reason, run string, n int64) { losses = append(losses, loss{reason, run, n}) }
			s, err := openSpool(cfg, sinks.Block, onLoss)
			if err != nil {
				t.Fatal(err)
			}
			// Whole batches, one append each.
			for i := 0; i < len(tt.recs); i += 50 {
				if err := s.append(context.Background(), tt.recs[i:min(i+50, len(tt.recs))]); err != nil {
					t.Fatal(err)
				}
			}
			if tt.damage != nil {
				seg, b := firstSegment(t, dir)
				b = tt.damage(t, seg, b)
				if err := os.WriteFile(seg, b, 0o600); err != nil {
					t.Fatal(err)
				}
				if !tt.earlier {
					// This run's spool still knows the segment's old size.
					s.segs[0].size = int64(len(b))
				}
			}
			if tt.earlier {
				if err := s.close(); err != nil {
					t.Fatal(err)
				}
				if s, err = openSpool(cfg, sinks.Block, onLoss); err != nil {
					t.Fatal(err)
				}
			}
			defer s.close()
			var got []spoolRec
			for {
				rs, pos, err := s.next(tt.maxN, 1<<20)
				if err != nil {
					t.Fatal(err)
				}
				if len(rs) > tt.maxN {
					t.Fatalf("next returned %d records, asked for at most %d", len(rs), tt.maxN)
				}
				for _, r := range rs { // copies: the slices are the reader's until the next call
					got = append(got, spoolRec{ID: string(r.ID), Key: bytes.Clone(r.Key), Value: bytes.Clone(r.Value)})
				}
				if !tt.earlier && len(rs) > 0 {
					if n := s.settleRun(int64(len(rs))); n != int64(len(rs)) {
						t.Fatalf("settled %d of %d records read", n, len(rs))
					}
				}
				if err := s.commit(rs, pos); err != nil {
					t.Fatal(err)
				}
				if len(rs) == 0 {
					break
				}
			}
			var want []spoolRec
			for i, r := range tt.recs {
				if !slices.Contains(tt.lost, i) {
					want = append(want, r)
				}
			}
			if len(got) != len(want) {
				t.Fatalf("read back %d records, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i].ID != want[i].ID || !bytes.Equal(got[i].Key, want[i].Key) || !bytes.Equal(got[i].Value, want[i].Value) {
					t.Fatalf("record %d: got id %s (%d bytes), want %s (%d bytes)", i, got[i].ID, len(got[i].Value), want[i].ID, len(want[i].Value))
				}
			}
			var wantLoss []loss
			switch {
			case tt.damage == nil:
			case tt.earlier:
				// An earlier run's damage counts one per unreadable stretch.
				wantLoss = []loss{{record.ReasonSpoolCorrupt, "r", 1}}
			default:
				// This run's: exactly the records never read back.
				wantLoss = []loss{{record.ReasonSpoolCorrupt, "", int64(len(tt.lost))}}
			}
			if fmt.Sprint(losses) != fmt.Sprint(wantLoss) {
				t.Fatalf("losses announced %v, want %v", losses, wantLoss)
			}
			if !s.empty() {
				t.Error("spool not empty after reading everything")
			}
		})
	}
}

// TestSpoolIntervalSyncOffAppend: with fsync = "interval" an append never
// fsyncs (rotated segments wait for the syncer, which syncs and closes
// them without the spool's lock), and close syncs what is left.
func TestSpoolIntervalSyncOffAppend(t *testing.T) {
	cfg := testSpoolCfg(t.TempDir())
	cfg.Fsync = "interval"
	s, err := openSpool(cfg, sinks.Block, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := s.append(context.Background(), recs(i*50, 50)); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	rotated, dirty := len(s.unsynced), s.dirty
	s.mu.Unlock()
	if rotated == 0 || !dirty {
		t.Fatalf("after appends over several segments: %d segments left for the syncer, dirty %v; want some, true", rotated, dirty)
	}
	if err := s.syncDue(); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	rotated, dirty = len(s.unsynced), s.dirty
	s.mu.Unlock()
	if rotated != 0 || dirty {
		t.Fatalf("after syncDue: %d segments unsynced, dirty %v", rotated, dirty)
	}
	if err := s.append(context.Background(), recs(500, 200)); err != nil {
		t.Fatal(err)
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	if len(s.unsynced) != 0 {
		t.Fatal("close left segments unsynced")
	}
	s2, err := openSpool(cfg, sinks.Block, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.close()
	if got := drain(t, s2); fmt.Sprint(got) != fmt.Sprint(wantIDs(0, 700)) {
		t.Fatalf("read back %d records after reopening, want 700 in order", len(got))
	}
}

// TestSpoolDropOldestCountsRecordsOnly: seal records share the spool with
// queue items but are not items; drop_oldest announces exactly the items
// it discarded, not the seal records beside them.
func TestSpoolDropOldestCountsRecordsOnly(t *testing.T) {
	cfg := testSpoolCfg(t.TempDir())
	cfg.MaxBytes = 3 * cfg.SegmentBytes
	var lost int64
	s := openCounting(t, cfg, sinks.DropOldest, &lost)
	defer s.close()
	appended := 0
	for i := 0; i < 1000 && s.stats().Dropped < 100; i++ {
		if err := s.append(t.Context(), []spoolRec{{ID: fmt.Sprintf("%sh:b:r:%d", sealIDPrefix, i), Key: []byte("h"), Value: []byte(`{"seal":1}`)}}); err != nil {
			t.Fatal(err)
		}
		if err := s.append(t.Context(), recs(i*10, 10)); err != nil {
			t.Fatal(err)
		}
		appended += 10
	}
	items := 0
	for {
		rs, pos, err := s.next(7, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range rs {
			if !isSealID(string(r.ID)) {
				n++
			}
		}
		items += n
		s.settleRun(int64(n)) // as the replayer does, before it commits
		if err := s.commit(rs, pos); err != nil {
			t.Fatal(err)
		}
		if len(rs) == 0 {
			break
		}
	}
	if int64(items)+lost != int64(appended) {
		t.Fatalf("%d items appended; %d read back + %d announced lost = %d", appended, items, lost, int64(items)+lost)
	}
}

// TestSpoolDropOldestAfterRestartMidSegment: an earlier run's segment
// whose first records were acknowledged (the cursor points into it), then
// dropped by drop_oldest before the rest is replayed: the records not
// replayed are announced lost, under that run, exactly.
func TestSpoolDropOldestAfterRestartMidSegment(t *testing.T) {
	dir := t.TempDir()
	s1, err := openSpool(testSpoolCfg(dir), sinks.Block, nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 200 // several segments of 4 KiB
	if err := s1.append(t.Context(), recs(0, n)); err != nil {
		t.Fatal(err)
	}
	rs, pos, err := s1.next(7, 1<<20)
	if err != nil || len(rs) != 7 {
		t.Fatalf("next: %d records, %v", len(rs), err)
	}
	if err := s1.commit(rs, pos); err != nil {
		t.Fatal(err)
	}
	if err := s1.close(); err != nil {
		t.Fatal(err)
	}

	s2, lost := openDropByRun(t, testSpoolCfg(dir))
	if p := s2.stats().Pending; p != n-7 {
		t.Fatalf("pending after restart %d, want %d", p, n-7)
	}
	// This run's records push the earlier run's segments out.
	mine := 0
	for i := 0; i < 100 && lost["r"] < n-7; i++ {
		batch := make([]spoolRec, 10)
		for j := range batch {
			batch[j] = spoolRec{ID: fmt.Sprintf("h:b:now:%d", mine+j), Key: []byte("h"), Value: []byte(`{"x":1}`)}
		}
		if err := s2.append(t.Context(), batch); err != nil {
			t.Fatal(err)
		}
		mine += 10
	}
	earlier := replayEarlier(t, s2)
	if earlier+lost["r"] != n-7 {
		t.Fatalf("earlier run: %d not acknowledged; %d read back + %d announced lost = %d", n-7, earlier, lost["r"], earlier+lost["r"])
	}
}
