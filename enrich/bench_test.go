package enrich

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/audit"
	"github.com/fanaudit/fanaudit/internal/record"
	"github.com/fanaudit/fanaudit/internal/testutil"
)

func benchEnricher(b *testing.B, mod func(*Options)) *Enricher {
	b.Helper()
	procRoot, etcRoot := b.TempDir(), b.TempDir()
	o := Options{ProcRoot: procRoot, EtcRoot: etcRoot}
	if mod != nil {
		mod(&o)
	}
	e, err := New(o, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
	return e
}

// sleeperPid starts a single-threaded process for /proc reads.
func sleeperPid(b *testing.B) int32 {
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return int32(cmd.Process.Pid)
}

// BenchmarkFillCached is Run's per-event work for a cached pid: cache
// lookup, record fill, names. The record itself is preallocated here, as
// Run allocates one slab per batch.
func BenchmarkFillCached(b *testing.B) {
	pid := sleeperPid(b)
	e := benchEnricher(b, func(o *Options) { o.ProcRoot = "/proc"; o.EtcRoot = "/etc"; o.CacheTTL = time.Hour })
	ev := audit.Event{Time: time.Now(), Action: audit.ActionCloseWrite, Pid: pid, Path: "/m/f", PidFD: -1}
	e.Observe(&ev)
	var r record.Record
	b.ReportAllocs()
	for b.Loop() {
		r = record.Record{}
		e.fill(&r, &ev, false)
	}
	if r.Process.Executable == "" {
		b.Fatal("not enriched")
	}
}

// BenchmarkObserveCached is the reader-side cost for a cached pid.
func BenchmarkObserveCached(b *testing.B) {
	pid := sleeperPid(b)
	e := benchEnricher(b, func(o *Options) { o.ProcRoot = "/proc"; o.EtcRoot = "/etc"; o.CacheTTL = time.Hour })
	ev := audit.Event{Time: time.Now(), Action: audit.ActionCloseWrite, Pid: pid, Path: "/m/f", PidFD: -1}
	e.Observe(&ev)
	b.ReportAllocs()
	for b.Loop() {
		e.Observe(&ev)
	}
}

// BenchmarkObserveUncached forces a full /proc read per event (each event
// is a new read batch past the TTL): the cost of a new process.
func BenchmarkObserveUncached(b *testing.B) {
	pid := sleeperPid(b)
	for _, v := range []struct {
		name string
		mod  func(*Options)
	}{
		{"proc_status", func(o *Options) { o.NoPidfdReads, o.NoProcConnector = true, true }},
		{"pidfd_info", func(o *Options) { o.NoProcConnector = true }},
		{"pidfd_info+connector", func(o *Options) {}},
	} {
		b.Run(v.name, func(b *testing.B) {
			e := benchEnricher(b, func(o *Options) {
				o.ProcRoot, o.EtcRoot, o.CacheTTL = "/proc", "/etc", time.Nanosecond
				v.mod(o)
			})
			ev := audit.Event{Time: time.Now(), Action: audit.ActionCloseWrite, Pid: pid, Path: "/m/f", PidFD: -1}
			b.ReportAllocs()
			for b.Loop() {
				ev.Time = ev.Time.Add(time.Millisecond)
				e.Observe(&ev)
			}
		})
	}
}

// BenchmarkRun pushes batches of 256 cached events through Run and
// reports the cost per event, allocations included (the record arenas are
// reused, so there should be none per batch).
func BenchmarkRun(b *testing.B) {
	pid := sleeperPid(b)
	e := benchEnricher(b, func(o *Options) {
		o.ProcRoot, o.EtcRoot, o.CacheTTL, o.NoProcConnector = "/proc", "/etc", time.Hour, true
	})
	const n = 256
	now := time.Now()
	warm := audit.Event{Time: now, Action: audit.ActionCloseWrite, Pid: pid, PidFD: -1}
	e.Observe(&warm)
	in := make(chan []audit.Event, 64)
	done := make(chan error, 1)
	go func() { done <- e.Run(context.Background(), in, func([]*record.Record) error { return nil }) }()
	batches := make([][]audit.Event, 128)
	for i := range batches {
		batches[i] = make([]audit.Event, n)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		bt := batches[i%len(batches)]
		for j := range bt {
			bt[j] = audit.Event{Time: now, Action: audit.ActionCloseWrite, Pid: pid, Path: "/m/f", PidFD: -1}
		}
		in <- bt
	}
	close(in)
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
}

// TestWorkloadHitRate runs the shared wl.c workload on a private tmpfs
// through capture and enrichment and logs the process cache hit rate.
func TestWorkloadHitRate(t *testing.T) {
	testutil.RequireRoot(t)
	if testing.Short() {
		t.Skip("long")
	}
	src := "../../shared/bench/wl.c"
	if _, err := os.Stat(src); err != nil {
		t.Skipf("workload source: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "wl")
	if out, err := exec.Command("cc", "-O2", "-Wall", "-o", bin, src).CombinedOutput(); err != nil {
		t.Skipf("cc: %v: %s", err, out)
	}
	// A smaller default keeps the -race suite quick; the figure in the
	// notes comes from FANAUDIT_WL_N=200000.
	n := 50000
	if v, err := strconv.Atoi(os.Getenv("FANAUDIT_WL_N")); err == nil && v > 0 {
		n = v
	}
	mnt := testutil.TmpfsMount(t, "1g")
	s := startLive(t, mnt, variant{observe: true, pidfdInfo: true, connector: true, unlimited: true}, nil, Options{})
	start := time.Now()
	out, err := exec.Command(bin, mnt, strconv.Itoa(n)).CombinedOutput()
	if err != nil {
		t.Fatalf("wl: %v: %s", err, out)
	}
	// Every unlink of the last phase is a delete record; the last one
	// marks the end of the workload.
	last := filepath.Join(mnt, "f"+strconv.Itoa(n-1))
	s.collect(t, 1, func(r *record.Record) bool { return r.Action == record.ActionDelete && r.File.Path == last })
	elapsed := time.Since(start)
	s.stop(t)
	st := s.e.Stats()
	lookups := st.CacheHits + st.CacheMisses
	t.Logf("wl: %s", out)
	t.Logf("records %d in %v; cache hits %d misses %d gone %d: hit rate %.5f%%; full %d partial %d",
		st.Events, elapsed, st.CacheHits, st.CacheMisses, st.ProcGone, 100*float64(st.CacheHits)/float64(lookups), st.Full, st.Partial)
}
