package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"testing"
)

func item(seq uint64) *Item {
	return &Item{Seq: seq, Line: []byte("{}\n")}
}

func lossItem(seq uint64) *Item {
	return &Item{Seq: seq, Line: []byte("{}\n"), Loss: true}
}

func checkInvariant(t testing.TB, s Stats) {
	t.Helper()
	if s.Received != s.Delivered+s.Dropped+s.InFlight {
		t.Fatalf("invariant broken: %+v", s)
	}
}

func seqs(items []*Item) []uint64 {
	out := make([]uint64, len(items))
	for i, it := range items {
		out[i] = it.Seq
	}
	return out
}

func equalSeqs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		in      string
		want    Policy
		wantErr bool
	}{
		{"block", Block, false},
		{"drop_newest", DropNewest, false},
		{"drop_oldest", DropOldest, false},
		{"Block", Block, true},
		{"", Block, true},
		{"drop", Block, true},
	}
	for _, tc := range tests {
		got, err := ParsePolicy(tc.in)
		if (err != nil) != tc.wantErr {
			t.Fatalf("ParsePolicy(%q) err = %v, wantErr %v", tc.in, err, tc.wantErr)
		}
		if err == nil {
			if got != tc.want || got.String() != tc.in {
				t.Fatalf("ParsePolicy(%q) = %v", tc.in, got)
			}
			var p Policy
			if err := p.UnmarshalText([]byte(tc.in)); err != nil || p != tc.want {
				t.Fatalf("UnmarshalText(%q) = %v, %v", tc.in, p, err)
			}
		}
	}
	if s := Policy(7).String(); s != "Policy(7)" {
		t.Fatalf("String of invalid policy = %q", s)
	}
}

// TestQueuePolicies pushes a sequence into a queue of capacity 3 without a
// consumer and checks what is queued and what was dropped.
func TestQueuePolicies(t *testing.T) {
	tests := []struct {
		name        string
		policy      Policy
		push        []*Item
		wantQueued  []uint64
		wantDropped uint64
	}{
		{"drop_newest", DropNewest, []*Item{item(1), item(2), item(3), item(4), item(5)}, []uint64{1, 2, 3}, 2},
		{"drop_oldest", DropOldest, []*Item{item(1), item(2), item(3), item(4), item(5)}, []uint64{3, 4, 5}, 2},
		{"drop_newest keeps loss", DropNewest, []*Item{item(1), item(2), item(3), lossItem(4), item(5)}, []uint64{1, 2, 3, 4}, 1},
		{"drop_oldest skips loss at head", DropOldest, []*Item{lossItem(1), item(2), item(3), item(4)}, []uint64{1, 3, 4}, 1},
		{"drop_oldest all loss drops new", DropOldest, []*Item{lossItem(1), lossItem(2), lossItem(3), item(4), lossItem(5)}, []uint64{1, 2, 3, 5}, 1},
		{"block accepts loss past capacity", Block, []*Item{item(1), item(2), item(3), lossItem(4), lossItem(5)}, []uint64{1, 2, 3, 4, 5}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := New("t", 3, tc.policy)
			for _, it := range tc.push {
				if err := q.Push(context.Background(), it); err != nil {
					t.Fatalf("push %d: %v", it.Seq, err)
				}
				checkInvariant(t, q.Stats())
			}
			s := q.Stats()
			if s.Dropped != tc.wantDropped || s.Received != uint64(len(tc.push)) {
				t.Fatalf("stats %+v, want dropped %d", s, tc.wantDropped)
			}
			if got := q.TakeUnreported().Total(); got != tc.wantDropped {
				t.Fatalf("TakeUnreported = %d, want %d", got, tc.wantDropped)
			}
			if got := q.TakeUnreported().Total(); got != 0 {
				t.Fatalf("second TakeUnreported = %d, want 0", got)
			}
			q.Close()
			got, err := q.Next(context.Background(), make([]*Item, 0, 16))
			if err != nil {
				t.Fatal(err)
			}
			if !equalSeqs(seqs(got), tc.wantQueued) {
				t.Fatalf("queued %v, want %v", seqs(got), tc.wantQueued)
			}
			q.Delivered(len(got))
			if _, err := q.Next(context.Background(), got); !errors.Is(err, io.EOF) {
				t.Fatalf("Next after drain: %v, want EOF", err)
			}
			s = q.Stats()
			checkInvariant(t, s)
			if s.InFlight != 0 || s.Delivered != uint64(len(tc.wantQueued)) {
				t.Fatalf("final stats %+v", s)
			}
		})
	}
}

