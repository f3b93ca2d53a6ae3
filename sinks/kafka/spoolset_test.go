package kafka

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/sinks"
	kafkago "github.com/segmentio/kafka-go"
)

// setMsgs are n messages of run r as the sink makes them (event id header,
// key h), from sequence from on.
func setMsgs(from, n int) []kafkago.Message {
	msgs := make([]kafkago.Message, n)
	for i := range msgs {
		msgs[i] = kafkago.Message{Key: []byte("h"), Value: testLine(uint64(from + i))[:len(testLine(uint64(from+i)))-1],
			Headers: []kafkago.Header{{Key: HeaderEventID, Value: fmt.Appendf(nil, "h:b:r:%d", from+i)}}}
	}
	return msgs
}

// testSets encodes msgs as the sink spools them: record sets of
// batchSize records, compressed with comp.
func testSets(t *testing.T, comp string, batchSize int, msgs []kafkago.Message) []spoolSet {
	t.Helper()
	cfg := Defaults()
	cfg.Compression, cfg.BatchSize = comp, batchSize
	p, err := newProducer(&kafkago.Transport{}, []string{"127.0.0.1:1"}, cfg, &kafkago.Murmur2Balancer{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	_, sets, err := p.encodeSets(nil, msgs, testNow, p.comp)
	if err != nil {
		t.Fatal(err)
	}
	return sets
}

// appendRun appends n records of run r (setMsgs from sequence from on)
// as uncompressed sets of per records.
func appendRun(t *testing.T, s *spool, from, n, per int) {
	t.Helper()
	if err := s.appendSets(t.Context(), testSets(t, "none", per, setMsgs(from, n))); err != nil {
		t.Fatal(err)
	}
}

// dropOldestSpool opens a drop_oldest spool of three 16 KiB segments in a
// fresh directory, closed when the test ends; its announced losses add
// up in *lost.
func dropOldestSpool(t *testing.T, lost *int64) *spool {
	t.Helper()
	cfg := testSpoolCfg(t.TempDir())
	cfg.SegmentBytes = 16 << 10
	cfg.MaxBytes = 3 * cfg.SegmentBytes
	s := openCounting(t, cfg, sinks.DropOldest, lost)
	t.Cleanup(func() { s.close() })
	return s
}

// dropRun opens a dropOldestSpool and appends this run's records to it
// with add, ten at a time as one set (counted in *appended), until it has
// segs segments.
func dropRun(t *testing.T, lost, appended *int64, segs int) (s *spool, add func()) {
	t.Helper()
	s = dropOldestSpool(t, lost)
	add = func() {
		appendRun(t, s, int(*appended), 10, 10)
		*appended += 10
	}
	for len(s.segs) < segs {
		add()
	}
	return s, add
}

// spooledMsgs expands what the spool gave back into messages: records as
// they are, sets decoded.
func spooledMsgs(t *testing.T, rs []spooled) []kafkago.Message {
	t.Helper()
	var out []kafkago.Message
	for _, r := range rs {
		if r.Set == nil {
			// Cloned: the spool reuses its read buffer on the next call.
			out = append(out, kafkago.Message{Key: bytes.Clone(r.Key), Value: bytes.Clone(r.Value), Headers: []kafkago.Header{{Key: HeaderEventID, Value: bytes.Clone(r.ID)}}})
			continue
		}
		msgs, err := decodeRecordSet(r.Set)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) != r.N || !bytes.Equal(msgs[0].Headers[0].Value, r.ID) || !bytes.Equal(r.Key, msgs[0].Key) {
			t.Fatalf("set of %d records (first %s, key %q) decodes to %d records", r.N, r.ID, r.Key, len(msgs))
		}
		out = append(out, msgs...)
	}
	return out
}

// TestSpoolSets writes record sets between records, reopens the spool (so
// they are an earlier run's) and reads them back in order, each set whole
// and decodable to its records; a damaged set is announced lost with its
// exact count when its header is intact, as one record per damaged
// stretch when it is not, and the records after it are still read.
func TestSpoolSets(t *testing.T) {
	msgs := setMsgs(0, 95)
	tests := []struct {
		name    string
		damage  func(b []byte, at []int) []byte // at: offsets of the three sets' frames
		lost    int64                           // announced
		missing int                             // records not read back
	}{
		{"intact", func(b []byte, _ []int) []byte { return b }, 0, 0},
		{"set payload byte", func(b []byte, at []int) []byte { b[at[1]+setHeader+40] ^= 0xff; return b }, 30, 30},
		{"set header count", func(b []byte, at []int) []byte { b[at[1]+12] ^= 0xff; return b }, 1, 30},
		{"torn last set", func(b []byte, at []int) []byte { return b[:len(b)-5] }, 5, 5},
	}
	for _, comp := range []string{"zstd", "none"} {
		for _, tt := range tests {
			t.Run(comp+"/"+tt.name, func(t *testing.T) {
				dir := t.TempDir()
				cfg := testSpoolCfg(dir)
				cfg.SegmentBytes = 1 << 20
				s, err := openSpool(cfg, sinks.Block, nil)
				if err != nil {
					t.Fatal(err)
				}
				// records 0-9, sets of 30 (10-39, 40-69), records 70-89, a set of 5 (90-94)
				if err := s.appendMessages(t.Context(), msgs[:10]); err != nil {
					t.Fatal(err)
				}
				if err := s.appendSets(t.Context(), testSets(t, comp, 30, msgs[10:70])); err != nil {
					t.Fatal(err)
				}
				if err := s.appendMessages(t.Context(), msgs[70:90]); err != nil {
					t.Fatal(err)
				}
				if err := s.appendSets(t.Context(), testSets(t, comp, 30, msgs[90:])); err != nil {
					t.Fatal(err)
				}
				s.close()
				seg, b := firstSegment(t, dir)
				var at []int
				for i := 0; i+4 <= len(b); i++ {
					if binary.LittleEndian.Uint32(b[i:]) == setMagic {
						at = append(at, i)
					}
				}
				if len(at) != 3 {
					t.Fatalf("%d set frames in the segment, want 3", len(at))
				}
				if err := os.WriteFile(seg, tt.damage(b, at), 0o600); err != nil {
					t.Fatal(err)
				}
				var lost int64
				s2, err := openSpool(cfg, sinks.Block, func(reason, run string, n int64) {
					if run != "r" {
						t.Errorf("loss of run %q, want r", run)
					}
					lost += n
				})
				if err != nil {
					t.Fatal(err)
				}
				defer s2.close()
				var got []kafkago.Message
				for {
					rs, pos, err := s2.next(7, 1<<20)
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, spooledMsgs(t, rs)...)
					if err := s2.commit(rs, pos); err != nil {
						t.Fatal(err)
					}
					if len(rs) == 0 {
						break
					}
				}
				if lost != tt.lost || len(got) != len(msgs)-tt.missing {
					t.Fatalf("read back %d records, %d announced lost; want %d and %d", len(got), lost, len(msgs)-tt.missing, tt.lost)
				}
				// In order, each as written.
				j := 0
				for _, m := range got {
					for j < len(msgs) && !bytes.Equal(msgs[j].Headers[0].Value, m.Headers[0].Value) {
						j++
					}
					if j == len(msgs) || !bytes.Equal(msgs[j].Value, m.Value) || !bytes.Equal(msgs[j].Key, m.Key) {
						t.Fatalf("record %s out of order or changed", m.Headers[0].Value)
					}
				}
				if st := s2.stats(); st.Pending != 0 {
					t.Fatalf("pending %d after reading everything", st.Pending)
				}
			})
		}
	}
}

