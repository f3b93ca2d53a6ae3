package sinks

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/internal/seal"
	"github.com/fanaudit/fanaudit/internal/testutil"
)

// poison is an item's Owner that does what the fan-out may do once every
// queue is done with the item: reuse its memory. It overwrites the line
// with '#' and zeroes the sequence, so a sink that reads an item after
// settling it (writes or seals it again, logs it) shows it.
type poison struct{ it *Item }

func (p *poison) Release(int) {
	for i := range p.it.Line {
		p.it.Line[i] = '#'
	}
	p.it.Seq = 0
}

// poisonItems is spanItems (lines back to back, written from their
// buffer) with a poison Owner on every item.
func poisonItems(n int) func(uint64) *Item {
	mk := spanItems(n)
	return func(seq uint64) *Item {
		it := mk(seq)
		it.Owner = &poison{it: it}
		return it
	}
}

// inOrderQueue is a queue that tells the Owners when it is done with
// their items, as the pipeline's queue of an Ordered sink does.
func inOrderQueue(t *testing.T, s Sink, capacity int, policy Policy) *Queue {
	t.Helper()
	if o, ok := s.(Ordered); !ok || !o.SettlesInOrder() {
		t.Fatalf("%T does not settle in order", s)
	}
	q := NewQueue("file", capacity, policy)
	q.SettleInOrder()
	return q
}

// TestFileReadsNoSettledLine: the file sink writes runs of lines from
// the fan-out's buffers, which are reused once it settles them; on every
// path that writes, rewrites or seals lines it must be done reading an
// item when it settles it.
func TestFileReadsNoSettledLine(t *testing.T) {
	tests := []struct {
		name    string
		maxSize int64
		fsync   FsyncMode
		sealed  bool
	}{
		{"rotate by size, gzip", 20 << 10, FsyncNever, false},
		{"rotate by size, gzip, sealed", 20 << 10, FsyncNever, true},
		{"fsync always", 0, FsyncAlways, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := testOpts(t.TempDir())
			o.MaxBackups, o.Compress, o.Fsync = 0, true, tc.fsync
			s := newTestFile(t, o)
			s.maxSize = tc.maxSize
			var k0 seal.Key
			if tc.sealed {
				var sl *seal.Sealer
				sl, k0 = newSealer(t)
				s.SetSealer(sl)
			}
			const n = 3000
			runAllWith(t, s, inOrderQueue(t, s, 1024, Block), 1, n, poisonItems(300))
			files := allFiles(t, o.Path)
			if tc.maxSize > 0 && len(files) < 5 {
				t.Fatalf("want several rotations, got %v", files)
			}
			if tc.sealed {
				rep, err := seal.VerifyReport(k0, sealSource(t, files, nil), seal.VerifyOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if len(rep.Findings) != 0 || rep.Records != n {
					t.Fatalf("%d records, findings %v", rep.Records, rep.Findings)
				}
				return
			}
			var all []uint64
			for _, f := range files {
				all = append(all, readSeqs(t, f)...)
			}
			wantRange(t, all, 1, n)
		})
	}
}

// TestFileRewriteReadsNoSettledLine: lines written into a file deleted
// under the sink are written again into a new one, from the same items,
// which the sink must still hold.
func TestFileRewriteReadsNoSettledLine(t *testing.T) {
	o := testOpts(filepath.Join(t.TempDir(), "log"))
	s, logs := newLoggedFile(t, o)
	q := inOrderQueue(t, s, 64, Block)
	mk := poisonItems(300)
	ctx := t.Context()
	done := runSink(ctx, s, q)
	pushRange(t, ctx, q, 1, 5, mk)
	if err := q.WaitSettled(ctx); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(o.Path); err != nil {
		t.Fatal(err)
	}
	pushRange(t, ctx, q, 6, 200, mk)
	closeAndWait(t, q, done)
	wantRange(t, readSeqs(t, o.Path), 6, 200)
	if !strings.Contains(logs.String(), "deleted under the sink") {
		t.Errorf("log does not say so:\n%s", logs)
	}
}

