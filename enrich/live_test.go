package enrich

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/audit"
	"github.com/fanaudit/fanaudit/internal/config"
	"github.com/fanaudit/fanaudit/internal/record"
	"github.com/fanaudit/fanaudit/internal/testutil"
)

// variant is one way of attributing short-lived processes.
type variant struct {
	name      string
	observe   bool // early /proc read in the capture's reader
	pidfdInfo bool // pidfd_open + PIDFD_GET_INFO for the creds
	fanPidfd  bool // FAN_REPORT_PIDFD: the event's own pidfd
	exec      bool // exec events: the shell runs from the watched filesystem
	connector bool // proc connector lineage
	unlimited bool // FAN_UNLIMITED_QUEUE, so a slow -race build loses nothing
	execFS    bool // the shell lives on a second filesystem, marked through ExecPaths
	// agent: exactly what `fanaudit run` with the default config and
	// `fanaudit watch` set up: every action (echoes folded), the default
	// scope, exec marks on config.DefaultExecPaths(), and /bin/sh where
	// the system keeps it (the unwatched root filesystem); a second
	// workload writes files beside the short-lived processes.
	agent bool
}

type attribution struct {
	records, right int
	full           int // fanaudit.enrichment "full"
	wrongExe       int
	wrongUID       int
	stats          Stats
}

func (a attribution) rate() float64 { return float64(a.right) / float64(a.records) }

// liveSession runs capture → enrich → collector on a private tmpfs.
type liveSession struct {
	mnt    string
	cancel context.CancelFunc
	errs   chan error
	recs   chan []*record.Record
	got    <-chan []*record.Record // unbounded relay of recs
	e      *Enricher
	c      *audit.Capture
}

