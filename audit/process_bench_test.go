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
	seed := seedBuffer(t, "real-wl")
	raw, err := kernel.Decode(nil, seed)
	if err != nil {
		t.Fatal(err)
	}
	newCapture := func() *Capture {
		c := &Capture{
			log:  zerolog.Nop(),
			want: setOf(actionBits2()),
			dirs: newPathCache(dirCacheSize), gone: newPathCache(goneCacheSize),
			scope:  scope{roots: []string{"/m"}},
			self:   -1,
			evFree: make(chan []Event, recycledBatches),
		}
		for _, r := range raw {
			for _, h := range []kernel.Handle{r.Dir, r.OldDir, r.NewDir, r.FID} {
				if h.Valid() {
					c.dirs.put(h.Key, "/m/dir")
				}
			}
		}
		return c
	}
	now := time.Now()
	c, fresh := newCapture(), newCapture()
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
