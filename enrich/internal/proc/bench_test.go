package proc

import (
	"os/exec"
	"testing"
	"time"
)

// sleeper starts a single-threaded process to read, like the processes
// enrichment usually meets (the test binary itself has many threads,
// which makes its /proc files slower to generate).
func sleeper(b *testing.B) int32 {
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return int32(cmd.Process.Pid)
}

// BenchmarkRead is the uncached cost: one full /proc snapshot.
func BenchmarkRead(b *testing.B) {
	pid := sleeper(b)
	for _, v := range []struct {
		name   string
		pidfds bool
		what   int
	}{
		{"proc_all", false, ReadAll},
		{"pidfd_all", true, ReadAll},
		{"pidfd_exec_event", true, ReadCreds | ReadStat | ReadLogin | ReadCgroup},
	} {
		b.Run(v.name, func(b *testing.B) {
			r := NewReader("/proc", 4096, v.pidfds)
			var info Info
			for b.Loop() {
				if _, err := r.Read(pid, -1, v.what, &info); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkObserveHit is the reader-side cost for a cached pid.
func BenchmarkObserveHit(b *testing.B) {
	pid := sleeper(b)
	c := NewCache(Config{Root: "/proc", CmdlineMax: 4096, Size: 1024, TTL: time.Hour, Pidfds: true})
	now := time.Now()
	c.Observe(pid, now, false, "", -1)
	b.ReportAllocs()
	for b.Loop() {
		c.Observe(pid, now, false, "", -1)
	}
}

// BenchmarkObserveMiss: every call re-reads /proc (TTL 0).
func BenchmarkObserveMiss(b *testing.B) {
	pid := sleeper(b)
	c := NewCache(Config{Root: "/proc", CmdlineMax: 4096, Size: 1024, TTL: 0, Pidfds: true})
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		c.Observe(pid, now, false, "", -1)
	}
}

// BenchmarkResolve is the enricher-side lookup for a cached pid.
func BenchmarkResolve(b *testing.B) {
	pid := sleeper(b)
	c := NewCache(Config{Root: "/proc", CmdlineMax: 4096, Size: 1024, TTL: time.Hour, Pidfds: true})
	now := time.Now()
	c.Observe(pid, now, false, "", -1)
	b.ReportAllocs()
	for b.Loop() {
		if c.Resolve(pid, now, false) == nil {
			b.Fatal("miss")
		}
	}
}
