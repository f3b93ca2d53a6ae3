package kernel

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Nice values bound by the kernel (include/linux/sched/prio.h MIN_NICE,
// MAX_NICE).
const (
	minNice = -20
	maxNice = 19
)

// ErrNoPriority means the kernel refused to raise a thread's priority:
// the process lacks CAP_SYS_NICE and RLIMIT_NICE does not allow it.
var ErrNoPriority = errors.New("raising the scheduling priority is not permitted (needs CAP_SYS_NICE or RLIMIT_NICE)")

// ErrNoAutogroup means the process has no scheduler autogroup of its own
// to read or raise: the kernel has none (no /proc/PID/autogroup), or the
// process sits in the kernel's default group, which the file shows as
// empty. The default group is where every process starts whose ancestors
// never called setsid since boot, as in some containers and CI runners.
var ErrNoAutogroup = errors.New("no scheduler autogroup")

// BoostThreads lowers the nice value of every thread listed in taskDir
// (/proc/self/task for the calling process) to the main thread's nice
// value minus boost, clamped to -20, and returns the nice value it set.
// Linux keeps nice per thread, and a new thread inherits its creator's,
// so the process's existing threads each need their own setpriority; the
// directory is read again until a pass finds no thread it has not set,
// which catches threads created while it ran. A thread that exits in
// between (ESRCH) is skipped. Without the permission to raise priority it
// returns ErrNoPriority, having changed nothing it could not undo: the
// first refusal stops it.
func BoostThreads(taskDir string, boost int) (int, error) {
	if boost <= 0 {
		return 0, fmt.Errorf("boost %d: must be positive", boost)
	}
	cur, err := ThreadNice(os.Getpid())
	if err != nil {
		return 0, err
	}
	nice := max(cur-boost, minNice)
	done := make(map[int]bool)
	for {
		ents, err := os.ReadDir(taskDir)
		if err != nil {
			return nice, fmt.Errorf("read %s: %w", taskDir, err)
		}
		changed := false
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || done[tid] {
				continue
			}
			done[tid] = true
			changed = true
			// A thread gone since the listing (ESRCH) needs no boost.
			if err := SetThreadNice(tid, nice); err != nil && !errors.Is(err, unix.ESRCH) {
				return nice, err
			}
		}
		if !changed {
			return nice, nil
		}
	}
}

// ThreadNice returns the nice value of thread tid (0: the calling thread).
// The raw getpriority(2) returns 20 - nice, so that it is never negative
// (the glibc wrapper undoes this; x/sys/unix does not).
func ThreadNice(tid int) (int, error) {
	raw, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil {
		return 0, fmt.Errorf("getpriority thread %d: %w", tid, err)
	}
	return 20 - raw, nil
}

// Gettid returns the calling thread's id.
func Gettid() int { return unix.Gettid() }

// SetThreadNice sets thread tid's nice value (0: the calling thread).
func SetThreadNice(tid, nice int) error {
	if nice < minNice || nice > maxNice {
		return fmt.Errorf("nice %d: out of [%d, %d]", nice, minNice, maxNice)
	}
	if err := unix.Setpriority(unix.PRIO_PROCESS, tid, nice); err != nil {
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			return fmt.Errorf("setpriority thread %d to nice %d: %w", tid, nice, ErrNoPriority)
		}
		return fmt.Errorf("setpriority thread %d to nice %d: %w", tid, nice, err)
	}
	return nil
}

// SessionLeader reports whether the calling process leads its session, as
// a service started by systemd (which calls setsid) does.
func SessionLeader() bool {
	sid, err := unix.Getsid(0)
	return err == nil && sid == os.Getpid()
}

// AutogroupNice reads the nice value of the scheduler autogroup in path
// (/proc/self/autogroup: "/autogroup-N nice V"). With CONFIG_SCHED_AUTOGROUP
// each session is one scheduling group: tasks of other sessions compete
// with the group as a whole, so thread nice values only weigh within it.
// A kernel without autogroups has no such file, and a process in the
// default group reads it empty: both are ErrNoAutogroup.
func AutogroupNice(path string) (int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("read %s: %w: %w", path, ErrNoAutogroup, err)
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return 0, fmt.Errorf("%s: empty: %w", path, ErrNoAutogroup)
	}
	var name string
	var nice int
	if _, err := fmt.Sscanf(string(b), "%s nice %d", &name, &nice); err != nil {
		return 0, fmt.Errorf("%s: %q: %w", path, b, err)
	}
	return nice, nil
}

// SetAutogroupNice sets the nice value of the autogroup in path.
func SetAutogroupNice(path string, nice int) error {
	if nice < minNice || nice > maxNice {
		return fmt.Errorf("nice %d: out of [%d, %d]", nice, minNice, maxNice)
	}
	err := os.WriteFile(path, []byte(strconv.Itoa(nice)), 0)
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		return fmt.Errorf("write %s: %w", path, ErrNoPriority)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