func TestQueueNextBatchesInOrder(t *testing.T) {
	q := New("t", 100, Block)
	for i := uint64(1); i <= 10; i++ {
		if err := q.Push(context.Background(), item(i)); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]*Item, 0, 4)
	var all []uint64
	for _, want := range []int{4, 4, 2} {
		got, err := q.Next(context.Background(), buf)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != want {
			t.Fatalf("batch of %d, want %d", len(got), want)
		}
		all = append(all, seqs(got)...)
		q.Failed(len(got)/2, "sink_error")
		q.Delivered(len(got) - len(got)/2)
		checkInvariant(t, q.Stats())
	}
	if !equalSeqs(all, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}) {
		t.Fatalf("order %v", all)
	}
	if s := q.Stats(); s.Dropped != 5 || s.Delivered != 5 || s.InFlight != 0 {
		t.Fatalf("stats %+v", s)
	}
	// Over-settling is clamped rather than breaking the invariant.
	q.Delivered(3)
	checkInvariant(t, q.Stats())
	// A zero-capacity buffer still gets an item.
	if err := q.Push(context.Background(), item(11)); err != nil {
		t.Fatal(err)
	}
	got, err := q.Next(context.Background(), nil)
	if err != nil || len(got) != 1 || got[0].Seq != 11 {
		t.Fatalf("Next(nil) = %v, %v", seqs(got), err)
	}
}

func TestQueueBlockWaitsForRoom(t *testing.T) {
	q := New("t", 1, Block)
	ctx := context.Background()
	if err := q.Push(ctx, item(1)); err != nil {
		t.Fatal(err)
	}
	pushed := make(chan error)
	go func() { pushed <- q.Push(ctx, item(2)) }()
	got, err := q.Next(ctx, make([]*Item, 0, 1))
	if err != nil || got[0].Seq != 1 {
		t.Fatalf("Next = %v, %v", seqs(got), err)
	}
	if err := <-pushed; err != nil {
		t.Fatalf("blocked push: %v", err)
	}
	q.Delivered(1)
	got, err = q.Next(ctx, got)
	if err != nil || got[0].Seq != 2 {
		t.Fatalf("Next = %v, %v", seqs(got), err)
	}
	q.Delivered(1)
	checkInvariant(t, q.Stats())
}

func TestQueueCancelAndClose(t *testing.T) {
	tests := []struct {
		name string
		stop func(q *Queue, cancel context.CancelFunc)
		want error
	}{
		{"ctx", func(_ *Queue, cancel context.CancelFunc) { cancel() }, context.Canceled},
		{"close", func(q *Queue, _ context.CancelFunc) { q.Close() }, ErrClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := New("t", 1, Block)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if err := q.Push(ctx, item(1)); err != nil {
				t.Fatal(err)
			}
			pushed := make(chan error)
			go func() { pushed <- q.Push(ctx, item(2)) }()
			tc.stop(q, cancel)
			if err := <-pushed; !errors.Is(err, tc.want) {
				t.Fatalf("push = %v, want %v", err, tc.want)
			}
			s := q.Stats()
			checkInvariant(t, s)
			if s.Received != 1 || s.Dropped != 0 {
				t.Fatalf("an abandoned push must not count: %+v", s)
			}
		})
	}

	// Next on an empty queue returns on ctx end and on Close.
	q := New("t", 1, Block)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { _, err := q.Next(ctx, nil); done <- err }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Next after cancel: %v", err)
	}
	go func() { _, err := q.Next(context.Background(), nil); done <- err }()
	q.Close()
	if err := <-done; !errors.Is(err, io.EOF) {
		t.Fatalf("Next after close: %v", err)
	}
	if err := q.Push(context.Background(), nil); err == nil {
		t.Fatal("nil push accepted")
	}
}

