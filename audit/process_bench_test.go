package audit

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/internal/kernel"
)

// seedBuffer reads a FuzzDecode seed: a buffer captured from a real read.
func seedBuffer(tb testing.TB, name string) []byte {
	data, err := os.ReadFile("../internal/kernel/testdata/fuzz/FuzzDecode/" + name)
	if err != nil {
		tb.Skip(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 8<<20)
	sc.Scan()
	sc.Scan()
	l := sc.Text()
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(l, "[]byte("), ")"))
	if err != nil {
		tb.Fatal(err)
	}
	return []byte(s)
}

// BenchmarkProcess prices what the reader does per kernel event after the
// read: decode, name (cache hits), split, filter, build Events. No
// syscalls: every directory handle is in the cache. ns/op and allocs/op
// are per kernel event.
func BenchmarkProcess(b *testing.B) { benchProcess(b, "/m") }

// BenchmarkProcessOutOfScope: the same buffer under a filesystem mark
// whose watched path is elsewhere on the filesystem: every event is
// dropped by its directory's cached verdict (one decode, one lookup).
func BenchmarkProcessOutOfScope(b *testing.B) { benchProcess(b, "/elsewhere") }

func benchProcess(b *testing.B, root string) {
	seed := seedBuffer(b, "real-wl")
	raw, err := kernel.Decode(nil, seed)
	if err != nil {
		b.Fatal(err)
	}
	c := &Capture{
		log:  zerolog.Nop(),
		opts: Options{},
		want: setOf(actionBits2()),
		dirs: newPathCache(dirCacheSize), gone: newPathCache(goneCacheSize),
		scope: scope{roots: []string{root}},
		self:  -1,
	}
	for _, r := range raw {
		for _, h := range []kernel.Handle{r.Dir, r.OldDir, r.NewDir, r.FID} {
			if h.Valid() {
				c.dirs.put(h.Key, "/m/dir")
			}
		}
	}
	// Repeat the buffer to the size of a real batch.
	var buf []byte
	for len(buf) < 200<<10 {
		buf = append(buf, seed...)
	}
	n := len(raw) * (len(buf) / len(seed))
	now := time.Now()
	var emitted int
	c.process(buf, now, false) // warm: scope verdicts cached
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += n {
		evs, _ := c.process(buf, now, false)
		emitted += len(evs)
	}
	b.ReportMetric(float64(emitted)/float64(b.N), "events/kevent")
}

func actionBits2() (out []Action) {
	for _, ab := range actionBits {
		out = append(out, ab.action)
	}
	return out
}

// TestRecycleReusesEvents: a slice given back with Recycle is the storage
// of the next batch, which comes out as a fresh slice would.
func TestRecycleReusesEvents(t *testing.T) {
	seed, c, fresh := seededCaptures(t)
	now := time.Now()
	first, _ := c.process(seed, now, false)
	if len(first) == 0 {
		t.Fatal("no events from the seed buffer")
	}
	c.Recycle(first)
	second, _ := c.process(seed, now, false)
	fresh.process(seed, now, false) // the same caches' state as c
	want, _ := fresh.process(seed, now, false)
	if &second[:1][0] != &first[:1][0] {
		t.Error("the recycled slice was not reused")
	}
	if len(second) != len(want) {
		t.Fatalf("%d events from a recycled slice, %d from a new one", len(second), len(want))
	}
	for i := range second {
		a, b := second[i], want[i]
		a.fid, b.fid = nil, nil
		if a != b {
			t.Fatalf("event %d: %+v from a recycled slice, %+v from a new one", i, a, b)
		}
	}
}

// TestRecycleReusesFileIDs: the file ids and handle bytes a batch's
// events point to are reused with its slice (Recycle), not allocated per
// read, and come out as fresh ones would; events held for a name get
// copies of their own, since they go out after their batch.
func TestRecycleReusesFileIDs(t *testing.T) {
	seed, c, fresh := seededCaptures(t)
	now := time.Now()
	first, _ := c.process(seed, now, false)
	var mem *batchMem
	for i := range first {
		if f := first[i].fid; f != nil {
			mem = f.mem
			break
		}
	}
	if mem == nil {
		t.Fatal("no event of the seed buffer has a file id from its batch memory")
	}
	c.Recycle(first)
	second, _ := c.process(seed, now, false)
	fresh.process(seed, now, false) // the same caches' state as c
	want, _ := fresh.process(seed, now, false)
	if len(second) != len(want) {
		t.Fatalf("%d events from recycled memory, %d from new", len(second), len(want))
	}
	reused := false
	for i := range second {
		a, b := second[i].fid, want[i].fid
		if (a == nil) != (b == nil) {
			t.Fatalf("event %d: file id %v from recycled memory, %v from new", i, a, b)
		}
		if a == nil {
			continue
		}
		reused = reused || a.mem == mem
		if a.htype != b.htype || !bytes.Equal(a.handle, b.handle) {
			t.Fatalf("event %d: handle %d %x from recycled memory, %d %x from new", i, a.htype, a.handle, b.htype, b.handle)
		}
	}
	if !reused {
		t.Error("the recycled batch memory was not reused")
	}

	// A held event's file id must not point into memory the next batch
	// reuses; the actions of one kernel event still share theirs.
	var p pendingNames
	var evs []Event
	for i := range second {
		if second[i].fid != nil {
			evs = append(evs, second[i], second[i])
			break
		}
	}
	p.add(wait{key: "k"}, evs)
	held := p.byKey["k"][0].evs
	if f := held[0].fid; f == evs[0].fid || f.mem != nil || &f.handle[0] == &evs[0].fid.handle[0] ||
		!bytes.Equal(f.handle, evs[0].fid.handle) || held[1].fid != f {
		t.Errorf("held event's file id %p (mem %p) is not its own copy of %p, shared by its actions (%p)", f, f.mem, evs[0].fid, held[1].fid)
	}
}

// seededCaptures returns the real-wl seed buffer and two Captures in the
// same state for it (see seededCapture): one to test, one to compare with.
func seededCaptures(t *testing.T) (seed []byte, c, fresh *Capture) {
	seed = seedBuffer(t, "real-wl")
	raw, err := kernel.Decode(nil, seed)
	if err != nil {
		t.Fatal(err)
	}
	return seed, seededCapture(raw), seededCapture(raw)
}

// seededCapture is a Capture without a group whose caches name every
// handle in raw, for converting the same seed buffer again and again.
func seededCapture(raw []kernel.RawEvent) *Capture {
	c := &Capture{
		log:  zerolog.Nop(),
		want: setOf(actionBits2()),
		dirs: newPathCache(dirCacheSize), gone: newPathCache(goneCacheSize),
		scope:   scope{roots: []string{"/m"}},
		self:    -1,
		evFree:  make(chan []Event, recycledBatches),
		memFree: make(chan *batchMem, recycledBatches),
	}
	for _, r := range raw {
		for _, h := range []kernel.Handle{r.Dir, r.OldDir, r.NewDir, r.FID} {
			if h.Valid() {
				c.dirs.put(h.Key, "/m/dir")
				if c.mount(h.Fsid()) == nil {
					c.mounts = append(c.mounts, mountRef{fsid: h.Fsid()})
				}
			}
		}
	}
	return c
}