// TestFileFullDiskReadsNoSettledLine: a write that ENOSPC cuts short
// settles the lines that landed and retries the rest; the retry must not
// reach back into the settled ones.
func TestFileFullDiskReadsNoSettledLine(t *testing.T) {
	mnt := testutil.TmpfsMount(t, "256k")
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, 160<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	o := testOpts(mnt)
	o.MaxSizeMB, o.Fsync = 0, FsyncNever
	s := newTestFile(t, o)
	stalled := make(chan struct{})
	var once sync.Once
	s.onStall = func() { once.Do(func() { close(stalled) }) }
	q := inOrderQueue(t, s, 64, Block)
	ctx := t.Context()
	done := runSink(ctx, s, q)
	const n = 2000 // ~100 bytes a line: fits only without the filler
	pushed := pushAsync(ctx, q, 1, n, poisonItems(300))
	<-stalled
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := <-pushed; err != nil {
		t.Fatal(err)
	}
	closeAndWait(t, q, done)
	wantRange(t, readSeqs(t, o.Path), 1, n)
	if st := s.Stats(); st.WriteErrors == 0 {
		t.Fatalf("the disk never filled: %+v", st)
	}
}

// TestBadItemLoggedBeforeSettled: the line naming a dropped item (not one
// line) is logged from the item before it is settled, not after.
func TestBadItemLoggedBeforeSettled(t *testing.T) {
	bad := func() *Item {
		it := &Item{Seq: 7, Line: []byte("{}")}
		it.Owner = &poison{it: it}
		return it
	}
	run := func(t *testing.T, s Sink, logs *syncBuffer) {
		t.Helper()
		q := inOrderQueue(t, s, 8, Block)
		if err := q.Push(t.Context(), bad()); err != nil {
			t.Fatal(err)
		}
		q.Close()
		if err := s.Run(t.Context(), q); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(logs.String(), `"seq":7`) {
			t.Fatalf("log does not name seq 7:\n%s", logs.String())
		}
	}
	t.Run("file", func(t *testing.T) {
		s, logs := newLoggedFile(t, testOpts(t.TempDir()))
		run(t, s, logs)
	})
	t.Run("stdout", func(t *testing.T) {
		var logs syncBuffer
		run(t, NewStdout(&bytes.Buffer{}, zerolog.New(&logs)), &logs)
	})
}

// epipeWriter takes half of every other write and then fails it with
// EPIPE, the way a pipe whose reader went away does.
type epipeWriter struct {
	out   bytes.Buffer
	calls int
}

func (w *epipeWriter) Write(p []byte) (int, error) {
	w.calls++
	if w.calls%2 == 0 {
		k := len(p) / 2
		w.out.Write(p[:k])
		return k, syscall.EPIPE
	}
	return w.out.Write(p)
}

// TestStdoutReadsNoSettledLine: the stdout sink, failing writes with
// EPIPE half the time, writes no line of an item it settled.
func TestStdoutReadsNoSettledLine(t *testing.T) {
	w := &epipeWriter{}
	s := NewStdout(w, zerolog.New(&syncBuffer{}))
	q := inOrderQueue(t, s, 64, Block)
	const n = 3000
	done := runSink(t.Context(), s, q)
	pushRange(t, t.Context(), q, 1, n, poisonItems(300))
	closeAndWait(t, q, done)
	if bytes.Contains(w.out.Bytes(), []byte("#")) {
		t.Fatalf("a settled item's line was written: %.300q", w.out.Bytes()[bytes.IndexByte(w.out.Bytes(), '#'):])
	}
	st := q.Stats()
	if st.Delivered == 0 || st.Dropped == 0 || st.Delivered+st.Dropped != n {
		t.Fatalf("stats %+v", st)
	}
}
