package enrich

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/audit"
	"github.com/fanaudit/fanaudit/enrich/internal/proctest"
	"github.com/fanaudit/fanaudit/internal/record"
)

var update = flag.Bool("update", false, "rewrite golden files")

const dockerID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// fixtureRoots builds a fake /proc and /etc: pid 100 is a setuid-style
// process in a Docker container with a login session, pid 200 a plain
// root process.
func fixtureRoots(t *testing.T) (procRoot, etcRoot string) {
	procRoot, etcRoot = t.TempDir(), t.TempDir()
	w := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	w(filepath.Join(procRoot, "stat"), "cpu  1 2 3\nbtime 1767268800\nprocesses 9\n")
	w(filepath.Join(procRoot, "sys/kernel/hostname"), "testhost\n")
	w(filepath.Join(procRoot, "sys/kernel/random/boot_id"), "b0b0b0b0-0000-4000-8000-000000000001\n")
	w(filepath.Join(etcRoot, "machine-id"), "11111111111111111111111111111111\n")
	w(filepath.Join(etcRoot, "passwd"), "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n")
	w(filepath.Join(etcRoot, "group"), "root:x:0:\nalice:x:1000:\n")
	proctest.Write(t, procRoot, proctest.Fixture{Pid: 1, Exe: "/sbin/init", Cmdline: "/sbin/init\x00", Start: 1})
	proctest.Write(t, procRoot, proctest.Fixture{
		Pid: 100, PPid: 1, Exe: "/usr/bin/passwd", Cmdline: "passwd\x00alice\x00", Start: 4200,
		UID: 1000, EUID: 0, GID: 1000, LoginUID: "1000", SessionID: "3",
		Cgroup: "0::/system.slice/docker-" + dockerID + ".scope\n",
	})
	proctest.Write(t, procRoot, proctest.Fixture{Pid: 200, PPid: 1, Exe: "/usr/bin/touch", Cmdline: "touch\x00f\x00", Start: 4300})
	return procRoot, etcRoot
}

