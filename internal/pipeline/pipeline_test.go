package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/fanaudit/fanaudit/internal/pipeline/queue"
	"github.com/fanaudit/fanaudit/internal/record"
	"github.com/fanaudit/fanaudit/sinks"
)

// fakeSource sends its batches, signals sent, then waits for stop as the
// capture does.
type fakeSource struct {
	batches [][]*record.Record
	sent    chan struct{}
	err     error // returned right after sending, if set
}

func newSource(n, per int) *fakeSource {
	s := &fakeSource{sent: make(chan struct{})}
	ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < n; i += per {
		var b []*record.Record
		for j := i; j < min(i+per, n); j++ {
			b = append(b, &record.Record{Timestamp: ts, Action: record.ActionOpen, File: record.File{Path: "/m/f"}, Process: record.Process{Pid: int32(j + 1)}})
		}
		s.batches = append(s.batches, b)
	}
	return s
}

// start makes the fake the capture of a chain whose enrichment passes
// records through.
func (s *fakeSource) start(g *errgroup.Group, stop, ctx context.Context, abort context.CancelCauseFunc, out Emitter, done func()) {
	st := &Stages[*record.Record]{Capture: s.capture, Enrich: passThrough}
	st.start(g, stop, ctx, abort, out, done)
}

// capture sends like the real one: unconditionally, since the next stage
// reads until its input is closed.
func (s *fakeSource) capture(ctx context.Context, out chan<- []*record.Record) error {
	for _, b := range s.batches {
		out <- b
	}
	close(s.sent)
	if s.err != nil {
		return s.err
	}
	<-ctx.Done()
	return nil
}

func passThrough(ctx context.Context, in <-chan []*record.Record, emit func([]*record.Record) error) error {
	for b := range in {
		if err := emit(b); err != nil {
			return err
		}
	}
	return nil
}

// fakeSink collects lines. A gate holds it before its first read; fail
// makes it return an error instead; reached is closed once it has seen
// want file records.
type fakeSink struct {
	gate    chan struct{}
	fail    error
	want    int
	reached chan struct{}

	mu    sync.Mutex
	items []*sinks.Item
	files int
}

// errQuit makes a fakeSink return nil at once, like a buggy sink.
var errQuit = errors.New("quit")

func newSink(want int) *fakeSink { return &fakeSink{want: want, reached: make(chan struct{})} }

func (s *fakeSink) Reopen() error { return nil }
func (s *fakeSink) Close() error  { return nil }

func (s *fakeSink) Run(ctx context.Context, q sinks.Input) error {
	if errors.Is(s.fail, errQuit) {
		return nil
	}
	if s.fail != nil {
		return s.fail
	}
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	buf := make([]*sinks.Item, 0, 64)
	for {
		items, err := q.Next(ctx, buf)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		s.mu.Lock()
		for _, it := range items {
			s.items = append(s.items, it)
			if !it.Loss {
				s.files++
				if s.files == s.want {
					close(s.reached)
				}
			}
		}
		s.mu.Unlock()
		q.Delivered(len(items))
	}
}

func (s *fakeSink) got() []*sinks.Item {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*sinks.Item(nil), s.items...)
}

type lossLine struct {
	Event struct {
		Action   string `json:"action"`
		Sequence uint64 `json:"sequence"`
	} `json:"event"`
	Fanaudit struct {
		Lost struct {
			Count         uint64 `json:"count"`
			Reason        string `json:"reason"`
			Sink          string `json:"sink"`
			PreviousRunID string `json:"previous_run_id"`
		} `json:"lost"`
	} `json:"fanaudit"`
}

func decode(t *testing.T, it *sinks.Item) lossLine {
	t.Helper()
	var l lossLine
	if len(it.Line) == 0 || it.Line[len(it.Line)-1] != '\n' {
		t.Fatalf("line not newline-terminated: %q", it.Line)
	}
	if err := json.Unmarshal(it.Line, &l); err != nil {
		t.Fatalf("bad line %q: %v", it.Line, err)
	}
	if l.Event.Sequence != it.Seq {
		t.Fatalf("item seq %d, line seq %d", it.Seq, l.Event.Sequence)
	}
	return l
}

func runPipeline(t *testing.T, p *Pipeline) (cancel func(), done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- p.Run(ctx) }()
	t.Cleanup(cancel)
	return cancel, ch
}

func checkInvariant(t *testing.T, st Stats) {
	t.Helper()
	for _, q := range st.Sinks {
		if q.Received != q.Delivered+q.Dropped+q.InFlight {
			t.Errorf("sink %s: received %d != delivered %d + dropped %d + in flight %d", q.Sink, q.Received, q.Delivered, q.Dropped, q.InFlight)
		}
		if q.Received != st.Produced {
			t.Errorf("sink %s: received %d, produced %d", q.Sink, q.Received, st.Produced)
		}
	}
}

