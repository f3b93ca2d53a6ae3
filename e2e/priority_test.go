package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/fanaudit/fanaudit/internal/kernel"
	"github.com/fanaudit/fanaudit/internal/testutil"
)

// threadNices reads the nice value (field 19 of stat) of every thread of
// process pid.
func threadNices(t *testing.T, pid int) map[int]int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[int]int, len(ents))
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "stat"))
		if err != nil {
			continue // the thread exited
		}
		// Fields after the command's closing parenthesis start at field 3.
		f := bytes.Fields(b[bytes.LastIndexByte(b, ')')+1:])
		n, err := strconv.Atoi(string(f[19-3]))
		if err != nil {
			t.Fatalf("%s/stat: nice %q: %v", e.Name(), f[19-3], err)
		}
		tid, _ := strconv.Atoi(e.Name())
		out[tid] = n
	}
	return out
}

// autogroupNice reads the nice value of process pid's scheduler autogroup;
// false when it has none of its own: a kernel without autogroups, or the
// kernel's default group, where a process whose ancestors never called
// setsid stays (CI runners and containers can be such).
func autogroupNice(t *testing.T, pid int) (int, bool) {
	t.Helper()
	n, err := kernel.AutogroupNice(fmt.Sprintf("/proc/%d/autogroup", pid))
	if errors.Is(err, kernel.ErrNoAutogroup) {
		return 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return n, true
}

// TestPriorityBoost: priority_boost = 4 raises every thread of the agent
// (Linux keeps nice per thread) by 4 nice steps, the default (0) leaves
// them alone, and without CAP_SYS_NICE the agent warns once and runs. A
// session leader (a service: systemd calls setsid) also raises its
// autogroup, the scheduling group other sessions compete with; an agent
// in someone else's session leaves that session's group alone.
func TestPriorityBoost(t *testing.T) {
	testutil.RequireRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv (util-linux) is needed to drop CAP_SYS_NICE:", err)
	}
	setsid, err := exec.LookPath("setsid")
	if err != nil {
		t.Fatal("setsid (util-linux) is needed to start a session leader:", err)
	}
	// The test's own nice values are what the agent starts with; a new
	// session's autogroup starts at 0.
	self := threadNices(t, os.Getpid())[os.Getpid()]
	selfGroup, inGroup := autogroupNice(t, os.Getpid())
	// setsid gives a session a group of its own wherever the kernel has
	// autogroups, even when the test sits in the default group.
	_, err = os.Stat("/proc/self/autogroup")
	groups := err == nil
	for _, tc := range []struct {
		name  string
		extra string
		wrap  []string
		want  int
		group int
		warn  bool
	}{
		{name: "default", want: self, group: selfGroup},
		{name: "four", extra: "priority_boost = 4\n", want: max(self-4, -20), group: selfGroup},
		{name: "seven", extra: "priority_boost = 7\n", want: max(self-7, -20), group: selfGroup},
		{name: "no CAP_SYS_NICE", extra: "priority_boost = 4\n", wrap: []string{setpriv, "--bounding-set=-sys_nice", "--"}, want: self, group: selfGroup, warn: true},
		{name: "session leader", extra: "priority_boost = 4\n", wrap: []string{setsid}, want: max(self-4, -20), group: -4},
		{name: "session leader, default", wrap: []string{setsid}, want: self, group: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			watched := testutil.TmpfsMount(t, "16m")
			out := filepath.Join(t.TempDir(), "events.json")
			argv := append(append([]string(nil), tc.wrap...), binary, "run", "--config", runConfig(t, fileSinkConfig(watched, out, tc.extra)))
			a := startArgv(t, false, nil, argv)
			a.waitLog("running", startTimeout)
			nices := threadNices(t, a.cmd.Process.Pid)
			if len(nices) < 2 {
				t.Fatalf("agent has %d threads", len(nices))
			}
			for tid, n := range nices {
				if n != tc.want {
					t.Errorf("thread %d has nice %d, want %d", tid, n, tc.want)
				}
			}
			// A session leader has a group of its own; any other agent
			// shares the test's, or the lack of one.
			wantGroup := inGroup
			if len(tc.wrap) > 0 && tc.wrap[0] == setsid {
				wantGroup = groups
			}
			if g, ok := autogroupNice(t, a.cmd.Process.Pid); ok != wantGroup || g != tc.group {
				t.Errorf("autogroup nice %d (has a group: %v), want %d (%v)", g, ok, tc.group, wantGroup)
			}
			a.stop()
			warned := 0
			a.mu.Lock()
			for _, m := range a.logs {
				if m != nil && m["level"] == "warn" && m["priority_boost"] != nil {
					warned++
				}
			}
			a.mu.Unlock()
			if want := map[bool]int{true: 1}[tc.warn]; warned != want {
				t.Errorf("%d priority warnings, want %d; stderr:\n%s", warned, want, a.stderr())
			}
		})
	}
}