func startLive(t *testing.T, mnt string, v variant, actions []record.Action, opts Options, execPaths ...string) *liveSession {
	t.Helper()
	log := zerolog.New(io.Discard)
	opts.PidFD = v.fanPidfd
	opts.NoPidfdReads = !v.pidfdInfo
	opts.NoProcConnector = !v.connector
	e, err := New(opts, log)
	if err != nil {
		t.Fatal(err)
	}
	ao := audit.Options{Paths: []string{mnt}, Actions: CaptureActions(actions), PidFD: v.fanPidfd, OpenForHash: opts.Hash.Enabled, UnlimitedQueue: v.unlimited, ExecPaths: execPaths}
	if v.observe {
		ao.Observer = e
	}

	c, err := audit.New(ao, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &liveSession{mnt: mnt, cancel: cancel, errs: make(chan error, 2), recs: make(chan []*record.Record, 1024), e: e, c: c}
	evs := make(chan []audit.Event, 256)
	go func() {
		err := c.Run(ctx, evs)
		close(evs)
		s.errs <- err
	}()
	s.got = relay(s.recs)
	go func() {
		err := e.Run(context.Background(), evs, emitTo(s.recs))
		close(s.recs)
		s.errs <- err
	}()
	t.Cleanup(func() {
		s.stop(t)
	})
	return s
}

// relay forwards in to the returned channel through an unbounded buffer.
func relay(in <-chan []*record.Record) <-chan []*record.Record {
	out := make(chan []*record.Record)
	go func() {
		defer close(out)
		var q [][]*record.Record
		for in != nil || len(q) > 0 {
			var send chan []*record.Record
			var head []*record.Record
			if len(q) > 0 {
				send, head = out, q[0]
			}
			select {
			case b, ok := <-in:
				if !ok {
					in = nil
					continue
				}
				q = append(q, b)
			case send <- head:
				q = q[1:]
			}
		}
	}()
	return out
}

// stop ends capture (which drains) and enrichment, and checks both
// returned cleanly. The records channel is closed afterwards.
func (s *liveSession) stop(t *testing.T) {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	go func() {
		for range s.got {
		}
	}()
	for range 2 {
		if err := <-s.errs; err != nil {
			t.Errorf("stage: %v", err)
		}
	}
	s.c.Close()
}

// collect returns the records that match want once n of them have
// arrived, or fails at the deadline. A goroutine keeps reading the
// records channel all along, so the pipeline never backs up into the
// capture while the test is busy spawning.
func (s *liveSession) collect(t *testing.T, n int, want func(*record.Record) bool) []*record.Record {
	t.Helper()
	var got []*record.Record
	deadline := time.After(120 * time.Second)
	for len(got) < n {
		select {
		case b, ok := <-s.got:
			if !ok {
				t.Fatalf("records closed after %d of %d", len(got), n)
			}
			for _, r := range b {
				if want(r) {
					got = append(got, r)
				}
			}
		case <-deadline:
			t.Fatalf("only %d of %d records after 120s", len(got), n)
		}
	}
	return got
}

func runAttribution(t *testing.T, v variant, uid uint32, n int) attribution {
	mnt := testutil.TmpfsMount(t, "64m")
	dir := filepath.Join(mnt, "d")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o777)
	shell, err := filepath.EvalSymlinks("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	actions := []record.Action{record.ActionCreate, record.ActionCloseWrite}
	if v.exec {
		// The exec event comes from the filesystem the executable lives
		// on; this test may mark only its own tmpfs, so the shell runs from
		// there.
		b, err := os.ReadFile(shell)
		if err != nil {
			t.Fatal(err)
		}
		shell = filepath.Join(mnt, "sh")
		if err := os.WriteFile(shell, b, 0o755); err != nil {
			t.Fatal(err)
		}
		actions = append(actions, record.ActionExec)
	}
	var execPaths []string
	if v.agent {
		actions = nil
		execPaths = config.DefaultExecPaths()
	}
	if v.execFS {
		bins := testutil.TmpfsMount(t, "16m")
		b, err := os.ReadFile(shell)
		if err != nil {
			t.Fatal(err)
		}
		shell = filepath.Join(bins, "sh")
		if err := os.WriteFile(shell, b, 0o755); err != nil {
			t.Fatal(err)
		}
		execPaths = []string{bins}
	}
	s := startLive(t, mnt, v, actions, Options{}, execPaths...)
	// The processes are spawned by a shell loop, not by this test, so the
	// agent side (this process) competes for the CPU as a real agent would.
	loop := `i=0; while [ $i -lt ` + strconv.Itoa(n) + ` ]; do "$0" -c "echo x > $1/f$i"; i=$((i+1)); done`
	cmd := exec.Command("/bin/sh", "-c", loop, shell, dir)
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	}
	var load *exec.Cmd
	stop := filepath.Join(mnt, "stop")
	if v.agent {
		// Other work beside them: one long-lived process rewriting files
		// in a sibling directory until the spawn loop is done.
		w := filepath.Join(mnt, "w")
		if err := os.Mkdir(w, 0o755); err != nil {
			t.Fatal(err)
		}
		load = exec.Command("/bin/sh", "-c", `while [ ! -e "$1" ]; do for i in 0 1 2 3 4 5 6 7 8 9; do echo y > "$0/g$i"; done; done`, w, stop)
		if err := load.Start(); err != nil {
			t.Fatal(err)
		}
	}
	out, err := cmd.CombinedOutput()
	if load != nil {
		os.WriteFile(stop, nil, 0o644)
		if werr := load.Wait(); werr != nil {
			t.Errorf("load: %v", werr)
		}
	}
	if err != nil {
		t.Fatalf("spawn loop: %v: %s", err, out)
	}
	recs := s.collect(t, 2*n, func(r *record.Record) bool {
		return strings.HasPrefix(r.File.Path, dir+"/") && (r.Action == record.ActionCreate || r.Action == record.ActionCloseWrite)
	})
	s.stop(t)
	a := attribution{records: len(recs), stats: s.e.Stats()}
	for _, r := range recs {
		if err := CheckNamed(r); err != nil {
			t.Error(err)
		}
		if r.Fanaudit.Enrichment == "full" {
			a.full++
		}
		okExe := r.Process.Executable == shell
		okUID := r.User.HasID && r.User.ID == uid
		if okExe && okUID {
			a.right++
		}
		if !okExe {
			a.wrongExe++
		}
		if !okUID {
			a.wrongUID++
		}
		if r.Process.Executable != "" && !okExe {
			t.Errorf("wrong executable %q (want %q) pid %d", r.Process.Executable, shell, r.Process.Pid)
		}
		if r.User.HasID && !okUID {
			t.Errorf("wrong uid %d (want %d) pid %d", r.User.ID, uid, r.Process.Pid)
		}
	}
	return a
}