func TestAllSinksGetEverythingInOrder(t *testing.T) {
	tests := []struct {
		name       string
		n, per     int
		queueSizes []int
	}{
		{"one sink", 1000, 7, []int{16}},
		{"three sinks tiny queues", 3000, 64, []int{1, 2, 1000}},
		{"empty", 0, 1, []int{4}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := newSource(tc.n, tc.per)
			var specs []SinkSpec
			var fakes []*fakeSink
			for i, qs := range tc.queueSizes {
				f := newSink(tc.n)
				fakes = append(fakes, f)
				specs = append(specs, SinkSpec{Name: string(rune('a' + i)), Sink: f, QueueSize: qs, Policy: sinks.Block})
			}
			p, err := New(Options{Source: src, Sinks: specs}, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			cancel, done := runPipeline(t, p)
			<-src.sent
			if tc.n > 0 {
				for _, f := range fakes {
					<-f.reached
				}
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
			for _, f := range fakes {
				items := f.got()
				if len(items) != tc.n {
					t.Fatalf("got %d items, want %d", len(items), tc.n)
				}
				for i, it := range items {
					if it.Seq != uint64(i+1) || it.Loss {
						t.Fatalf("item %d: seq %d loss %v", i, it.Seq, it.Loss)
					}
					decode(t, it)
				}
			}
			st := p.Stats()
			if st.Received != uint64(tc.n) || st.Produced != uint64(tc.n) {
				t.Errorf("stats %+v", st)
			}
			checkInvariant(t, st)
			for _, q := range st.Sinks {
				if q.Delivered != uint64(tc.n) || q.InFlight != 0 {
					t.Errorf("sink %+v", q)
				}
			}
		})
	}
}

// TestStalledDropNewestSink: a stalled drop_newest sink loses records, the
// other sink gets everything, and the stalled sink's gaps are exactly the
// counts of the events_lost records naming it.
func TestStalledDropNewestSink(t *testing.T) {
	for _, policy := range []sinks.Policy{sinks.DropNewest, sinks.DropOldest} {
		t.Run(policy.String(), func(t *testing.T) {
			const n = 5000
			src := newSource(n, 50)
			fast := newSink(n)
			slow := newSink(-1)
			slow.gate = make(chan struct{})
			p, err := New(Options{Source: src, Sinks: []SinkSpec{
				{Name: "fast", Sink: fast, QueueSize: 100, Policy: sinks.Block},
				{Name: "slow", Sink: slow, QueueSize: 10, Policy: policy},
			}}, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			cancel, done := runPipeline(t, p)
			<-src.sent
			<-fast.reached
			close(slow.gate)
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
			st := p.Stats()
			checkInvariant(t, st)

			all := fast.got()
			if uint64(len(all)) != st.Produced {
				t.Fatalf("fast sink got %d of %d", len(all), st.Produced)
			}
			var reported uint64
			for i, it := range all {
				if it.Seq != uint64(i+1) {
					t.Fatalf("fast sink: item %d has seq %d", i, it.Seq)
				}
				if it.Loss {
					l := decode(t, it)
					if l.Event.Action != "events_lost" || l.Fanaudit.Lost.Reason != "queue_full" || l.Fanaudit.Lost.Sink != "slow" {
						t.Fatalf("unexpected loss record %s", it.Line)
					}
					reported += l.Fanaudit.Lost.Count
				}
			}
			slowItems := slow.got()
			var prev uint64
			for _, it := range slowItems {
				if it.Seq <= prev {
					t.Fatalf("slow sink out of order: %d after %d", it.Seq, prev)
				}
				prev = it.Seq
			}
			gaps := st.Produced - uint64(len(slowItems))
			if gaps == 0 {
				t.Fatal("the stalled sink dropped nothing; the test proves nothing")
			}
			if gaps != reported {
				t.Errorf("slow sink missed %d records, loss records report %d", gaps, reported)
			}
			if q := st.Sinks[1]; q.Dropped != gaps {
				t.Errorf("slow queue dropped %d, gaps %d", q.Dropped, gaps)
			}
			if st.Sinks[0].Dropped != 0 {
				t.Errorf("fast sink dropped %d", st.Sinks[0].Dropped)
			}
		})
	}
}

func TestLossRecordsRateLimited(t *testing.T) {
	const n = 2000
	src := newSource(n, 1)
	fast := newSink(n)
	slow := newSink(-1)
	slow.gate = make(chan struct{})
	p, err := New(Options{Source: src, LossInterval: time.Hour, Sinks: []SinkSpec{
		{Name: "fast", Sink: fast, QueueSize: 10, Policy: sinks.Block},
		{Name: "slow", Sink: slow, QueueSize: 1, Policy: sinks.DropNewest},
	}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	cancel, done := runPipeline(t, p)
	<-src.sent
	<-fast.reached
	close(slow.gate)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// With an hour between reports: at most the first one (the limiter
	// starts open) and the final flush.
	if got := p.Stats().LossRecords; got < 1 || got > 2 {
		t.Errorf("%d loss records, want 1 or 2", got)
	}
}

func TestBlockedSinkShutdownTimeout(t *testing.T) {
	src := newSource(100, 10)
	stuck := newSink(-1)
	stuck.gate = make(chan struct{}) // never opened
	p, err := New(Options{Source: src, ShutdownTimeout: 50 * time.Millisecond, Sinks: []SinkSpec{
		{Name: "stuck", Sink: stuck, QueueSize: 5, Policy: sinks.Block},
	}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	cancel, done := runPipeline(t, p)
	cancel()
	if err := <-done; !errors.Is(err, ErrShutdownTimeout) {
		t.Fatalf("Run = %v, want ErrShutdownTimeout", err)
	}
	checkInvariantLoose(t, p.Stats())
}

// TestStuckSinkShutdownIsBounded: a stdout sink blocked in write(2) on a
// pipe nobody reads cannot hold the shutdown past its timeout: the end of
// its context interrupts the write.
func TestStuckSinkShutdownIsBounded(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	const n = 20000 // far more than a pipe buffer holds
	src := newSource(n, 100)
	p, err := New(Options{Source: src, ShutdownTimeout: 50 * time.Millisecond, Sinks: []SinkSpec{
		{Name: "stuck", Sink: sinks.NewStdout(w, zerolog.Nop()), QueueSize: 5, Policy: sinks.Block},
	}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	cancel, done := runPipeline(t, p)
	waitFor(t, func() bool { return p.Stats().Sinks[0].InFlight > 0 })
	cancel()
	if err := <-done; !errors.Is(err, ErrShutdownTimeout) {
		t.Fatalf("Run = %v, want ErrShutdownTimeout", err)
	}
	checkInvariantLoose(t, p.Stats())
}

func checkInvariantLoose(t *testing.T, st Stats) {
	t.Helper()
	for _, q := range st.Sinks {
		if q.Received != q.Delivered+q.Dropped+q.InFlight {
			t.Errorf("sink %s: invariant broken: %+v", q.Sink, q)
		}
	}
}

func TestStageFailures(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name    string
		srcErr  error
		sinkEr  error
		wantMsg string
	}{
		{"source error", boom, nil, "boom"},
		{"sink error", nil, boom, "boom"},
		{"sink quits early", nil, errQuit, "stopped before its queue was closed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := newSource(10, 1)
			src.err = tc.srcErr
			s := newSink(-1)
			s.fail = tc.sinkEr
			other := newSink(10)
			p, err := New(Options{Source: src, Sinks: []SinkSpec{{Name: "s", Sink: s, QueueSize: 100}, {Name: "other", Sink: other, QueueSize: 100}}}, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			cancel, done := runPipeline(t, p)
			if tc.srcErr != nil {
				if err := <-done; err == nil || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Fatalf("Run = %v, want %q", err, tc.wantMsg)
				}
				return
			}
			// A sink that stops is isolated: the agent and the other sink
			// go on, Health names it, and its losses are announced.
			<-other.reached
			waitFor(t, func() bool { ok, _ := p.Health(); return !ok })
			if _, why := p.Health(); !strings.Contains(why, tc.wantMsg) || !strings.Contains(why, "sink s") {
				t.Errorf("Health = %q, want it to name sink s and %q", why, tc.wantMsg)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run = %v, want nil: one sink's failure stops nothing else", err)
			}
			st := p.Stats()
			checkInvariant(t, st)
			var announced uint64
			for _, it := range other.got() {
				if it.Loss {
					l := decode(t, it)
					if l.Fanaudit.Lost.Sink != "s" || l.Fanaudit.Lost.Reason != "sink_error" {
						t.Fatalf("loss record %s", it.Line)
					}
					announced += l.Fanaudit.Lost.Count
				}
			}
			if st.Sinks[0].Delivered != 0 || announced == 0 || announced+2 < st.Sinks[0].Dropped {
				// The last round of loss records (at most finalLossRounds-1
				// records) may itself be dropped unannounced.
				t.Errorf("sink s dropped %d, announced %d", st.Sinks[0].Dropped, announced)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	s := newSink(0)
	tests := []struct {
		name string
		opts Options
	}{
		{"no source", Options{Sinks: []SinkSpec{{Name: "a", Sink: s}}}},
		{"no sinks", Options{Source: newSource(0, 1)}},
		{"dup", Options{Source: newSource(0, 1), Sinks: []SinkSpec{{Name: "a", Sink: s}, {Name: "a", Sink: s}}}},
		{"nil sink", Options{Source: newSource(0, 1), Sinks: []SinkSpec{{Name: "a"}}}},
	}
	for _, tc := range tests {
		if _, err := New(tc.opts, zerolog.Nop()); err == nil {
			t.Errorf("%s: New accepted it", tc.name)
		}
	}
}

func TestHealth(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	src := newSource(20, 1)
	stuck := newSink(-1)
	stuck.gate = make(chan struct{})
	p, err := New(Options{Source: src, Now: clock, SinkFailingAfter: time.Minute, Sinks: []SinkSpec{
		{Name: "stuck", Sink: stuck, QueueSize: 100, Policy: sinks.Block},
	}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	cancel, done := runPipeline(t, p)
	<-src.sent
	waitFor(t, func() bool { return p.Stats().Sinks[0].InFlight == 20 })
	if ok, why := p.Health(); !ok {
		t.Fatalf("unhealthy at start: %s", why)
	}
	advance(2 * time.Minute)
	if ok, why := p.Health(); ok || why == "" {
		t.Fatalf("stalled sink with pending records reported healthy")
	}
	close(stuck.gate)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// waitFor spins until cond holds: for states that no channel announces.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		runtime.Gosched()
	}
}

func TestStages(t *testing.T) {
	const n = 1000
	release := make(chan struct{})
	st := &Stages[int]{
		Channel: 2,
		Capture: func(ctx context.Context, out chan<- []int) error {
			for i := 0; i < n; i += 10 {
				b := make([]int, 10)
				for j := range b {
					b[j] = i + j
				}
				out <- b
			}
			close(release)
			<-ctx.Done()
			// Draining after the stop: these must still come out.
			out <- []int{n, n + 1}
			return nil
		},
		Enrich: func(ctx context.Context, in <-chan []int, emit func([]*record.Record) error) error {
			for b := range in {
				rs := make([]*record.Record, len(b))
				for i, v := range b {
					rs[i] = &record.Record{Action: record.ActionOpen, Process: record.Process{Pid: int32(v + 1)}}
				}
				if err := emit(rs); err != nil {
					return err
				}
			}
			return nil
		},
	}
	sink := newSink(n + 2)
	p, err := New(Options{Source: st, Sinks: []SinkSpec{{Name: "s", Sink: sink, QueueSize: 10}}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	cancel, done := runPipeline(t, p)
	<-release
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-sink.reached
	if got := len(sink.got()); got != n+2 || p.Stats().Produced != n+2 {
		t.Errorf("sink got %d, produced %d", got, p.Stats().Produced)
	}
}

// BenchmarkFanOut numbers, encodes and queues batches of 256 records of
// one process, as a read of a busy tree gives them.
func BenchmarkFanOut(b *testing.B) {
	const per = 256
	batch := make([]*record.Record, per)
	for i := range batch {
		batch[i] = &record.Record{Timestamp: time.Now(), Action: record.ActionCloseWrite, File: record.File{Path: "/srv/data/file.txt", HasStat: true, Mode: 0o644, Size: 10},
			Process: record.Process{Pid: 42, Name: "bench", Executable: "/usr/bin/bench"}}
	}
	q := queue.New("b", 1<<20, sinks.DropNewest)
	p := &Pipeline{queues: []*queue.Queue{q}, opts: Options{Now: time.Now, LossInterval: time.Second}}
	f := newFanState(p)
	buf := make([]*sinks.Item, 0, per)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := f.emitBatch(ctx, batch); err != nil {
			b.Fatal(err)
		}
		items, _ := q.Next(ctx, buf)
		q.Delivered(len(items))
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*per), "ns/record")
}

func TestKernelOverflowPassesThrough(t *testing.T) {
	src := newSource(3, 3)
	src.batches[0][1] = &record.Record{Action: record.ActionEventsLost, Fanaudit: record.Meta{Lost: record.Lost{Reason: record.ReasonKernelOverflow}}}
	sink := newSink(2)
	p, err := New(Options{Source: src, Sinks: []SinkSpec{{Name: "s", Sink: sink, QueueSize: 1, Policy: sinks.Block}}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	cancel, done := runPipeline(t, p)
	<-src.sent
	<-sink.reached
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	items := sink.got()
	if len(items) != 3 || !items[1].Loss || items[1].Seq != 2 {
		t.Fatalf("items: %+v", items)
	}
	if l := decode(t, items[1]); l.Fanaudit.Lost.Reason != record.ReasonKernelOverflow {
		t.Errorf("loss record %s", items[1].Line)
	}
	if st := p.Stats(); st.KernelOverflows != 1 || st.LossRecords != 1 || st.Produced != 3 {
		t.Errorf("stats %+v", st)
	}
}

// logSink is a concurrency-safe log writer that announces each line.
type logSink struct {
	mu    sync.Mutex
	lines []string
	line  chan string
}

func (l *logSink) Write(b []byte) (int, error) {
	l.mu.Lock()
	l.lines = append(l.lines, string(b))
	l.mu.Unlock()
	select {
	case l.line <- string(b):
	default:
	}
	return len(b), nil
}

func TestStatsLogLine(t *testing.T) {
	logs := &logSink{line: make(chan string, 1)}
	src := newSource(10, 5)
	sink := newSink(10)
	p, err := New(Options{Source: src, StatsInterval: 5 * time.Millisecond, Sinks: []SinkSpec{{Name: "s", Sink: sink, QueueSize: 100}}}, zerolog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	cancel, done := runPipeline(t, p)
	<-sink.reached
	var m map[string]any
	for m["message"] != "stats" || m["produced"] != float64(10) {
		if err := json.Unmarshal([]byte(<-logs.line), &m); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := m["produced_per_sec"]; !ok {
		t.Errorf("stats line without a rate: %v", m)
	}
	s, _ := m["sinks"].([]any)
	if len(s) != 1 || s[0].(map[string]any)["delivered"] != float64(10) || s[0].(map[string]any)["capacity"] != float64(100) {
		t.Errorf("stats line sinks: %v", m["sinks"])
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	logs.mu.Lock()
	last := logs.lines[len(logs.lines)-1]
	logs.mu.Unlock()
	if !strings.Contains(last, `"message":"final stats"`) {
		t.Errorf("last log line is not the final stats: %s", last)
	}
}

func TestReaderStoppedIsUnhealthy(t *testing.T) {
	early := &Stages[int]{
		Capture: func(context.Context, chan<- []int) error { return nil },
		Enrich: func(_ context.Context, in <-chan []int, _ func([]*record.Record) error) error {
			for range in {
			}
			return nil
		},
	}
	p, err := New(Options{Source: early, Sinks: []SinkSpec{{Name: "s", Sink: newSink(-1), QueueSize: 10}}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	_, done := runPipeline(t, p)
	if err := <-done; err == nil || !strings.Contains(err.Error(), "stopped before it was asked to") {
		t.Fatalf("Run = %v", err)
	}
	if ok, why := p.Health(); ok || why != "reader stopped" {
		t.Errorf("Health = %v %q", ok, why)
	}
}

func TestStagesEnrichQuitsEarly(t *testing.T) {
	st := &Stages[int]{
		Channel: 1,
		Capture: func(ctx context.Context, out chan<- []int) error {
			out <- []int{1, 2}
			out <- []int{3}
			<-ctx.Done()
			return nil
		},
		Enrich: func(ctx context.Context, in <-chan []int, _ func([]*record.Record) error) error {
			<-in
			return nil
		},
	}
	p, err := New(Options{Source: st, Sinks: []SinkSpec{{Name: "s", Sink: newSink(-1), QueueSize: 10}}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	cancel, done := runPipeline(t, p)
	defer cancel()
	if err := <-done; err == nil || !strings.Contains(err.Error(), "before its input was closed") {
		t.Fatalf("Run = %v, want the unread events reported", err)
	}
}

// discardSink settles everything at once.
type discardSink struct{}

func (discardSink) Reopen() error        { return nil }
func (discardSink) SettlesInOrder() bool { return true }
func (discardSink) Close() error         { return nil }
func (discardSink) Run(ctx context.Context, q sinks.Input) error {
	buf := make([]*sinks.Item, 0, 512)
	for {
		items, err := q.Next(ctx, buf)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		q.Delivered(len(items))
	}
}

// benchSource sends n copies of one record in batches of 256.
type benchSource struct {
	n    int
	rec  record.Record
	sent chan struct{}
}

func (s *benchSource) start(g *errgroup.Group, stop, ctx context.Context, abort context.CancelCauseFunc, out Emitter, done func()) {
	st := &Stages[*record.Record]{Capture: s.capture, Enrich: passThrough}
	st.start(g, stop, ctx, abort, out, done)
}

func (s *benchSource) capture(stop context.Context, out chan<- []*record.Record) error {
	batch := make([]*record.Record, 256)
	for i := range batch {
		r := s.rec
		batch[i] = &r
	}
	for left := s.n; left > 0; left -= len(batch) {
		out <- batch[:min(left, len(batch))]
	}
	close(s.sent)
	<-stop.Done()
	return nil
}

// BenchmarkPipeline measures records through the fan-out to two sinks,
// encoding included: ns/op is per record.
func BenchmarkPipeline(b *testing.B) {
	rec := record.Record{Timestamp: time.Now(), Action: record.ActionCloseWrite,
		File:    record.File{Path: "/srv/data/some/file.txt", Type: "file", HasStat: true, Inode: 42, Mode: 0o644, Size: 100},
		Process: record.Process{Pid: 42, PPid: 1, Name: "bench", Executable: "/usr/bin/bench", CommandLine: "bench --flag value"},
		User:    record.User{HasID: true, Name: "root", HasGID: true, Group: "root"},
		Host:    &record.Host{Hostname: "h", ID: "0123456789abcdef", BootID: "b"}}
	src := &benchSource{n: b.N, rec: rec, sent: make(chan struct{})}
	p, err := New(Options{Source: src, Sinks: []SinkSpec{
		{Name: "a", Sink: discardSink{}, QueueSize: 8192},
		{Name: "b", Sink: discardSink{}, QueueSize: 8192},
	}}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b.ReportAllocs()
	b.ResetTimer()
	go func() { done <- p.Run(ctx) }()
	<-src.sent
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if st := p.Stats(); st.Sinks[1].Delivered != uint64(b.N) {
		b.Fatalf("delivered %d of %d", st.Sinks[1].Delivered, b.N)
	}
}

// failEvenSink settles every file record with an even sequence as Failed,
// as a sink that gave up on them would, and delivers the rest.
type failEvenSink struct {
	mu     sync.Mutex
	failed uint64
}

func (*failEvenSink) Reopen() error { return nil }
func (*failEvenSink) Close() error  { return nil }
func (s *failEvenSink) Run(ctx context.Context, q sinks.Input) error {
	buf := make([]*sinks.Item, 0, 64)
	for {
		items, err := q.Next(ctx, buf)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, it := range items {
			if !it.Loss && it.Seq%2 == 0 {
				s.mu.Lock()
				s.failed++
				s.mu.Unlock()
				q.Failed(1, record.ReasonSinkError)
				continue
			}
			q.Delivered(1)
		}
	}
}

func TestSinkFailuresReportedAsSinkError(t *testing.T) {
	const n = 1000
	src := newSource(n, 50)
	all := newSink(n)
	failing := &failEvenSink{}
	p, err := New(Options{Source: src, Sinks: []SinkSpec{
		{Name: "all", Sink: all, QueueSize: 100, Policy: sinks.Block},
		{Name: "failing", Sink: failing, QueueSize: 100, Policy: sinks.Block},
	}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	cancel, done := runPipeline(t, p)
	<-src.sent
	<-all.reached
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	st := p.Stats()
	checkInvariant(t, st)
	var reported uint64
	for _, it := range all.got() {
		if !it.Loss {
			continue
		}
		l := decode(t, it)
		if l.Fanaudit.Lost.Reason != "sink_error" || l.Fanaudit.Lost.Sink != "failing" {
			t.Fatalf("unexpected loss record %s", it.Line)
		}
		reported += l.Fanaudit.Lost.Count
	}
	failing.mu.Lock()
	failed := failing.failed
	failing.mu.Unlock()
	if failed == 0 || reported != failed {
		t.Errorf("sink failed %d records, sink_error records report %d", failed, reported)
	}
}

// reasonSink fails file records with a sink-specific reason chosen by
// sequence, and reports losses of an earlier run's records once, as the
// Kafka sink does for its spool.
type reasonSink struct {
	mu     sync.Mutex
	failed map[string]uint64
}

var sinkReasons = []string{record.ReasonDeadLetter, record.ReasonSpoolFull, record.ReasonSpoolCorrupt}

func (*reasonSink) Reopen() error { return nil }
func (*reasonSink) Close() error  { return nil }
func (s *reasonSink) Run(ctx context.Context, q sinks.Input) error {
	q.LostEarlier(7, record.ReasonSpoolCorrupt, "run-before")
	buf := make([]*sinks.Item, 0, 64)
	for {
		items, err := q.Next(ctx, buf)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, it := range items {
			if !it.Loss && it.Seq%4 != 0 {
				reason := sinkReasons[it.Seq%4-1]
				s.mu.Lock()
				s.failed[reason]++
				s.mu.Unlock()
				q.Failed(1, reason)
				continue
			}
			q.Delivered(1)
		}
	}
}

// TestSinkFailuresReportedWithReason: failures a sink settles with a reason
// become events_lost records with that reason, sent to every sink, counting
// exactly what failed; an earlier run's losses name that run and stay out
// of this run's accounting.
func TestSinkFailuresReportedWithReason(t *testing.T) {
	const n = 1000
	src := newSource(n, 50)
	all := newSink(n)
	rs := &reasonSink{failed: map[string]uint64{}}
	p, err := New(Options{Source: src, Sinks: []SinkSpec{
		{Name: "all", Sink: all, QueueSize: 100, Policy: sinks.Block},
		{Name: "reasons", Sink: rs, QueueSize: 100, Policy: sinks.Block},
	}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	cancel, done := runPipeline(t, p)
	<-src.sent
	<-all.reached
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	st := p.Stats()
	checkInvariant(t, st)
	reported := map[string]uint64{}
	var earlier uint64
	for _, it := range all.got() {
		if !it.Loss {
			continue
		}
		l := decode(t, it).Fanaudit.Lost
		if l.Sink != "reasons" {
			t.Fatalf("unexpected loss record %s", it.Line)
		}
		if l.PreviousRunID != "" {
			if l.PreviousRunID != "run-before" || l.Reason != record.ReasonSpoolCorrupt {
				t.Fatalf("unexpected earlier-run loss record %s", it.Line)
			}
			earlier += l.Count
			continue
		}
		reported[l.Reason] += l.Count
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, r := range sinkReasons {
		if rs.failed[r] == 0 || reported[r] != rs.failed[r] {
			t.Errorf("%s: sink failed %d, loss records report %d", r, rs.failed[r], reported[r])
		}
	}
	if earlier != 7 {
		t.Errorf("earlier run's losses reported %d, want 7", earlier)
	}
	if q := st.Sinks[1]; q.Dropped != rs.failed[sinkReasons[0]]+rs.failed[sinkReasons[1]]+rs.failed[sinkReasons[2]] || q.LostEarlier != 7 {
		t.Errorf("queue stats %+v disagree with the failures %v", q, rs.failed)
	}
}

// TestFormatsEncodedOncePerFormat: two ECS sinks share the very items
// (one encoding), the OCSF sink gets its own, with the same sequence.
func TestFormatsEncodedOncePerFormat(t *testing.T) {
	src := newSource(4, 2)
	a, b, o := newSink(4), newSink(4), newSink(4)
	p, err := New(Options{Source: src, Encoding: record.Options{RunID: "r1"}, Sinks: []SinkSpec{
		{Name: "a", Sink: a, QueueSize: 8, Policy: sinks.Block},
		{Name: "o", Sink: o, QueueSize: 8, Policy: sinks.Block, Format: record.FormatOCSF},
		{Name: "b", Sink: b, QueueSize: 8, Policy: sinks.Block, Format: record.FormatECS},
	}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	cancel, done := runPipeline(t, p)
	<-src.sent
	<-a.reached
	<-b.reached
	<-o.reached
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ia, ib, io := a.got(), b.got(), o.got()
	for i := range ia {
		if ia[i] != ib[i] {
			t.Errorf("record %d: the ECS sinks got different items (encoded twice)", i)
		}
		if io[i].Seq != ia[i].Seq || !bytes.HasPrefix(io[i].Line, []byte(`{"activity_id":14,`)) || !bytes.HasPrefix(ia[i].Line, []byte(`{"@timestamp"`)) {
			t.Errorf("record %d: ecs %s ocsf %s", i, ia[i].Line, io[i].Line)
		}
	}
}

// TestStartRecordAndCheckpoint: the Start record (agent_restart) opens the
// stream with sequence 1, and the checkpoint ends at the last sequence,
// every record being settled.
func TestStartRecordAndCheckpoint(t *testing.T) {
	src := newSource(10, 3)
	sink := newSink(10)
	var mu sync.Mutex
	var last uint64
	start := &record.Record{Action: record.ActionEventsLost, Fanaudit: record.Meta{Lost: record.Lost{
		Reason: record.ReasonAgentRestart, PreviousRunID: "before", LastSequence: 41, HasLastSequence: true}}}
	p, err := New(Options{Source: src, Start: start, CheckpointInterval: time.Millisecond,
		Checkpoint: func(seq uint64) { mu.Lock(); last = seq; mu.Unlock() },
		Sinks:      []SinkSpec{{Name: "s", Sink: sink, QueueSize: 4}}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	cancel, done := runPipeline(t, p)
	<-sink.reached
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	items := sink.got()
	if len(items) != 11 || !items[0].Loss || items[0].Seq != 1 {
		t.Fatalf("items %d, first %+v", len(items), items[0])
	}
	var l struct {
		Fanaudit struct {
			Lost struct {
				Reason        string `json:"reason"`
				PreviousRunID string `json:"previous_run_id"`
				LastSequence  uint64 `json:"last_sequence"`
			} `json:"lost"`
		} `json:"fanaudit"`
	}
	if err := json.Unmarshal(items[0].Line, &l); err != nil || l.Fanaudit.Lost.Reason != "agent_restart" ||
		l.Fanaudit.Lost.PreviousRunID != "before" || l.Fanaudit.Lost.LastSequence != 41 {
		t.Fatalf("start record %s (%v)", items[0].Line, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if last != 11 {
		t.Errorf("last checkpoint %d, want 11", last)
	}
}

func TestSettledTracker(t *testing.T) {
	var tr settledTracker
	st := func(recv, settled []uint64) Stats {
		var s Stats
		for i := range recv {
			s.Sinks = append(s.Sinks, queue.Stats{Received: recv[i], Delivered: settled[i]})
		}
		return s
	}
	steps := []struct {
		recv, settled []uint64
		want          uint64
	}{
		{[]uint64{10, 10}, []uint64{10, 4}, 0},   // sink 2 lags
		{[]uint64{20, 20}, []uint64{20, 10}, 10}, // sink 2 caught up with sample 1
		{[]uint64{30, 30}, []uint64{30, 30}, 30},
		{[]uint64{35, 34}, []uint64{30, 30}, 30}, // mid-push: the smaller count
		{[]uint64{35, 35}, []uint64{35, 35}, 35},
	}
	for i, s := range steps {
		if got := tr.observe(st(s.recv, s.settled)); got != s.want {
			t.Fatalf("step %d: settled %d, want %d", i, got, s.want)
		}
	}
}

// orderedSink holds up to hold items before settling the oldest (all of
// them once it has caught up), checks
// every line still holds its own record when it settles it (a line
// buffer reused too early would not), and settles in order; it declares
// so, which lets the pipeline reuse line buffers.
type orderedSink struct {
	hold  int
	fail  bool // fail every other settlement
	lines int
	bad   []string
}

func (*orderedSink) SettlesInOrder() bool { return true }
func (*orderedSink) Reopen() error        { return nil }
func (*orderedSink) Close() error         { return nil }
func (s *orderedSink) Run(ctx context.Context, q sinks.Input) error {
	var held []*sinks.Item
	want := map[*sinks.Item][]byte{}
	settle := func(n int) {
		for _, it := range held[:n] {
			if !bytes.Equal(it.Line, want[it]) || !bytes.Contains(it.Line, []byte(`"sequence":`+strconv.FormatUint(it.Seq, 10)+`,`)) {
				s.bad = append(s.bad, string(it.Line))
			}
			delete(want, it)
		}
		held = held[n:]
		if s.fail && s.lines%2 == 1 {
			q.Failed(n, "test")
		} else {
			q.Delivered(n)
		}
		s.lines += n
	}
	buf := make([]*sinks.Item, 0, 7)
	for {
		items, err := q.Next(ctx, buf)
		if errors.Is(err, io.EOF) {
			settle(len(held))
			return nil
		}
		if err != nil {
			return err
		}
		for _, it := range items {
			want[it] = bytes.Clone(it.Line)
		}
		held = append(held, items...)
		switch {
		case q.Len() == 0:
			settle(len(held)) // caught up: flush, as real sinks do
		case len(held) > s.hold:
			settle(len(held) - s.hold)
		}
	}
}

// fanOver is the fan-out stage of a pipeline (no source records) over
// sinks, driven by hand with emitBatch.
func fanOver(t *testing.T, specs []SinkSpec) (*Pipeline, *fanState) {
	t.Helper()
	p, err := New(Options{Source: newSource(0, 1), Sinks: specs}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return p, newFanState(p)
}

// deliverAll takes everything queued in q (into buf) and settles it as
// delivered, as a sink that keeps up does; it allocates nothing.
func deliverAll(t *testing.T, ctx context.Context, q *queue.Queue, buf []*queue.Item) {
	t.Helper()
	for q.Len() > 0 {
		items, err := q.Next(ctx, buf)
		if err != nil {
			t.Fatal(err)
		}
		q.Delivered(len(items))
	}
}

// closeWrites are n close_write records, now, of files /srv/f0… by one
// process (name, /bin/name, cmdline) on host.
func closeWrites(n int, host *record.Host, name, cmdline string) []*record.Record {
	batch := make([]*record.Record, n)
	for i := range batch {
		batch[i] = &record.Record{Timestamp: time.Now(), Action: record.ActionCloseWrite, Host: host,
			File:    record.File{Path: "/srv/f" + strconv.Itoa(i)},
			Process: record.Process{Pid: 42, Name: name, Executable: "/bin/" + name, CommandLine: cmdline}}
	}
	return batch
}

// creates are n create records of files /srv/f<first>, /srv/f<first+1>…
func creates(first, n int) []*record.Record {
	batch := make([]*record.Record, n)
	for i := range batch {
		batch[i] = &record.Record{Action: record.ActionCreate, File: record.File{Path: "/srv/f" + strconv.Itoa(first+i)}}
	}
	return batch
}

// TestLineBuffersReused runs records through two sinks that settle in
// order, one slowly and failing half of what it settles, one with a
// small drop_oldest queue, and checks that no line changed before its
// sink settled it: buffers are reused only when every queue is done.
func TestLineBuffersReused(t *testing.T) {
	const n = 20000
	src := newSource(n, 33)
	a, b := &orderedSink{hold: 100, fail: true}, &orderedSink{hold: 3}
	p, err := New(Options{Source: src, Sinks: []SinkSpec{
		{Name: "a", Sink: a, QueueSize: 64, Policy: sinks.Block},
		{Name: "b", Sink: b, QueueSize: 16, Policy: sinks.DropOldest},
	}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	cancel, done := runPipeline(t, p)
	<-src.sent
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*orderedSink{"a": a, "b": b} {
		if len(s.bad) > 0 {
			t.Errorf("sink %s: %d lines changed before they were settled, first: %s", name, len(s.bad), s.bad[0])
		}
	}
	st := p.Stats()
	if a.lines < n {
		t.Errorf("sink a settled %d lines, want at least %d", a.lines, n)
	}
	for _, q := range st.Sinks {
		if q.Received != q.Delivered+q.Dropped || q.InFlight != 0 {
			t.Errorf("sink %s: %+v", q.Sink, q)
		}
	}
}

// TestEmitBatchAllocs: once warm, numbering, encoding and queueing a batch
// for sinks that settle in order allocates nothing.
func TestEmitBatchAllocs(t *testing.T) {
	p, f := fanOver(t, []SinkSpec{
		{Name: "a", Sink: &orderedSink{}, QueueSize: 1024},
		{Name: "b", Sink: &orderedSink{}, QueueSize: 1024},
	})
	host := &record.Host{Hostname: "h", ID: "id", BootID: "b"}
	slab := make([]record.Record, 200)
	batch := make([]*record.Record, len(slab))
	for i := range slab {
		slab[i] = record.Record{Timestamp: time.Now(), Action: record.ActionCloseWrite, Host: host,
			File:    record.File{Path: "/srv/f" + strconv.Itoa(i)},
			Process: record.Process{Pid: 42, Name: "x", Executable: "/bin/x", CommandLine: "x -y"}}
		batch[i] = &slab[i]
	}
	ctx := context.Background()
	buf := make([]*queue.Item, 0, 64)
	round := func() {
		if err := f.emitBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
		for _, q := range p.queues {
			deliverAll(t, ctx, q, buf)
		}
	}
	round()
	if a := testing.AllocsPerRun(50, round); a != 0 {
		t.Errorf("emitBatch allocates %.1f times per batch of %d, want 0", a, len(batch))
	}
}

// TestChunksBackToBack: for sinks that settle in order, the lines of
// successive chunks lie back to back in one slab until it is full, so a
// file sink writes them from there in one write (queue.Run).
func TestChunksBackToBack(t *testing.T) {
	p, f := fanOver(t, []SinkSpec{
		{Name: "a", Sink: &orderedSink{}, QueueSize: 1024},
	})
	mk := func(n int) []*record.Record { return creates(0, n) }
	ctx := context.Background()
	q := p.queues[0]
	take := func(want int) []*queue.Item {
		t.Helper()
		items, err := q.Next(ctx, make([]*queue.Item, 0, 1024))
		if err != nil || len(items) != want {
			t.Fatalf("took %d items (%v), want %d", len(items), err, want)
		}
		return items
	}
	for range 3 {
		if err := f.emitBatch(ctx, mk(10)); err != nil {
			t.Fatal(err)
		}
	}
	items := take(30)
	run, n := queue.Run(items)
	var all []byte
	for _, it := range items {
		all = append(all, it.Line...)
	}
	if n != 30 || !bytes.Equal(run, all) {
		t.Fatalf("Run covers %d of 30 items (%d of %d bytes)", n, len(run), len(all))
	}
	q.Delivered(30)
	// The slab holds slabItems lines: the run ends where it is full.
	if err := f.emitBatch(ctx, mk(250)); err != nil {
		t.Fatal(err)
	}
	items = take(250)
	if _, n := queue.Run(items); n != slabItems-30 {
		t.Fatalf("Run covers %d items, want %d (the rest of the slab)", n, slabItems-30)
	}
	if _, n := queue.Run(items[slabItems-30:]); n != 250-(slabItems-30) {
		t.Fatalf("Run covers %d items of the next slab, want %d", n, 250-(slabItems-30))
	}
	q.Delivered(250)
}

// TestLossRecordsKeepNoSlab: a sink that stalls under a drop policy gets
// an events_lost record every LossInterval past its queue's capacity (loss
// records are never dropped), for as long as it stalls. Such a record must
// not keep a slab alive: that is up to 256 other records' lines, hundreds
// of KiB, held per second of the stall.
func TestLossRecordsKeepNoSlab(t *testing.T) {
	p, f := fanOver(t, []SinkSpec{
		{Name: "fast", Sink: &orderedSink{}, QueueSize: 1024},
		{Name: "stalled", Sink: &orderedSink{}, QueueSize: 8, Policy: sinks.DropNewest},
	})
	ctx := context.Background()
	fast, stalled := p.queues[0], p.queues[1]
	host := &record.Host{Hostname: "h", ID: "id", BootID: "b"}
	mk := func(n int) []*record.Record { return closeWrites(n, host, "x", "x -y") }
	buf := make([]*queue.Item, 0, 1024)
	const rounds = 40
	for range rounds {
		// A second of traffic, then that second's loss report.
		if err := f.emitBatch(ctx, mk(300)); err != nil {
			t.Fatal(err)
		}
		if err := f.reportLosses(ctx, true); err != nil {
			t.Fatal(err)
		}
		deliverAll(t, ctx, fast, buf)
	}
	items, err := stalled.Next(ctx, buf)
	if err != nil {
		t.Fatal(err)
	}
	losses, slabs, pinned := 0, map[*lineBatch]bool{}, 0
	for _, it := range items {
		if it.Loss {
			losses++
		}
		if lb, ok := it.Owner.(*lineBatch); ok && !slabs[lb] {
			slabs[lb] = true
			pinned += cap(lb.buf)
		}
	}
	if losses != rounds {
		t.Fatalf("the stalled queue holds %d loss records, want %d", losses, rounds)
	}
	// Its 8 queued records lie in one slab, or two.
	if len(slabs) > 2 {
		t.Errorf("the stalled queue's %d items (%d loss records) keep %d slabs (%d KiB) alive, want at most 2",
			len(items), losses, len(slabs), pinned>>10)
	}
	stalled.Delivered(len(items))
}

// TestSlabNotReusedWhileHeld: a sink that holds items it took keeps their
// slabs from reuse while another sink settles everything and its own
// queue drops (drop_newest) or evicts (drop_oldest) every later item, for
// many slabs' worth of records: the held lines stay as they were encoded.
func TestSlabNotReusedWhileHeld(t *testing.T) {
	for _, policy := range []sinks.Policy{sinks.DropNewest, sinks.DropOldest} {
		t.Run(policy.String(), func(t *testing.T) {
			p, f := fanOver(t, []SinkSpec{
				{Name: "fast", Sink: &orderedSink{}, QueueSize: 1024},
				{Name: "holder", Sink: &orderedSink{}, QueueSize: 16, Policy: policy},
			})
			ctx := context.Background()
			fast, holder := p.queues[0], p.queues[1]
			next := 0
			mk := func(n int) []*record.Record {
				batch := creates(next+1, n)
				next += n
				return batch
			}
			drainFast := func() {
				t.Helper()
				deliverAll(t, ctx, fast, make([]*queue.Item, 0, 1024))
			}
			if err := f.emitBatch(ctx, mk(10)); err != nil {
				t.Fatal(err)
			}
			drainFast()
			held, err := holder.Next(ctx, make([]*queue.Item, 0, 1024))
			if err != nil || len(held) != 10 {
				t.Fatalf("took %d items (%v), want 10", len(held), err)
			}
			want := make([][]byte, len(held))
			for i, it := range held {
				want[i] = bytes.Clone(it.Line)
			}
			for range 100 { // ~120 slabs
				if err := f.emitBatch(ctx, mk(300)); err != nil {
					t.Fatal(err)
				}
				drainFast()
			}
			for i, it := range held {
				if !bytes.Equal(it.Line, want[i]) {
					t.Fatalf("held line %d changed:\n got %.200q\nwant %.200q", i, it.Line, want[i])
				}
			}
			holder.Delivered(len(held))
			if st := holder.Stats(); st.Dropped == 0 {
				t.Fatalf("the holder's queue dropped nothing: %+v", st)
			}
		})
	}
}

// TestLongLineAloneKeepsSlabsPooled: one long line alone in its chunk (a
// process whose command line is 4 KiB, live, where a read is often a
// record or two) must not make every later slab too big to pool: then
// each one was allocated anew, and a full queue of ordinary lines kept
// slabs mostly empty alive.
func TestLongLineAloneKeepsSlabsPooled(t *testing.T) {
	p, f := fanOver(t, []SinkSpec{
		{Name: "a", Sink: &orderedSink{}, QueueSize: 1024},
	})
	host := &record.Host{Hostname: "h", ID: "id", BootID: "b"}
	mk := func(n int, cmdline string) []*record.Record { return closeWrites(n, host, "java", cmdline) }
	ctx := context.Background()
	q := p.queues[0]
	buf := make([]*queue.Item, 0, 1024)
	batch := mk(200, "java -jar x.jar")
	round := func() {
		if err := f.emitBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
		deliverAll(t, ctx, q, buf)
	}
	round()
	if err := f.emitBatch(ctx, mk(1, "java -cp "+strings.Repeat("/opt/lib/x.jar:", 270))); err != nil {
		t.Fatal(err)
	}
	round()
	round()
	a := testing.AllocsPerRun(50, round)
	lb := f.encs[0].cur
	if line := len(lb.items[0].Line); a != 0 || cap(lb.buf) > 4*slabItems*line {
		t.Errorf("after one long line, emitBatch allocates %.1f times per batch of %d, want 0; slab of %d KiB for lines of %d bytes",
			a, len(batch), cap(lb.buf)>>10, line)
	}
}