// TestSpoolDropOldestCountsSets: drop_oldest drops whole sets and counts
// their records; what is read back plus what is announced is what was
// appended.
func TestSpoolDropOldestCountsSets(t *testing.T) {
	var lost int64
	s := dropOldestSpool(t, &lost)
	appended := 0
	for i := 0; i < 1000 && s.stats().Dropped < 100; i++ {
		msgs := setMsgs(i*20, 20)
		for k := range msgs {
			msgs[k].Headers[0].Value = fmt.Appendf(nil, "h:b:%s:%d", "run", i*20+k)
		}
		if err := s.appendSets(t.Context(), testSets(t, "none", 10, msgs)); err != nil {
			t.Fatal(err)
		}
		appended += 20
	}
	if s.stats().Dropped == 0 {
		t.Fatal("nothing dropped")
	}
	items := 0
	for {
		rs, pos, err := s.next(7, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		n := countSpooled(rs)
		items += n
		s.settleRun(int64(n))
		if err := s.commit(rs, pos); err != nil {
			t.Fatal(err)
		}
		if len(rs) == 0 {
			break
		}
	}
	if int64(items)+lost != int64(appended) || lost%10 != 0 {
		t.Fatalf("%d appended; %d read back + %d announced lost = %d (whole sets of 10 lost)", appended, items, lost, int64(items)+lost)
	}
}

var testNow = time.UnixMilli(1700000000123)