var variants = []variant{
	{name: "late_proc_read"},
	{name: "observe", observe: true},
	{name: "observe+pidfd_info", observe: true, pidfdInfo: true},
	{name: "observe+pidfd_info+fan_pidfd", observe: true, pidfdInfo: true, fanPidfd: true},
	{name: "observe+exec", observe: true, exec: true},
	{name: "observe+connector", observe: true, connector: true},
	{name: "observe+exec+connector", observe: true, exec: true, connector: true},
	{name: "all", observe: true, exec: true, pidfdInfo: true, fanPidfd: true, connector: true},
	// The agent's defaults: no FAN_REPORT_PIDFD (config pidfd = false).
	{name: "defaults", observe: true, exec: true, pidfdInfo: true, connector: true},
	// The shell on an unwatched filesystem, as /usr usually is: exec
	// events come through [capture] exec_paths.
	{name: "defaults+exec_paths", observe: true, execFS: true, pidfdInfo: true, connector: true},
	// The agent as shipped (run with the default config, or watch), under
	// concurrent load, with /bin/sh on the root filesystem.
	{name: "agent", observe: true, pidfdInfo: true, connector: true, agent: true},
}

// TestAttribution is the test: 2,000 processes that each create
// and write one file and exit at once, as root and as another uid. Every
// variant's rate is logged; the agent's defaults (early read, exec events,
// PIDFD_GET_INFO, proc connector) and "all" must attribute at least 99.9%,
// and no variant may ever attribute wrongly.
func TestAttribution(t *testing.T) {
	testutil.RequireRoot(t)
	n := 2000
	for _, v := range variants {
		for _, uid := range []uint32{0, 4321} {
			asserted := v.name == "all" || v.name == "defaults" || v.name == "defaults+exec_paths" || v.name == "agent"
			if testing.Short() && !asserted {
				continue
			}
			t.Run(fmt.Sprintf("%s/uid%d", v.name, uid), func(t *testing.T) {
				a := runAttribution(t, v, uid, n)
				t.Logf("attribution %s uid %d: %d/%d = %.2f%% (wrong or missing exe %d, uid %d), full %d = %.2f%%; cache hits %d misses %d gone %d gone-hits %d execs %d late %d lineage %d",
					v.name, uid, a.right, a.records, 100*a.rate(), a.wrongExe, a.wrongUID, a.full, 100*float64(a.full)/float64(a.records),
					a.stats.CacheHits, a.stats.CacheMisses, a.stats.ProcGone, a.stats.ProcGoneHits, a.stats.Execs, a.stats.LateReads, a.stats.LineageHits)
				if asserted && a.rate() < 0.999 {
					t.Errorf("attribution %.3f%% < 99.9%%", 100*a.rate())
				}
			})
		}
	}
}