// TestQueueHammer races producers, consumers that settle both ways, and a
// stats reader that checks the invariant on every snapshot.
func TestQueueHammer(t *testing.T) {
	for _, policy := range []Policy{Block, DropNewest, DropOldest} {
		t.Run(policy.String(), func(t *testing.T) {
			const producers, consumers, perProducer = 4, 3, 20000
			q := New("t", 64, policy)
			ctx := context.Background()
			var prodWG, consWG sync.WaitGroup
			var lossPushed uint64 = producers * (perProducer / 1000)
			seen := make([]map[uint64]bool, consumers)
			lossSeen := make([]uint64, consumers)
			for p := 0; p < producers; p++ {
				prodWG.Add(1)
				go func() {
					defer prodWG.Done()
					for i := 0; i < perProducer; i++ {
						it := item(uint64(p*perProducer + i + 1))
						it.Loss = i%1000 == 0
						if err := q.Push(ctx, it); err != nil {
							t.Errorf("push: %v", err)
							return
						}
					}
				}()
			}
			for c := 0; c < consumers; c++ {
				consWG.Add(1)
				seen[c] = map[uint64]bool{}
				go func() {
					defer consWG.Done()
					buf := make([]*Item, 0, 16)
					for n := 0; ; n++ {
						got, err := q.Next(ctx, buf)
						if errors.Is(err, io.EOF) {
							return
						}
						if err != nil {
							t.Errorf("next: %v", err)
							return
						}
						for _, it := range got {
							if seen[c][it.Seq] {
								t.Errorf("seq %d twice", it.Seq)
							}
							seen[c][it.Seq] = true
							if it.Loss {
								lossSeen[c]++
							}
						}
						if n%7 == 0 {
							q.Failed(1, "sink_error")
							q.Delivered(len(got) - 1)
						} else {
							q.Delivered(len(got))
						}
					}
				}()
			}
			stop := make(chan struct{})
			statsDone := make(chan int)
			go func() {
				n := 0
				for {
					select {
					case <-stop:
						statsDone <- n
						return
					default:
					}
					checkInvariant(t, q.Stats())
					n++
				}
			}()
			prodWG.Wait()
			q.Close()
			consWG.Wait()
			close(stop)
			if n := <-statsDone; n == 0 {
				t.Fatal("no stats snapshot taken")
			}
			s := q.Stats()
			checkInvariant(t, s)
			if s.Received != producers*perProducer || s.InFlight != 0 || s.Depth != 0 {
				t.Fatalf("final stats %+v", s)
			}
			var loss uint64
			for _, n := range lossSeen {
				loss += n
			}
			if loss != lossPushed {
				t.Fatalf("saw %d loss records, pushed %d", loss, lossPushed)
			}
			if policy == Block && s.Dropped == 0 {
				t.Fatal("Failed calls were not counted as dropped")
			}
			if got := q.TakeUnreported().Total(); got != s.Dropped {
				t.Fatalf("unreported %d, dropped %d", got, s.Dropped)
			}
		})
	}
}

func BenchmarkQueue(b *testing.B) {
	for _, batch := range []int{1, 64, 512} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			q := New("b", 4096, Block)
			ctx := context.Background()
			it := item(1)
			done := make(chan struct{})
			go func() {
				defer close(done)
				buf := make([]*Item, 0, batch)
				for {
					got, err := q.Next(ctx, buf)
					if err != nil {
						return
					}
					q.Delivered(len(got))
				}
			}()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := q.Push(ctx, it); err != nil {
					b.Fatal(err)
				}
			}
			q.Close()
			<-done
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
		})
	}
}