func newTest(t *testing.T, mod func(*Options)) *Enricher {
	t.Helper()
	procRoot, etcRoot := fixtureRoots(t)
	o := Options{ProcRoot: procRoot, EtcRoot: etcRoot}
	if mod != nil {
		mod(&o)
	}
	e, err := New(o, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// run feeds batches through Run and returns the records in output order.
func run(t *testing.T, e *Enricher, batches ...[]audit.Event) []*record.Record {
	t.Helper()
	in := make(chan []audit.Event, len(batches))
	out := make(chan []*record.Record, len(batches))
	for _, b := range batches {
		for i := range b {
			e.Observe(&b[i])
		}
		in <- b
	}
	close(in)
	if err := e.Run(context.Background(), in, emitTo(out)); err != nil {
		t.Fatal(err)
	}
	close(out)
	var recs []*record.Record
	for b := range out {
		recs = append(recs, b...)
	}
	for _, b := range batches {
		for i := range b {
			if b[i].File != nil || b[i].PidFD != -1 {
				t.Fatalf("event %d not released: %+v", i, b[i])
			}
		}
	}
	return recs
}

func ev(pid int32, a audit.Action, path string) audit.Event {
	return audit.Event{Time: t0, Action: a, Pid: pid, Path: path, PidFD: -1}
}

func TestGolden(t *testing.T) {
	e := newTest(t, nil)
	dir := ev(200, audit.ActionCreate, "/m/d")
	dir.Dir = true
	ren := ev(100, audit.ActionRename, "/m/new")
	ren.OldPath = "/m/old"
	lost := audit.Event{Time: t0, Action: audit.ActionEventsLost, LostReason: record.ReasonKernelOverflow, PidFD: -1}
	lost2 := audit.Event{Time: t0, Action: audit.ActionEventsLost, LostReason: record.ReasonQueueFull, HasLost: true, Lost: 7, PidFD: -1}
	recs := run(t, e,
		[]audit.Event{ev(100, audit.ActionCreate, "/m/shadow"), ev(100, audit.ActionCloseWrite, "/m/shadow"), ren},
		[]audit.Event{dir, ev(4242, audit.ActionDelete, "/m/gone"), lost, lost2},
	)
	got, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	golden := filepath.Join("testdata", "records.golden.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("records differ from %s (run with -update after checking):\n%s", golden, got)
	}
	s := e.Stats()
	if s.Events != 7 || s.Full != 4 || s.Partial != 1 || s.Lost != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// The fields the issue names, checked by hand so the golden file is not
// the only guard.
func TestFields(t *testing.T) {
	e := newTest(t, nil)
	recs := run(t, e, []audit.Event{ev(100, audit.ActionCreate, "/m/f"), ev(4242, audit.ActionCreate, "/m/g")})
	r := recs[0]
	p, u := r.Process, r.User
	if p.Pid != 100 || p.PPid != 1 || p.Executable != "/usr/bin/passwd" || p.Name != "passwd" || p.CommandLine != "passwd alice" {
		t.Fatalf("process %+v", p)
	}
	if want := time.Unix(1767268800+42, 0); !p.Start.Equal(want) || len(p.EntityID) != 32 {
		t.Fatalf("start %v entity %q", p.Start, p.EntityID)
	}
	if !u.HasID || u.ID != 1000 || u.Name != "alice" || !u.HasEID || u.EID != 0 || u.GID != 1000 || u.Group != "alice" {
		t.Fatalf("user %+v", u)
	}
	if !u.HasAUID || u.AUID != 1000 || u.AName != "alice" || !u.HasSess || u.Session != 3 {
		t.Fatalf("audit %+v", u)
	}
	if r.Container.ID != dockerID || r.Container.Runtime != "docker" || p.CgroupPath != "/system.slice/docker-"+dockerID+".scope" {
		t.Fatalf("container %+v %q", r.Container, p.CgroupPath)
	}
	if *r.Host != (record.Host{Hostname: "testhost", ID: "11111111111111111111111111111111", BootID: "b0b0b0b0-0000-4000-8000-000000000001"}) || r.Host != e.Host() {
		t.Fatalf("host %+v", r.Host)
	}
	if r.Fanaudit.Enrichment != "full" || r.Fanaudit.Missing != nil {
		t.Fatalf("meta %+v", r.Fanaudit)
	}
	g := recs[1]
	if g.Fanaudit.Enrichment != "partial" || g.Process.Executable != "" || g.User.HasID || g.Process.Pid != 4242 {
		t.Fatalf("unknown pid invented something: %+v", g)
	}
	if !contains(g.Fanaudit.Missing, "process.executable") || !contains(g.Fanaudit.Missing, "user.id") {
		t.Fatalf("missing %v", g.Fanaudit.Missing)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Without Observe (no audit.Options.Observer), Run reads /proc itself.
func TestLateRead(t *testing.T) {
	e := newTest(t, nil)
	in := make(chan []audit.Event, 1)
	out := make(chan []*record.Record, 1)
	in <- []audit.Event{ev(200, audit.ActionCreate, "/m/f")}
	close(in)
	if err := e.Run(context.Background(), in, emitTo(out)); err != nil {
		t.Fatal(err)
	}
	r := (<-out)[0]
	// Two reads: the process, and its parent (process.parent.*).
	if r.Process.Executable != "/usr/bin/touch" || r.Process.ParentExecutable != "/sbin/init" || e.Stats().LateReads != 2 {
		t.Fatalf("%+v %+v", r.Process, e.Stats())
	}
}

func TestFileStatMissing(t *testing.T) {
	e := newTest(t, func(o *Options) { o.FileStat = true })
	// Events built here carry no file identity, so stat must fail and
	// say so, except on a delete where there is nothing to stat.
	recs := run(t, e, []audit.Event{ev(200, audit.ActionCreate, "/m/f"), ev(200, audit.ActionDelete, "/m/f")})
	if recs[0].Fanaudit.Enrichment != "partial" || !contains(recs[0].Fanaudit.Missing, "file.stat") || recs[0].File.HasStat {
		t.Fatalf("%+v", recs[0].Fanaudit)
	}
	if recs[1].Fanaudit.Enrichment != "full" {
		t.Fatalf("%+v", recs[1].Fanaudit)
	}
}

func TestHash(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(small, bytes.Repeat([]byte("fanaudit\n"), 5000), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(big, make([]byte, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newTest(t, func(o *Options) {
		o.Hash = HashOptions{Enabled: true, MaxSize: 1 << 20, Workers: 3}
	})
	open := func(p string) audit.Event {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		// A moved file offset must not change the hash.
		f.Seek(100, 0)
		x := ev(200, audit.ActionCloseWrite, p)
		x.File = f
		return x
	}
	var batches [][]audit.Event
	for range 20 {
		batches = append(batches, []audit.Event{open(small), ev(200, audit.ActionModify, small), open(big), ev(200, audit.ActionCloseWrite, small)})
	}
	recs := run(t, e, batches...)
	want := sha256sum(t, small)
	for i := 0; i < len(recs); i += 4 {
		if recs[i].File.SHA256 != want || recs[i].File.HashStatus != "" {
			t.Fatalf("record %d: %q %q, want %s", i, recs[i].File.SHA256, recs[i].File.HashStatus, want)
		}
		if recs[i+1].Action != record.ActionModify || recs[i+1].File.SHA256 != "" || recs[i+1].File.HashStatus != "" {
			t.Fatalf("order or hash on modify: %+v", recs[i+1].File)
		}
		if recs[i+2].File.SHA256 != "" || recs[i+2].File.HashStatus != HashSkippedSize {
			t.Fatalf("big: %+v", recs[i+2].File)
		}
		if recs[i+3].File.HashStatus != HashUnavailable {
			t.Fatalf("no file: %+v", recs[i+3].File)
		}
	}
	s := e.Stats()
	if s.HashDone != 20 || s.HashSkippedSize != 20 || s.HashUnavailable != 20 {
		t.Fatalf("stats %+v", s)
	}
}

func TestHashBudget(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, make([]byte, 600<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	// Burst is max(1 MiB/s, 1 MiB) = 1 MiB: one 600 KiB file fits, the
	// second right after does not.
	e := newTest(t, func(o *Options) {
		o.Hash = HashOptions{Enabled: true, MaxSize: 1 << 20, BytesPerSecond: 1 << 20, Workers: 1}
	})
	mk := func() audit.Event {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		x := ev(200, audit.ActionCloseWrite, p)
		x.File = f
		return x
	}
	recs := run(t, e, []audit.Event{mk(), mk()})
	if recs[0].File.SHA256 == "" || recs[1].File.HashStatus != HashSkippedBudget {
		t.Fatalf("%+v / %+v", recs[0].File, recs[1].File)
	}
}

func sha256sum(t *testing.T, p string) string {
	out, err := exec.Command("sha256sum", p).Output()
	if err != nil {
		// Fall back to the library only where the tool is missing.
		if errors.Is(err, exec.ErrNotFound) {
			b, _ := os.ReadFile(p)
			s := sha256.Sum256(b)
			return hex.EncodeToString(s[:])
		}
		t.Fatal(err)
	}
	return strings.Fields(string(out))[0]
}

func TestOptions(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Options)
		ok   bool
	}{
		{"zero takes defaults", func(o *Options) {}, true},
		{"negative cache", func(o *Options) { o.CacheSize = -1 }, false},
		{"negative ttl", func(o *Options) { o.CacheTTL = -time.Second }, false},
		{"negative hash size", func(o *Options) { o.Hash.MaxSize = -1 }, false},
		{"huge cmdline", func(o *Options) { o.CmdlineMax = 1 << 30 }, false},
		{"too many workers", func(o *Options) { o.Hash.Workers = 1000 }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{ProcRoot: t.TempDir(), EtcRoot: t.TempDir()}
			tc.mod(&o)
			_, err := New(o, zerolog.Nop())
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v", err)
			}
			if err != nil && !errors.Is(err, ErrOptions) {
				t.Fatalf("not ErrOptions: %v", err)
			}
		})
	}
	d := Defaults()
	if d.CmdlineMax != 4096 || d.CacheTTL != time.Second || d.ProcRoot != "/proc" {
		t.Fatalf("defaults %+v", d)
	}
}

func TestRunCancelled(t *testing.T) {
	e := newTest(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	in := make(chan []audit.Event, 1)
	// An emit that fails the way the fan-out does when the chain aborts.
	emit := func([]*record.Record) error { <-ctx.Done(); return ctx.Err() }
	in <- []audit.Event{ev(200, audit.ActionCreate, "/m/f")}
	cancel()
	if err := e.Run(ctx, in, emit); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

// emitTo is an emit for Run that sends copies of the records to out: Run
// reuses its records once emit returns.
func emitTo(out chan<- []*record.Record) func([]*record.Record) error {
	return func(b []*record.Record) error {
		slab := make([]record.Record, len(b))
		cp := make([]*record.Record, len(b))
		for i, r := range b {
			slab[i] = *r
			cp[i] = &slab[i]
		}
		out <- cp
		return nil
	}
}

// TestConvertReusesArena: converting a batch of events of cached
// processes into a reused arena allocates nothing.
func TestConvertReusesArena(t *testing.T) {
	e := newTest(t, func(o *Options) { o.CacheTTL = time.Hour })
	batch := make([]audit.Event, 300)
	fill := func() {
		for i := range batch {
			batch[i] = ev([]int32{100, 200}[i%2], audit.ActionCloseWrite, "/m/f")
		}
	}
	fill()
	for i := range batch {
		e.Observe(&batch[i])
	}
	ctx := context.Background()
	p := e.convert(ctx, batch, nil, nil)
	round := func() {
		clear(p.slab)
		fill()
		p = e.convert(ctx, batch, nil, p)
	}
	round()
	if a := testing.AllocsPerRun(20, round); a != 0 {
		t.Errorf("convert allocates %.1f times per batch of %d, want 0", a, len(batch))
	}
	if r := p.recs[1]; r.Process.Executable != "/usr/bin/touch" || r.File.Path != "/m/f" {
		t.Errorf("record %+v", r)
	}
}

// TestRunRecycles: every input batch is handed to the recycler once, in
// order, after its records were emitted and its events released.
func TestRunRecycles(t *testing.T) {
	e := newTest(t, nil)
	batches := [][]audit.Event{
		{ev(100, audit.ActionCreate, "/m/a"), ev(200, audit.ActionOpen, "/m/b")},
		{ev(200, audit.ActionCloseWrite, "/m/c")},
		{ev(100, audit.ActionDelete, "/m/d")},
	}
	in := make(chan []audit.Event, len(batches))
	for _, b := range batches {
		in <- b
	}
	close(in)
	emitted := 0
	var got [][]audit.Event
	e.RecycleTo(func(b []audit.Event) {
		for i := range b {
			if b[i].File != nil || b[i].PidFD != -1 {
				t.Errorf("recycled event %d not released", i)
			}
		}
		if emitted != len(got)+1 {
			t.Errorf("batch %d recycled after %d emits", len(got), emitted)
		}
		got = append(got, b)
	})
	if err := e.Run(context.Background(), in, func([]*record.Record) error { emitted++; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(batches) {
		t.Fatalf("%d batches recycled, want %d", len(got), len(batches))
	}
	for i := range got {
		if &got[i][0] != &batches[i][0] {
			t.Errorf("batch %d: another slice recycled", i)
		}
	}
}

// TestBatchResolvesEachPid: a batch's events share their time, and
// consecutive ones of one pid share its Resolve answer (resolveMemo); a
// batch that alternates pids must still give each record its own
// process and parent.
func TestBatchResolvesEachPid(t *testing.T) {
	e := newTest(t, nil)
	batch := []audit.Event{
		ev(100, audit.ActionCreate, "/m/a"), ev(100, audit.ActionModify, "/m/a"),
		ev(200, audit.ActionCreate, "/m/b"), ev(100, audit.ActionDelete, "/m/a"),
		ev(4242, audit.ActionCreate, "/m/c"), ev(200, audit.ActionDelete, "/m/b"),
	}
	recs := run(t, e, batch)
	want := map[int32]string{100: "/usr/bin/passwd", 200: "/usr/bin/touch", 4242: ""}
	for i, r := range recs {
		if r.Process.Pid != batch[i].Pid || r.Process.Executable != want[batch[i].Pid] {
			t.Errorf("record %d: pid %d executable %q, want pid %d %q", i, r.Process.Pid, r.Process.Executable, batch[i].Pid, want[batch[i].Pid])
		}
		if wantParent := want[batch[i].Pid] != ""; (r.Process.ParentExecutable == "/sbin/init") != wantParent {
			t.Errorf("record %d: parent executable %q", i, r.Process.ParentExecutable)
		}
	}
}
