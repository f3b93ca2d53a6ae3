package sinks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// chanWriter hands every write to the test through a channel.
type chanWriter struct {
	writes chan []byte
}

func (w *chanWriter) Write(p []byte) (int, error) {
	w.writes <- bytes.Clone(p)
	return len(p), nil
}

// failWriter accepts ok writes, then fails with err.
type failWriter struct {
	mu  sync.Mutex
	ok  int
	err error
	out bytes.Buffer
}

func (w *failWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ok == 0 {
		return 0, w.err
	}
	w.ok--
	return w.out.Write(p)
}

func lineItem(seq uint64) *Item {
	return &Item{Seq: seq, Line: fmt.Appendf(nil, "{\"event\":{\"sequence\":%d}}\n", seq)}
}

func runSink(ctx context.Context, s Sink, q *Queue) <-chan error {
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, q) }()
	return done
}

// pushRange pushes the items mk makes for seqs from..to into q.
func pushRange(t *testing.T, ctx context.Context, q *Queue, from, to uint64, mk func(uint64) *Item) {
	t.Helper()
	for seq := from; seq <= to; seq++ {
		if err := q.Push(ctx, mk(seq)); err != nil {
			t.Fatal(err)
		}
	}
}

// pushAsync is pushRange from a goroutine, for a sink that stalls the
// pushes: the channel gives the first Push error, or nil once all are in.
func pushAsync(ctx context.Context, q *Queue, from, to uint64, mk func(uint64) *Item) <-chan error {
	pushed := make(chan error, 1)
	go func() {
		for seq := from; seq <= to; seq++ {
			if err := q.Push(ctx, mk(seq)); err != nil {
				pushed <- err
				return
			}
		}
		pushed <- nil
	}()
	return pushed
}

// closeAndWait closes q and waits for the Run that runSink started.
func closeAndWait(t *testing.T, q *Queue, done <-chan error) {
	t.Helper()
	q.Close()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestStdoutFlushesWhenIdle checks that a lone item reaches the writer
// while the queue stays open, as `fanaudit watch` needs.
func TestStdoutFlushesWhenIdle(t *testing.T) {
	w := &chanWriter{writes: make(chan []byte, 16)}
	q := NewQueue("stdout", 16, Block)
	s := NewStdout(w, zerolog.Nop())
	done := runSink(context.Background(), s, q)
	for seq := uint64(1); seq <= 3; seq++ {
		if err := q.Push(context.Background(), lineItem(seq)); err != nil {
			t.Fatal(err)
		}
		got := <-w.writes
		if want := lineItem(seq).Line; !bytes.Equal(got, want) {
			t.Fatalf("wrote %q, want %q", got, want)
		}
	}
	q.Close()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	st := q.Stats()
	checkInvariant(t, st)
	if st.Delivered != 3 || st.InFlight != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestStdoutSink(t *testing.T) {
	bad := &Item{Seq: 99, Line: []byte("{}\n{}\n")}
	tests := []struct {
		name          string
		ok            int // writes that succeed before the writer fails
		items         []*Item
		wantErr       error
		wantDelivered uint64
		wantDropped   uint64
	}{
		{"all written", 1 << 30, []*Item{lineItem(1), lineItem(2), lineItem(3)}, nil, 3, 0},
		{"bad line failed, rest written", 1 << 30, []*Item{lineItem(1), bad, lineItem(3)}, nil, 2, 1},
		// A broken pipe is the sink's own failure: its items are failed
		// (and announced by the pipeline), and Run goes on to the end.
		{"epipe fails everything", 0, []*Item{lineItem(1), lineItem(2)}, nil, 0, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := &failWriter{ok: tc.ok, err: syscall.EPIPE}
			q := NewQueue("stdout", 16, Block)
			for _, it := range tc.items {
				if err := q.Push(context.Background(), it); err != nil {
					t.Fatal(err)
				}
			}
			q.Close()
			err := NewStdout(w, zerolog.Nop()).Run(context.Background(), q)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Run = %v, want %v", err, tc.wantErr)
			}
			st := q.Stats()
			checkInvariant(t, st)
			if st.Delivered != tc.wantDelivered || st.Dropped != tc.wantDropped || st.InFlight != 0 {
				t.Fatalf("stats %+v", st)
			}
			var want []byte
			if tc.ok > 0 {
				for _, it := range tc.items {
					if it != bad {
						want = append(want, it.Line...)
					}
				}
			}
			if !bytes.Equal(w.out.Bytes(), want) {
				t.Fatalf("output %q, want %q", w.out.Bytes(), want)
			}
		})
	}
}

func TestStdoutCancel(t *testing.T) {
	w := &chanWriter{writes: make(chan []byte, 16)}
	q := NewQueue("stdout", 16, Block)
	ctx, cancel := context.WithCancel(context.Background())
	done := runSink(ctx, NewStdout(w, zerolog.Nop()), q)
	if err := q.Push(ctx, lineItem(1)); err != nil {
		t.Fatal(err)
	}
	<-w.writes
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	checkInvariant(t, q.Stats())
}

func BenchmarkStdoutSink(b *testing.B) {
	q := NewQueue("stdout", 8192, Block)
	s := NewStdout(io.Discard, zerolog.Nop())
	ctx := context.Background()
	it := lineItem(1)
	b.SetBytes(int64(len(it.Line)))
	b.ReportAllocs()
	b.ResetTimer()
	done := runSink(ctx, s, q)
	for i := 0; i < b.N; i++ {
		if err := q.Push(ctx, it); err != nil {
			b.Fatal(err)
		}
	}
	q.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// TestStdoutNeverTearsALine: stdout is a file on a full disk. Every
// failed write is cut back to the last whole line, the unwritten items are
// failed (sink_error), the sink goes on, and the lines in the file plus
// the failed items are exactly what it was given.
func TestStdoutNeverTearsALine(t *testing.T) {
	testutil.RequireRoot(t)
	path := filepath.Join(testutil.TmpfsMount(t, "64k"), "stdout.json")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const n = 2000 // ~60 KB of short lines, and a few long ones to cut
	q := NewQueue("stdout", 64, Block)
	done := runSink(context.Background(), NewStdout(f, zerolog.Nop()), q)
	for seq := uint64(1); seq <= n; seq++ {
		it := lineItem(seq)
		if seq%7 == 0 {
			it = &Item{Seq: seq, Line: fmt.Appendf(nil, "{\"event\":{\"sequence\":%d},\"pad\":%q}\n", seq, bytes.Repeat([]byte("x"), 3000))}
		}
		if err := q.Push(context.Background(), it); err != nil {
			t.Fatal(err)
		}
	}
	q.Close()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	if last := lines[len(lines)-1]; len(last) != 0 {
		t.Fatalf("torn last line %q", last)
	}
	lines = lines[:len(lines)-1]
	st := q.Stats()
	checkInvariant(t, st)
	if st.Dropped == 0 || st.Delivered != uint64(len(lines)) || st.Delivered+st.Dropped != n {
		t.Fatalf("%d lines in the file, stats %+v", len(lines), st)
	}
	if u := q.TakeUnreported(); u.Reasons["sink_error"] != st.Dropped || u.Total() != st.Dropped {
		t.Fatalf("unreported %+v, dropped %d", u, st.Dropped)
	}
}