// TestQueuePark: parked items stay in flight (the invariant and Health see
// them) but WaitSettled does not wait for them; unparked and settled, they
// leave the in-flight count.
func TestQueuePark(t *testing.T) {
	q := New("s", 10, Block)
	ctx := context.Background()
	for i := uint64(1); i <= 5; i++ {
		if err := q.Push(ctx, item(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := q.Next(ctx, make([]*Item, 0, 10)); err != nil {
		t.Fatal(err)
	}
	q.Delivered(1)
	q.Park(3)
	waitCtx, cancel := context.WithTimeout(ctx, 0)
	if err := q.WaitSettled(waitCtx); err == nil {
		t.Fatal("WaitSettled returned with an unparked item in flight")
	}
	cancel()
	q.Failed(1, "dead_letter") // the one not parked
	if err := q.WaitSettled(ctx); err != nil {
		t.Fatalf("WaitSettled with only parked items in flight: %v", err)
	}
	st := q.Stats()
	checkInvariant(t, st)
	if st.InFlight != 3 || st.Parked != 3 {
		t.Fatalf("stats %+v; want 3 in flight, all parked", st)
	}
	q.Unpark(3)
	q.Delivered(3)
	if st := q.Stats(); st.InFlight != 0 || st.Parked != 0 || st.Delivered != 4 || st.Dropped != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// countOwner counts releases.
type countOwner struct{ n int }

func (c *countOwner) Release(n int) { c.n += n }

// TestQueueReleasesOwners: a queue whose sink settles in order tells an
// item's owner exactly once that it is done with it, whether the item was
// settled, dropped by either policy or failed by Abandon, and never while
// the sink holds it.
func TestQueueReleasesOwners(t *testing.T) {
	ctx := context.Background()
	for _, pol := range []Policy{DropNewest, DropOldest} {
		t.Run(pol.String(), func(t *testing.T) {
			q := New("s", 2, pol)
			q.SettleInOrder()
			own := make([]countOwner, 6)
			items := make([]Item, len(own))
			for i := range items {
				items[i] = Item{Seq: uint64(i + 1), Line: []byte("x\n"), Owner: &own[i]}
			}
			push := func(i int) {
				if err := q.Push(ctx, &items[i]); err != nil {
					t.Fatal(err)
				}
			}
			push(0)
			push(1)
			push(2) // full: one of 0..2 dropped
			if got := own[0].n + own[1].n + own[2].n; got != 1 {
				t.Fatalf("after a drop: %d releases, want 1", got)
			}
			taken, err := q.Next(ctx, make([]*Item, 0, 1))
			if err != nil {
				t.Fatal(err)
			}
			if o := taken[0].Owner.(*countOwner); o.n != 0 {
				t.Fatal("a taken item was released before it was settled")
			}
			push(3)
			q.Delivered(1)
			if o := taken[0].Owner.(*countOwner); o.n != 1 {
				t.Fatalf("settled item released %d times", o.n)
			}
			q.Abandon("sink_error")
			push(4)
			push(5)
			for i := range own {
				if own[i].n != 1 {
					t.Errorf("item %d released %d times, want 1", i, own[i].n)
				}
			}
		})
	}
}

// TestPushAllIsPush: PushAll leaves a queue as pushing the items one by
// one does, for every policy, loss records and an abandoned queue
// included.
func TestPushAllIsPush(t *testing.T) {
	ctx := context.Background()
	mk := func() []Item {
		items := make([]Item, 7)
		for i := range items {
			items[i] = Item{Seq: uint64(i + 1), Line: []byte("{}\n"), Loss: i == 4}
		}
		return items
	}
	state := func(q *Queue) string {
		st := q.Stats()
		var seqs []uint64
		for q.Len() > 0 {
			got, err := q.Next(ctx, make([]*Item, 0, 16))
			if err != nil {
				t.Fatal(err)
			}
			for _, it := range got {
				seqs = append(seqs, it.Seq)
			}
			q.Delivered(len(got))
		}
		return fmt.Sprintf("%+v %v %v", st, q.TakeUnreported(), seqs)
	}
	for _, pol := range []Policy{DropNewest, DropOldest, Block} {
		for _, abandon := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/abandoned=%v", pol, abandon), func(t *testing.T) {
				one, all := New("s", 3, pol), New("s", 3, pol)
				n := 7
				if pol == Block && !abandon {
					n = 3 // a fourth would wait for room
				}
				if abandon {
					one.Abandon("sink_error")
					all.Abandon("sink_error")
				}
				items := mk()
				for i := range items[:n] {
					if err := one.Push(ctx, &items[i]); err != nil {
						t.Fatal(err)
					}
				}
				got, err := all.PushAll(ctx, mk()[:n])
				if err != nil || got != n {
					t.Fatalf("PushAll = %d, %v", got, err)
				}
				if a, b := state(one), state(all); a != b {
					t.Errorf("Push one by one: %s\nPushAll:          %s", a, b)
				}
			})
		}
	}
	// Block: PushAll waits for room like Push and gives up with ctx.
	q := New("s", 2, Block)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if got, err := q.PushAll(cctx, mk()[:3]); got != 2 || !errors.Is(err, context.Canceled) {
		t.Errorf("PushAll on a full Block queue with ctx cancelled = %d, %v", got, err)
	}
}

func TestRun(t *testing.T) {
	// Three lines back to back in one buffer, as the fan-out encodes
	// them, and one elsewhere.
	buf := make([]byte, 0, 64)
	var spans []*Item
	for _, l := range []string{"a\n", "bb\n", "ccc\n"} {
		start := len(buf)
		buf = append(buf, l...)
		end := len(buf)
		spans = append(spans, &Item{Line: buf[start:end:end], Span: buf[start:end:cap(buf)]})
	}
	other := []byte("dddd\n")
	elsewhere := &Item{Line: other, Span: other}
	noSpan := &Item{Line: []byte("e\n")}
	// A Span cut short (capacity ending with its line) must stop the run
	// without reaching past it.
	short := &Item{Line: spans[0].Line, Span: spans[0].Line}

	tests := []struct {
		name  string
		items []*Item
		want  string
		n     int
	}{
		{"none", nil, "", 0},
		{"one", spans[:1], "a\n", 1},
		{"back to back", spans, "a\nbb\nccc\n", 3},
		{"from the middle", spans[1:], "bb\nccc\n", 2},
		{"then elsewhere", []*Item{spans[0], spans[1], elsewhere, spans[2]}, "a\nbb\n", 2},
		{"a gap", []*Item{spans[0], spans[2]}, "a\n", 1},
		{"without span", []*Item{noSpan, spans[0]}, "e\n", 1},
		{"span cut short", []*Item{short, spans[1]}, "a\n", 1},
		{"out of order", []*Item{spans[1], spans[0]}, "bb\n", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, n := Run(tc.items)
			if string(got) != tc.want || n != tc.n {
				t.Fatalf("Run = %q, %d; want %q, %d", got, n, tc.want, tc.n)
			}
		})
	}
}
