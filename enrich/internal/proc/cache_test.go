package proc

import (
	"github.com/fanaudit/fanaudit/enrich/internal/proctest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newTestCache(root string, size int) *Cache {
	return NewCache(Config{Root: root, CmdlineMax: 4096, Size: size, TTL: time.Second, IDSeed: "m|b", BootTime: t0.Add(-time.Hour), ClockTicks: 100})
}

// A reused pid must never inherit the old process's identity, and events
// read before the reuse keep the old one.
func TestCachePidReuse(t *testing.T) {
	root := t.TempDir()
	proctest.Write(t, root, proctest.Fixture{Pid: 100, Exe: "/usr/bin/a", Cmdline: "a\x00", Start: 1000, UID: 1000, EUID: 1000})
	c := newTestCache(root, 16)
	c.Observe(100, t0, false, "", -1)
	old := c.Resolve(100, t0, false)
	if old == nil || old.Exe != "/usr/bin/a" {
		t.Fatalf("first identity: %+v", old)
	}

	proctest.Write(t, root, proctest.Fixture{Pid: 100, Exe: "/usr/bin/b", Cmdline: "b\x00", Start: 2000, UID: 0})
	t1 := t0.Add(2 * time.Second) // past the TTL: the cache re-reads /proc
	c.Observe(100, t1, false, "", -1)
	cur := c.Resolve(100, t1, false)
	if cur == nil || cur.Exe != "/usr/bin/b" || cur.Creds.RUID != 0 {
		t.Fatalf("reused pid: %+v", cur)
	}
	if cur.EntityID == old.EntityID || cur.EntityID == "" {
		t.Fatalf("entity ids: old %q new %q", old.EntityID, cur.EntityID)
	}
	if got := c.Resolve(100, t0, false); got != old {
		t.Fatalf("event before the reuse resolved to %+v", got)
	}
	if want := t0.Add(-time.Hour + 20*time.Second); !cur.Start.Equal(want) {
		t.Fatalf("start %v, want %v", cur.Start, want)
	}
}

func TestCacheTTL(t *testing.T) {
	root := t.TempDir()
	proctest.Write(t, root, proctest.Fixture{Pid: 7, Exe: "/bin/x", Start: 1})
	c := newTestCache(root, 16)
	c.Observe(7, t0, false, "", -1)
	c.Observe(7, t0.Add(500*time.Millisecond), false, "", -1)
	if s := c.Stats(); s.Hits != 1 || s.Misses != 1 {
		t.Fatalf("within TTL: %+v", s)
	}
	c.Observe(7, t0.Add(1500*time.Millisecond), false, "", -1)
	if s := c.Stats(); s.Misses != 2 {
		t.Fatalf("after TTL: %+v", s)
	}
}

func TestCacheExec(t *testing.T) {
	root := t.TempDir()
	proctest.Write(t, root, proctest.Fixture{Pid: 50, Exe: "/bin/sh", Cmdline: "sh\x00", Start: 10, UID: 1000, EUID: 1000, GID: 100})
	c := newTestCache(root, 16)
	c.Observe(50, t0, false, "", -1)

	// The exec event: /proc may still show the old image, the path is the
	// new executable, and the loader's own exec event must not win.
	t1 := t0.Add(time.Millisecond)
	c.Observe(50, t1, true, "/opt/new", -1)
	c.Observe(50, t1, true, "/lib64/ld-linux-x86-64.so.2", -1)
	e := c.Resolve(50, t1, false)
	if e == nil || e.Exe != "/opt/new" || !e.FromExec || e.HasCmdline || e.HasComm || e.Creds.RUID != 1000 {
		t.Fatalf("after exec event: %+v", e)
	}
	if got := c.Resolve(50, t0, false); got == nil || got.Exe != "/bin/sh" {
		t.Fatalf("before exec: %+v", got)
	}

	// The next event re-reads /proc, now showing the new image, even
	// within the TTL.
	proctest.Write(t, root, proctest.Fixture{Pid: 50, Exe: "/opt/new", Cmdline: "new\x00-v\x00", Start: 10, UID: 1000, EUID: 1000, GID: 100})
	t2 := t1.Add(time.Millisecond)
	c.Observe(50, t2, false, "", -1)
	e = c.Resolve(50, t2, false)
	if e == nil || e.Exe != "/opt/new" || e.Cmdline != "new -v" || e.Comm != "new" || e.FromExec {
		t.Fatalf("after re-read: %+v", e)
	}
}