func copyExe(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestExecLive: one process writes a file, execs a second program (same
// pid), which writes another; each file's records carry the program that
// was running, with and without exec events on the program's filesystem.
func TestExecLive(t *testing.T) {
	testutil.RequireRoot(t)
	for _, v := range []variant{
		{name: "exec_events", observe: true, exec: true, pidfdInfo: true, connector: true},
		{name: "proc_only", observe: true, pidfdInfo: true, connector: true},
	} {
		t.Run(v.name, func(t *testing.T) {
			mnt := testutil.TmpfsMount(t, "16m")
			shell, err := filepath.EvalSymlinks("/bin/sh")
			if err != nil {
				t.Fatal(err)
			}
			first, second := filepath.Join(mnt, "first"), filepath.Join(mnt, "second")
			copyExe(t, shell, first)
			copyExe(t, shell, second)
			actions := []record.Action{record.ActionCreate, record.ActionCloseWrite}
			if v.exec {
				actions = append(actions, record.ActionExec)
			}
			s := startLive(t, mnt, v, actions, Options{})
			// "read" keeps each program alive until the test has seen its
			// file's events, so the proc_only variant can always read /proc.
			script := `echo a > "$1/a"; read x; exec "$2" -c 'echo b > "$1/b"; read x || true' sh "$1"`
			cmd := exec.Command(first, "-c", script, "sh", mnt, second)
			in, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pid := int32(cmd.Process.Pid)
			is := func(name string) func(*record.Record) bool {
				return func(r *record.Record) bool {
					return r.File.Path == filepath.Join(mnt, name) && r.Action == record.ActionCloseWrite
				}
			}
			a := s.collect(t, 1, is("a"))[0]
			io.WriteString(in, "\n")
			b := s.collect(t, 1, is("b"))[0]
			in.Close()
			if err := cmd.Wait(); err != nil {
				t.Fatal(err)
			}
			if a.Process.Pid != pid || b.Process.Pid != pid {
				t.Fatalf("pids %d %d, want %d", a.Process.Pid, b.Process.Pid, pid)
			}
			if a.Process.Executable != first || b.Process.Executable != second {
				t.Fatalf("executables %q then %q, want %q then %q", a.Process.Executable, b.Process.Executable, first, second)
			}
			if a.Process.EntityID != b.Process.EntityID || a.Process.EntityID == "" {
				t.Fatalf("entity id changed across exec: %q %q", a.Process.EntityID, b.Process.EntityID)
			}
			if !strings.Contains(b.Process.CommandLine, "echo b") {
				t.Fatalf("command line after exec: %q", b.Process.CommandLine)
			}
		})
	}
}

// TestHashLive hashes close_write files through the capture's own open
// file and compares with sha256sum; a file above the cap is skipped and
// says so.
func TestHashLive(t *testing.T) {
	testutil.RequireRoot(t)
	mnt := testutil.TmpfsMount(t, "64m")
	v := variant{observe: true, pidfdInfo: true}
	s := startLive(t, mnt, v, []record.Action{record.ActionCloseWrite}, Options{Hash: HashOptions{Enabled: true, MaxSize: 1 << 20}})
	small, big := filepath.Join(mnt, "small"), filepath.Join(mnt, "big")
	if err := exec.Command("sh", "-c", `seq 1 20000 > "$0"; head -c 2000000 /dev/zero > "$1"`, small, big).Run(); err != nil {
		t.Fatal(err)
	}
	got := map[string]*record.Record{}
	for _, r := range s.collect(t, 2, func(r *record.Record) bool { return r.File.Path == small || r.File.Path == big }) {
		got[r.File.Path] = r
	}
	if want := sha256sum(t, small); got[small].File.SHA256 != want || got[small].File.HashStatus != "" {
		t.Fatalf("small: %+v, want %s", got[small].File, want)
	}
	if got[big].File.SHA256 != "" || got[big].File.HashStatus != HashSkippedSize {
		t.Fatalf("big: %+v", got[big].File)
	}
}

// TestPidReuseLive makes the kernel hand a just-freed pid to a different
// program (through /proc/sys/kernel/ns_last_pid) while the first
// program's identity is still cached, and checks that the second gets
// its own executable and entity id.
func TestPidReuseLive(t *testing.T) {
	testutil.RequireRoot(t)
	const lastPid = "/proc/sys/kernel/ns_last_pid"
	if _, err := os.Stat(lastPid); err != nil {
		t.Skipf("%v", err)
	}
	mnt := testutil.TmpfsMount(t, "16m")
	shell, err := filepath.EvalSymlinks("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	first, second := filepath.Join(mnt, "first"), filepath.Join(mnt, "second")
	copyExe(t, shell, first)
	copyExe(t, shell, second)
	// No exec events and no pidfds: only the proc connector's fork event
	// can tell that the cached pid now belongs to someone else.
	v := variant{observe: true, pidfdInfo: true, connector: true}
	s := startLive(t, mnt, v, []record.Action{record.ActionCloseWrite}, Options{})
	write := func(exe, name string) (int32, *record.Record) {
		cmd := exec.Command(exe, "-c", `echo x > "$0"; read x || true`, filepath.Join(mnt, name))
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r := s.collect(t, 1, func(r *record.Record) bool { return r.File.Path == filepath.Join(mnt, name) })[0]
		in.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
		return int32(cmd.Process.Pid), r
	}
	pidA, a := write(first, "a")
	// Other processes on the machine may take the pid first; try a few
	// times.
	for try := 0; try < 20; try++ {
		if err := os.WriteFile(lastPid, []byte(strconv.Itoa(int(pidA)-1)), 0o644); err != nil {
			t.Skipf("set %s: %v", lastPid, err)
		}
		pidB, b := write(second, "b"+strconv.Itoa(try))
		if pidB != pidA {
			continue
		}
		if a.Process.Executable != first || b.Process.Executable != second {
			t.Fatalf("executables %q, %q; want %q, %q", a.Process.Executable, b.Process.Executable, first, second)
		}
		if a.Process.EntityID == b.Process.EntityID || b.Process.EntityID == "" {
			t.Fatalf("entity ids %q, %q", a.Process.EntityID, b.Process.EntityID)
		}
		return
	}
	t.Skip("could not get the pid reused")
}
