package kafka

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

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
	for {
		rs, pos, err := s.next(7, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.commit(len(rs), pos); err != nil {
			t.Fatal(err)
		}
		if len(rs) == 0 {
			return ids
		}
		for _, r := range rs {
			ids = append(ids, r.ID)
		}
	}
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
				if err := s.commit(len(rs), pos); err != nil {
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
			seg := filepath.Join(dir, "seg-00000000000000000001.log")
			b, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
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