// A process gone before its first /proc read, after an exec event: the
// exec path and the creds read at exec time stay.
func TestCacheExecThenGone(t *testing.T) {
	root := t.TempDir()
	proctest.Write(t, root, proctest.Fixture{Pid: 60, Exe: "/usr/bin/go-test", Start: 10, UID: 1000, EUID: 1000})
	c := newTestCache(root, 16)
	c.Observe(60, t0, true, "/mnt/sh", -1)
	if err := os.RemoveAll(filepath.Join(root, "60")); err != nil {
		t.Fatal(err)
	}
	t1 := t0.Add(time.Millisecond)
	c.Observe(60, t1, false, "", -1)
	e := c.Resolve(60, t1, false)
	if e == nil || e.Exe != "/mnt/sh" || !e.HasCreds || e.Creds.RUID != 1000 || !e.HasStart {
		t.Fatalf("got %+v", e)
	}
	if s := c.Stats(); s.GoneHits != 1 || s.Execs != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestCacheGoneUnknown(t *testing.T) {
	c := newTestCache(t.TempDir(), 16)
	c.Observe(99, t0, false, "", -1)
	if e := c.Resolve(99, t0, false); e != nil {
		t.Fatalf("invented %+v", e)
	}
	if s := c.Stats(); s.Gone != 1 {
		t.Fatalf("stats %+v", s)
	}

}

func TestCacheEviction(t *testing.T) {
	root := t.TempDir()
	for pid := int32(1); pid <= 3; pid++ {
		proctest.Write(t, root, proctest.Fixture{Pid: pid, Exe: "/bin/p", Start: uint64(pid)})
	}
	c := newTestCache(root, 2)
	c.Observe(1, t0, false, "", -1)
	c.Observe(2, t0, false, "", -1)
	c.Observe(1, t0, false, "", -1) // 1 is now the most recent
	c.Observe(3, t0, false, "", -1)
	if s := c.Stats(); s.Evictions != 1 || s.Entries != 2 {
		t.Fatalf("stats %+v", s)
	}
	if c.Resolve(2, t0, false) != nil || c.Resolve(1, t0, false) == nil || c.Resolve(3, t0, false) == nil {
		t.Fatal("LRU evicted the wrong pid")
	}
}

func TestCacheDeletedExe(t *testing.T) {
	root := t.TempDir()
	proctest.Write(t, root, proctest.Fixture{Pid: 8, Exe: "/tmp/x (deleted)", Start: 3})
	c := newTestCache(root, 4)
	if e := c.Resolve(8, t0, true); e == nil || e.Exe != "/tmp/x" {
		t.Fatalf("got %+v", e)
	}
}

func TestCachePartial(t *testing.T) {
	// A zombie: stat is there, exe and status are not.
	root := t.TempDir()
	proctest.Write(t, root, proctest.Fixture{Pid: 9, Comm: "z", Start: 3, NoStatus: true})
	c := newTestCache(root, 4)
	e := c.Resolve(9, t0, true)
	if e == nil || e.HasExe || e.HasCreds || !e.HasStart || e.Comm != "z" {
		t.Fatalf("got %+v", e)
	}
}

func TestEntityIDStable(t *testing.T) {
	a := EntityID("m|b", 1, 2, 0)
	if a != EntityID("m|b", 1, 2, 0) || len(a) != 32 {
		t.Fatalf("unstable or wrong length: %q", a)
	}
	for _, o := range []string{EntityID("m|b", 1, 3, 0), EntityID("m|b", 2, 2, 0), EntityID("m|c", 1, 2, 0), EntityID("m|b", 1, 2, 7)} {
		if o == a {
			t.Fatalf("collision %q", o)
		}
	}
}

// TestFillImage: what the lineage read at exec completes a later partial
// read of the same process, never one with another start time.
func TestFillImage(t *testing.T) {
	img := Info{HasCmdline: true, Cmdline: "sh -c x", Argv: "sh\x00-c\x00x", HasComm: true, Comm: "sh", HasStart: true, StartTicks: 7,
		HasPPid: true, PPid: 3, HasCgroup: true, CgroupPath: "/a", HasLoginUID: true, LoginUID: 1000}
	var got Info
	if !fillImage(&got, &img) || got.Cmdline != "sh -c x" || got.StartTicks != 7 || got.PPid != 3 || got.CgroupPath != "/a" || got.LoginUID != 1000 || got.Comm != "sh" {
		t.Fatalf("filled %+v", got)
	}
	other := Info{HasStart: true, StartTicks: 9}
	if fillImage(&other, &img) || other.HasCmdline {
		t.Fatalf("another instance was filled: %+v", other)
	}
	same := Info{HasStart: true, StartTicks: 7, HasCmdline: true, Cmdline: "own"}
	if fillImage(&same, &img) || same.Cmdline != "own" || same.PPid != 3 {
		t.Fatalf("same instance: %+v", same)
	}
}
