package sinks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
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

// cutWriter writes the first cut bytes of its first write, fails it with
// ENOSPC, and takes every later write whole.
type cutWriter struct {
	cut    int
	failed bool
	out    bytes.Buffer
}

func (w *cutWriter) Write(p []byte) (int, error) {
	if !w.failed {
		w.failed = true
		n := min(w.cut, len(p))
		w.out.Write(p[:n])
		return n, syscall.ENOSPC
	}
	return w.out.Write(p)
}

// TestStdoutNeverTearsALine: a write that stops inside a line leaves no
// torn line behind: the rest of it goes out first when writing works again,
// the lines after it are failed (and announced), and the stream goes on.
func TestStdoutNeverTearsALine(t *testing.T) {
	l1, l2, l3 := lineItem(1), lineItem(2), lineItem(3)
	w := &cutWriter{cut: len(l1.Line) + 5}
	q := NewQueue("stdout", 16, Block)
	for _, it := range []*Item{l1, l2, l3} {
		if err := q.Push(context.Background(), it); err != nil {
			t.Fatal(err)
		}
	}
	done := runSink(context.Background(), NewStdout(w, zerolog.Nop()), q)
	waitSettled(t, q)
	if err := q.Push(context.Background(), lineItem(4)); err != nil {
		t.Fatal(err)
	}
	q.Close()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := string(l1.Line) + string(l2.Line) + string(lineItem(4).Line)
	if got := w.out.String(); got != want {
		t.Fatalf("output %q, want %q", got, want)
	}
	st := q.Stats()
	checkInvariant(t, st)
	if st.Delivered != 3 || st.Dropped != 1 {
		t.Fatalf("stats %+v", st)
	}
	if u := q.TakeUnreported(); u.Total() != 1 || u.Reasons["sink_error"] != 1 {
		t.Fatalf("unreported %+v", u)
	}
}

func waitSettled(t *testing.T, q *Queue) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if q.Stats().Received != 3 {
		t.Fatal("items not queued")
	}
	// The torn line's item stays in flight until its rest is written,
	// so wait for the two others only.
	for st := q.Stats(); st.Delivered+st.Dropped < 2; st = q.Stats() {
		if ctx.Err() != nil {
			t.Fatal("items never settled")
		}
		runtime.Gosched()
	}
}
