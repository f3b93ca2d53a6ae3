package kernel

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// lockedThreads parks n goroutines, each on its own OS thread, until the
// test ends, so that the process has threads besides the test's own.
func lockedThreads(t *testing.T, n int) []int {
	t.Helper()
	release := make(chan struct{})
	tids := make(chan int, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			// The thread exits with the goroutine (still locked), so a
			// nice value set on it does not outlive the test.
			tids <- Gettid()
			<-release
		}()
	}
	out := make([]int, 0, n)
	for range n {
		out = append(out, <-tids)
	}
	t.Cleanup(func() { close(release); wg.Wait() })
	return out
}

// threadNices reads the nice value of every thread of this process.
func threadNices(t *testing.T) map[int]int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[int]int, len(ents))
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		n, err := ThreadNice(tid)
		if err != nil {
			continue // exited meanwhile
		}
		out[tid] = n
	}
	return out
}

// restoreNice sets every thread back to nice, until a pass finds none
// that differs (threads made meanwhile inherit the boosted value).
func restoreNice(t *testing.T, nice int) {
	for pass := 0; pass < 100; pass++ {
		changed := false
		for tid, n := range threadNices(t) {
			if n != nice {
				changed = true
				_ = SetThreadNice(tid, nice)
			}
		}
		if !changed {
			return
		}
	}
	t.Error("threads kept a boosted nice value")
}

// TestBoostThreadsEveryThread: Linux keeps nice per thread, so raising
// only the calling thread (what setpriority(PRIO_PROCESS, getpid()) does)
// leaves the others, where the capture may run, at the old priority.
func TestBoostThreadsEveryThread(t *testing.T) {
	testutil.RequireRoot(t)
	base, err := ThreadNice(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { restoreNice(t, base) })
	parked := lockedThreads(t, 4)

	got, err := BoostThreads("/proc/self/task", 3)
	if err != nil {
		t.Fatal(err)
	}
	want := max(base-3, minNice)
	if got != want {
		t.Fatalf("BoostThreads set nice %d, want %d", got, want)
	}
	nices := threadNices(t)
	for _, tid := range parked {
		if _, ok := nices[tid]; !ok {
			t.Fatalf("parked thread %d is not in /proc/self/task", tid)
		}
	}
	for tid, n := range nices {
		if n != want {
			t.Errorf("thread %d has nice %d, want %d", tid, n, want)
		}
	}
}

func TestBoostThreadsClampsAndSkipsGone(t *testing.T) {
	testutil.RequireRoot(t)
	base, err := ThreadNice(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { restoreNice(t, base) })
	// A task directory whose one thread is gone (ESRCH) and an entry that
	// is not a thread id.
	dir := t.TempDir()
	for _, name := range []string{"2147483646", "self"} {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	got, err := BoostThreads(dir, 39)
	if err != nil || got != minNice {
		t.Fatalf("BoostThreads(39) = %d, %v; want %d, nil", got, err, minNice)
	}
	if _, err := BoostThreads(dir, 0); err == nil {
		t.Fatal("boost 0 accepted")
	}
	if _, err := BoostThreads(filepath.Join(dir, "missing"), 1); err == nil || errors.Is(err, ErrNoPriority) {
		t.Fatalf("missing task dir: %v", err)
	}
	if err := SetThreadNice(0, 20); err == nil {
		t.Fatal("nice 20 accepted")
	}
}

func TestAutogroupNice(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"/autogroup-498 nice 0\n", 0, true},
		{"/autogroup-7 nice -4\n", -4, true},
		{"/autogroup-7 weight 3\n", 0, false},
		{"", 0, false},
		{"\n", 0, false},
	} {
		p := filepath.Join(dir, "autogroup")
		if err := os.WriteFile(p, []byte(tc.in), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := AutogroupNice(p)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("AutogroupNice(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
		// Only an empty file is the default group; a line it cannot
		// parse is an error of its own.
		if empty := strings.TrimSpace(tc.in) == ""; errors.Is(err, ErrNoAutogroup) != empty {
			t.Errorf("AutogroupNice(%q): %v, ErrNoAutogroup %v", tc.in, err, empty)
		}
	}
	if _, err := AutogroupNice(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) || !errors.Is(err, ErrNoAutogroup) {
		t.Errorf("missing file: %v, want ErrNotExist and ErrNoAutogroup", err)
	}
	if err := SetAutogroupNice(filepath.Join(dir, "autogroup"), -21); err == nil {
		t.Error("nice -21 accepted")
	}
}
