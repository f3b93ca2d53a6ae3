// Package bench is fanaudit's side-by-side benchmark harness (`make bench`).
//
// It runs the reference workload (../shared/bench/wl.c) on a private tmpfs
// with no monitor, under the C limit reader (fanread.c), under fatrace and
// under fanaudit, interleaving the configurations round by round so that
// drift on a noisy machine hits them all alike, and writes a markdown table
// of medians and min–max. A second set of runs pre-fills an unlimited queue
// and times draining it. Timings are reported, never asserted.
package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Options configure one harness run.
type Options struct {
	Repo     string // repository root: go test -bench runs here
	Sticks   string // directory holding wl.c and fanread.c
	WorkDir  string // scratch directory: binaries, mount points
	N        int    // files per workload run
	Block    int    // bytes written per file
	Rounds   int
	Fanaudit string // fanaudit binary; empty leaves its configurations out
	// FanauditDrainHook says fanaudit implements FANAUDIT_BENCH_DRAIN=1
	// (wait for SIGUSR1 after marking, exit once the queue is empty).
	// Without it the drain is measured by SIGSTOP/SIGCONT.
	FanauditDrainHook bool
	KafkaBrokers      string // empty leaves the Kafka configuration out
	KcatPath          string // consumer used to count what reached Kafka
	Fatrace           string // fatrace binary; empty leaves it out
	NoDrain           bool
	// PacedRate and PacedFor set the paced run (peak RSS at a given
	// record rate), done once after the rounds; a zero rate skips it.
	PacedRate   float64
	PacedFor    time.Duration
	MemTouchGiB int      // touched once before timing; 0 skips
	GoBenchPkgs []string // packages for go test -bench; empty skips
	GoBenchTime string   // -benchtime, e.g. "1s"
	// PerfDir, if set, gets perf profiles of one extra fanaudit live run and
	// one extra drain run, outside the timed rounds.
	PerfDir string
	// ScopeFiles is the size of the scripted workload done inside the
	// watched subtree in the unwatched-sibling rows (wl with this many
	// files, once in a directory made before the agent started and once in
	// one made after); 0 means 100.
	ScopeFiles int
	// Only, if set, keeps just the configurations whose name it matches
	// (live, sibling, drain and paced alike), e.g. to pair two of them in
	// a short run; the targets of those left out read n/a.
	Only *regexp.Regexp
	Log  io.Writer
}

// only filters configurations by Only.
func (o *Options) only(cs []config) []config {
	if o.Only == nil {
		return cs
	}
	return slices.DeleteFunc(cs, func(c config) bool { return !o.Only.MatchString(c.name) })
}

func (o *Options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, "fabench: "+format+"\n", args...)
	}
}

// Sample is one configuration's result in one round.
type Sample struct {
	Round  int
	WL     WLResult
	Counts Counts
	// CPU is the monitor's CPU seconds for the workload: wait4's rusage
	// for fanread and fatrace (whose start-up and idle cost nothing), for
	// fanaudit from the workload's start to its last record delivered.
	CPU       float64
	CPUTotal  float64 // fanaudit: the whole process, start-up and shutdown included (wait4)
	MaxRSSKiB int64   // monitor peak RSS (wait4 rusage)
	Tail      float64 // seconds from workload end to monitor exit
	DrainS    float64 // drain configurations: seconds to empty the queue
	DrainCPU  float64 // drain configurations: CPU seconds spent draining
	// KernelEvents is what the monitor read from fanotify, where it says:
	// fanread's event count, fanaudit's capture stats.
	KernelEvents uint64
	// The unwatched-sibling rows' check of the watched subtree: the
	// operations a scripted workload did inside it (in a directory made
	// before the agent started and in one made after), how many of them
	// were not reported, and how many records were about paths outside it.
	ScopeChecked bool
	ScopeOps     uint64
	ScopeMissing uint64
	OutOfScope   uint64
	// BurstOps and BurstMissing: the same for work started the moment its
	// directory was made (racing the agent's mark); BurstAnnounced is how
	// many of the missing ones an events_lost record with reason
	// unwatched_window naming that directory announced (the rest were lost
	// silently).
	BurstOps       uint64
	BurstMissing   uint64
	BurstAnnounced uint64
	Err            string // the sample is unusable
	Warn           string // the sample is usable, but something went wrong (e.g. a bad exit)
}

// ConfigResult collects the samples of one configuration.
type ConfigResult struct {
	Name    string
	Command string
	Ops     []Op // operation types this configuration subscribes to
	Samples []Sample
	Note    string
}

// Report is everything one harness run measured.
type Report struct {
	Start, End time.Time
	Machine    Machine
	N, Block   int
	Rounds     int
	Live       []*ConfigResult
	Drain      []*ConfigResult
	Sibling    []*ConfigResult // unwatched work on the same filesystem
	Paced      []*ConfigResult
	ScopeFiles int
	// SealNA says why the sealed configuration was left out (the agent
	// has no seal-keygen command); empty when it ran.
	SealNA     string
	PacedRate  float64
	GoBench    []GoBench
	GoBenchErr map[string]string
	Profiles   []Profile
	Notes      []string
}

// env holds what every run of a round needs.
type env struct {
	o       *Options
	bin     string // built C sticks
	wlMnt   string // tmpfs the workload runs on (and monitors mark)
	outMnt  string // tmpfs for monitor outputs, never marked
	seq     int
	sealing bool // the agent has seal-keygen: the sealed configuration runs
}

// config is one monitor configuration.
type config struct {
	name    string
	command string
	ops     []Op
	// live runs the workload under the monitor; drain pre-fills and drains.
	run func(ctx context.Context, e *env, dir, tag string) (Sample, error)
}

// Run executes the whole harness and returns the report.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.N <= 0 || o.Rounds <= 0 {
		return nil, fmt.Errorf("bench: N and Rounds must be positive (N=%d, Rounds=%d)", o.N, o.Rounds)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("bench: fanotify needs root")
	}
	if o.ScopeFiles <= 0 {
		o.ScopeFiles = 100
	}
	rep := &Report{Start: time.Now().UTC(), N: o.N, Block: o.Block, Rounds: o.Rounds, ScopeFiles: o.ScopeFiles, GoBenchErr: map[string]string{}}
	rep.Machine = describeMachine(ctx, o)
	tot0, steal0 := cpuTimes()
	if err := os.MkdirAll(o.WorkDir, 0o755); err != nil {
		return nil, fmt.Errorf("bench: work dir: %w", err)
	}
	e := &env{o: &o, bin: filepath.Join(o.WorkDir, "bin")}
	if err := buildSticks(ctx, o.Sticks, e.bin); err != nil {
		return nil, err
	}
	if o.MemTouchGiB > 0 {
		o.logf("touching %d GiB so lazily backed guest memory does not skew the first runs", o.MemTouchGiB)
		if _, err := run(ctx, "", filepath.Join(e.bin, "memtouch"), strconv.Itoa(o.MemTouchGiB)); err != nil {
			return nil, err
		}
	}
	var err error
	if e.wlMnt, err = mountTmpfs(ctx, o.WorkDir, "wl", "2g"); err != nil {
		return nil, err
	}
	defer func() { _ = unmountTmpfs(e.wlMnt) }()
	if e.outMnt, err = mountTmpfs(ctx, o.WorkDir, "out", "6g"); err != nil {
		return nil, err
	}
	defer func() { _ = unmountTmpfs(e.outMnt) }()

	if o.Fanaudit != "" {
		if e.sealing, rep.SealNA = probeSealing(ctx, e); rep.SealNA != "" {
			o.logf("sealed configuration left out: %s", rep.SealNA)
		}
	}
	live, drain, sibling := configs(e)
	live, drain, sibling = o.only(live), o.only(drain), o.only(sibling)
	results := func(cs []config) []*ConfigResult {
		var res []*ConfigResult
		for _, c := range cs {
			res = append(res, &ConfigResult{Name: c.name, Command: c.command, Ops: c.ops})
		}
		return res
	}
	rep.Live, rep.Drain, rep.Sibling = results(live), results(drain), results(sibling)
	for r := 1; r <= o.Rounds; r++ {
		o.logf("round %d/%d", r, o.Rounds)
		runSet(ctx, e, r, live, rep.Live)
		runSet(ctx, e, r, sibling, rep.Sibling)
		if !o.NoDrain {
			runSet(ctx, e, r, drain, rep.Drain)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	if o.PacedRate > 0 {
		o.logf("paced run: %.0f records/s for %v", o.PacedRate, o.PacedFor)
		rep.PacedRate = o.PacedRate
		pc := o.only(pacedConfigs(e))
		for _, c := range pc {
			rep.Paced = append(rep.Paced, &ConfigResult{Name: c.name, Command: c.command, Ops: c.ops})
		}
		runSet(ctx, e, 1, pc, rep.Paced)
	}
	if o.PerfDir != "" && o.Fanaudit != "" {
		rep.Profiles = profileRuns(ctx, e)
	}
	if len(o.GoBenchPkgs) > 0 {
		rep.GoBench, rep.GoBenchErr = runGoBench(ctx, o)
	}
	rep.Machine.LoadEnd = loadavg()
	if tot1, steal1 := cpuTimes(); tot1 > tot0 {
		rep.Machine.Steal = fmt.Sprintf("%.1f %%", float64(steal1-steal0)/float64(tot1-tot0)*100)
	}
	rep.End = time.Now().UTC()
	return rep, nil
}

// runSet runs each configuration once, in order: one interleaved round.
func runSet(ctx context.Context, e *env, round int, cs []config, res []*ConfigResult) {
	for i, c := range cs {
		if ctx.Err() != nil {
			return
		}
		s, err := func() (Sample, error) {
			tag, dir, err := e.runDir(fmt.Sprintf("r%d", round))
			if err != nil {
				return Sample{}, err
			}
			defer os.RemoveAll(dir)
			return c.run(ctx, e, dir, tag)
		}()
		s.Round = round
		if s.Warn != "" {
			e.o.logf("%s round %d: warning: %s", c.name, round, s.Warn)
		}
		if err != nil {
			s.Err = err.Error()
			e.o.logf("%s round %d: %v", c.name, round, err)
		} else {
			e.o.logf("%-28s wl=%.3fs cpu=%.3fs rss=%dKiB ops=%d %v lost=%d/%d drain=%.3fs",
				c.name, s.WL.Elapsed, s.CPU, s.MaxRSSKiB, s.Counts.total(), s.Counts.Ops, s.Counts.Lost, s.Counts.LossReports, s.DrainS)
		}
		res[i].Samples = append(res[i].Samples, s)
		e.clearOut()
	}
}

// runDir makes the workload directory of the next run, named
// PREFIX-SEQ (its tag), under the workload mount.
func (e *env) runDir(prefix string) (tag, dir string, err error) {
	e.seq++
	tag = fmt.Sprintf("%s-%02d", prefix, e.seq)
	dir = filepath.Join(e.wlMnt, tag)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("run dir: %w", err)
	}
	return tag, dir, nil
}

// clearOut empties the output mount after a run: outputs are large;
// this keeps the out tmpfs from filling up.
func (e *env) clearOut() {
	ents, _ := os.ReadDir(e.outMnt)
	for _, en := range ents {
		os.RemoveAll(filepath.Join(e.outMnt, en.Name()))
	}
}

func (c Counts) total() uint64 {
	var t uint64
	for _, op := range countedOps {
		t += c.Ops[op]
	}
	return t
}

// Expected is what the workload does, per operation type.
func Expected(n, block int) map[Op]uint64 {
	u := uint64(n)
	m := map[Op]uint64{OpOpen: u, OpCreate: u, OpCloseWrite: u, OpRename: (u + 1) / 2, OpDelete: u}
	if block > 0 {
		m[OpModify] = u
	}
	return m
}

// Missing is how many expected operations of the subscribed types the
// monitor did not report.
func Missing(c Counts, ops []Op, n, block int) uint64 {
	exp := Expected(n, block)
	var miss uint64
	for _, op := range ops {
		if got := c.Ops[op]; got < exp[op] {
			miss += exp[op] - got
		}
	}
	return miss
}

// workload is what runs while a monitor watches dir.
type workload func(ctx context.Context, dir string) (WLResult, error)

// recordsPerFile is what wl makes per file, counted as fanaudit records:
// open, create, modify, close_write, delete, and a rename every second file.
const recordsPerFile = 5.5

// paced runs wl in batches, each sized to catch up with rate records per
// second since the start, so the monitor sees that average rate for dur
// whatever a batch costs to start. It paces the load; it does not wait for
// any event.
func (e *env) paced(rate float64, dur time.Duration) workload {
	return func(ctx context.Context, dir string) (WLResult, error) {
		const tick = 100 * time.Millisecond
		filesPerSec := rate / recordsPerFile
		t := time.NewTicker(tick)
		defer t.Stop()
		var agg WLResult
		start := time.Now()
		for i := 0; time.Since(start) < dur; i++ {
			files := int64(filesPerSec*time.Since(start).Seconds()) - agg.N
			if files > 0 {
				r, err := e.wlBatch(ctx, filepath.Join(dir, "p"+strconv.Itoa(i)), files)
				if err != nil {
					return agg, err
				}
				agg.N += r.N
				agg.Ops += r.Ops
				agg.UTime += r.UTime
				agg.STime += r.STime
			}
			select {
			case <-t.C:
			case <-ctx.Done():
				return agg, ctx.Err()
			}
		}
		agg.Elapsed = time.Since(start).Seconds()
		return agg, nil
	}
}

// wlBatch runs wl in a new subdirectory, so batches never reuse names.
func (e *env) wlBatch(ctx context.Context, sub string, files int64) (WLResult, error) {
	if err := os.Mkdir(sub, 0o755); err != nil {
		return WLResult{}, fmt.Errorf("paced dir: %w", err)
	}
	out, err := run(ctx, "", filepath.Join(e.bin, "wl"), sub, strconv.FormatInt(files, 10), strconv.Itoa(e.o.Block))
	if err != nil {
		return WLResult{}, err
	}
	if err := os.Remove(sub); err != nil {
		return WLResult{}, fmt.Errorf("paced dir: %w", err)
	}
	return ParseWL(out)
}

func (e *env) wl(ctx context.Context, dir string) (WLResult, error) {
	return e.wlN(ctx, dir, e.o.N)
}

func (e *env) wlN(ctx context.Context, dir string, n int) (WLResult, error) {
	out, err := run(ctx, "", filepath.Join(e.bin, "wl"), dir, strconv.Itoa(n), strconv.Itoa(e.o.Block))
	if err != nil {
		return WLResult{}, err
	}
	return ParseWL(out)
}

const (
	readyTimeout = 60 * time.Second
	quietFor     = time.Second
	// sentinelTimeout bounds the wait for fatrace to catch up, which takes
	// well under a second when it works at all.
	sentinelTimeout = 60 * time.Second
	stopTimeout     = 300 * time.Second
	settle          = 200 * time.Millisecond
	sentinelName    = "zz-fabench-sentinel"
)

var (
	allOps = []Op{OpOpen, OpCreate, OpModify, OpCloseWrite, OpRename, OpDelete}
	fdOps  = []Op{OpOpen, OpModify, OpCloseWrite}
)

// Configuration names the targets refer to.
const (
	nameNone = "no monitor"
	nameRef  = "fanread dfid_name_target -e full -S 1000"
	// nameRefWork is the C reader doing, live, the work the drain
	// reference does: paths, /proc, JSON lines to a file. It is the floor
	// the agent's CPU per operation is read against.
	nameRefWork   = "fanread dfid_name_target -e full -S 1000 -r -p -C -o"
	nameFile      = "fanaudit file sink"
	nameWatch     = "fanaudit watch"
	nameSealed    = "fanaudit file sink, sealed"
	nameKafka     = "fanaudit kafka sink"
	nameRefDrain  = "fanread dfid_name_target -e full -D -u -r -p -C -o"
	nameFileDrain = "fanaudit drain, file sink"
	nameSibNone   = "no monitor, wl in DIR/other"
	nameSibAgent  = "fanaudit run, paths = [DIR/watched]"
	// nameSibSubtree is the agent with inode marks asked for, when the
	// default is not already them: what the opt-in costs and loses.
	nameSibSubtree = "fanaudit run, scope = \"subtree\", paths = [DIR/watched]"
	nameSibTree    = "fanread -k tree DIR/watched"
	nameSibFS      = "fanread -k fs DIR/watched"
)

// refArgs is the C reader doing the kernel work of fanaudit's defaults:
// one FID group that names both sides of every change, every event type.
var refArgs = []string{"-m", "dfid_name_target", "-e", "full"}

func configs(e *env) (live, drain, sibling []config) {
	o := e.o
	live = append(live, config{name: nameNone, command: "wl DIR N", run: runNone})
	live = append(live,
		fanreadLive("fanread fd", []string{"-m", "fd"}, fdOps),
		fanreadLive("fanread dfid_name -S 1000", []string{"-m", "dfid_name", "-S", "1000"}, allOps),
		fanreadLive(nameRef, append(slices.Clone(refArgs), "-S", "1000"), allOps),
		fanreadLive(nameRefWork, append(slices.Clone(refArgs), "-S", "1000", "-r", "-p", "-C", "-o", "OUT"), allOps),
	)
	if o.Fatrace != "" {
		live = append(live, config{name: "fatrace -c -o FILE", command: "fatrace -c -o FILE (cwd on the tmpfs)", ops: allOps, run: runFatrace})
	}
	if o.Fanaudit != "" {
		live = append(live,
			config{name: nameFile, command: "fanaudit run, default config + file sink (max_size_mb = 0), state_dir per run", ops: allOps, run: fanauditLive(sinkFile)},
			config{name: nameWatch, command: "fanaudit watch DIR > FILE", ops: allOps, run: fanauditLive(sinkWatch)},
		)
		if e.sealing {
			live = append(live, config{name: nameSealed, command: "the file sink configuration with seal_state (made by fanaudit seal-keygen --state FILE; seal_interval default)", ops: allOps, run: fanauditLive(sinkFileSealed)})
		}
		if o.KafkaBrokers != "" {
			live = append(live, config{name: nameKafka, command: "fanaudit run, default config + Kafka sink (local broker, topic created first, spool in a per-run directory)", ops: allOps, run: fanauditLive(sinkKafka)})
		}
	}
	drain = append(drain,
		fanreadDrain("fanread dfid_name -D -u", []string{"-m", "dfid_name"}),
		fanreadDrain("fanread dfid_name -D -u -r -p -C -o", []string{"-m", "dfid_name", "-r", "-p", "-C", "-o", "OUT"}),
		fanreadDrain("fanread dfid_name_target -e full -D -u", refArgs),
		fanreadDrain(nameRefDrain, append(slices.Clone(refArgs), "-r", "-p", "-C", "-o", "OUT")),
	)
	if o.Fanaudit != "" {
		cmd := "fanaudit run, unlimited_queue + file sink (max_size_mb = 0); SIGSTOP, workload, SIGCONT; ends when the output stops growing"
		if o.FanauditDrainHook {
			cmd = "fanaudit run, unlimited_queue + file sink, FANAUDIT_BENCH_DRAIN=1, SIGUSR1"
		}
		drain = append(drain, config{name: nameFileDrain, command: cmd, ops: allOps, run: fanauditDrain})
	}
	sibling = siblingConfigs(e)
	return live, drain, sibling
}

// pacedConfigs hold the load at a fixed rate, to read peak RSS at that
// rate rather than at whatever rate the full-speed workload reaches.
func pacedConfigs(e *env) []config {
	w := e.paced(e.o.PacedRate, e.o.PacedFor)
	args := append(slices.Clone(refArgs), "-S", "1000")
	cs := []config{{
		name:    nameRef + ", paced",
		command: "fanread " + strings.Join(args, " ") + " DIR",
		ops:     allOps,
		run: func(ctx context.Context, e *env, dir, tag string) (Sample, error) {
			return fanreadRun(ctx, e, dir, tag, args, w)
		},
	}}
	if e.o.Fanaudit != "" {
		cs = append(cs, config{
			name:    "fanaudit file sink, paced",
			command: "fanaudit run, default config + file sink (max_size_mb = 0)",
			ops:     allOps,
			run: func(ctx context.Context, e *env, dir, tag string) (Sample, error) {
				return fanauditLiveRun(ctx, e, dir, tag, sinkFile, w)
			},
		})
	}
	return cs
}

func runNone(ctx context.Context, e *env, dir, tag string) (Sample, error) {
	wl, err := e.wl(ctx, dir)
	return Sample{WL: wl}, err
}

func fanreadLive(name string, args []string, ops []Op) config {
	return config{
		name:    name,
		command: "fanread " + strings.ReplaceAll(strings.Join(args, " "), "OUT", "FILE") + " DIR",
		ops:     ops,
		run: func(ctx context.Context, e *env, dir, tag string) (Sample, error) {
			return fanreadRun(ctx, e, dir, tag, fanreadArgv(e, tag, args), e.wl)
		},
	}
}

// fanreadArgv puts the run's output file (on the output tmpfs) where args
// say OUT.
func fanreadArgv(e *env, tag string, args []string) []string {
	argv := make([]string, 0, len(args))
	for _, a := range args {
		if a == "OUT" {
			a = filepath.Join(e.outMnt, tag+".jsonl")
		}
		argv = append(argv, a)
	}
	return argv
}

// startFanread starts fanread with args on dir and returns once its mark
// is in place (its -w readiness file exists).
func startFanread(ctx context.Context, e *env, dir, tag string, args ...string) (*monitor, error) {
	ready := filepath.Join(e.outMnt, tag+".ready")
	argv := append([]string{filepath.Join(e.bin, "fanread")}, args...)
	argv = append(argv, "-w", ready, dir)
	m, err := startMonitor(e.outMnt, tag, "", nil, argv...)
	if err != nil {
		return nil, err
	}
	if err := waitFile(ctx, ready, readyTimeout, m); err != nil {
		m.kill()
		return nil, err
	}
	return m, nil
}

func fanreadRun(ctx context.Context, e *env, dir, tag string, args []string, wload workload) (Sample, error) {
	m, err := startFanread(ctx, e, dir, tag, args...)
	if err != nil {
		return Sample{}, err
	}
	defer m.kill()
	wl, err := wload(ctx, dir)
	if err != nil {
		return Sample{}, err
	}
	end := time.Now()
	// fanread drains its queue to EAGAIN before it honours SIGINT.
	if err := m.signal(syscall.SIGINT); err != nil {
		return Sample{}, err
	}
	if err := m.wait(stopTimeout); err != nil {
		return Sample{}, err
	}
	s := Sample{WL: wl, Tail: m.exited.Sub(end).Seconds()}
	s.CPU, s.MaxRSSKiB = m.usage()
	out, _ := os.ReadFile(m.stdout)
	sum, err := ParseFanread(string(out))
	if err != nil {
		return s, err
	}
	s.Counts = sum.Counts()
	return s, nil
}

func runFatrace(ctx context.Context, e *env, dir, tag string) (Sample, error) {
	out := filepath.Join(e.outMnt, tag+".fatrace")
	m, err := startMonitor(e.outMnt, tag, dir, nil, e.o.Fatrace, "-c", "-o", out)
	if err != nil {
		return Sample{}, err
	}
	defer m.kill()
	if err := m.waitMarked(ctx, readyTimeout, settle); err != nil {
		return Sample{}, err
	}
	wl, err := e.wl(ctx, dir)
	if err != nil {
		return Sample{}, err
	}
	end := time.Now()
	// fatrace stops reading at SIGINT without draining its queue, so wait
	// for a file written after the workload to show up first: the queue is
	// FIFO, so everything before it has been read by then.
	poke := func() error {
		if err := os.WriteFile(filepath.Join(dir, sentinelName), []byte("x"), 0o644); err != nil {
			return fmt.Errorf("sentinel: %w", err)
		}
		return nil
	}
	s := Sample{WL: wl}
	if err := m.waitContains(ctx, out, []byte("/"+sentinelName+"\n"), sentinelTimeout, poke); err != nil {
		select {
		case <-m.done:
			// fatrace 0.17 exits on a queue overflow ("unexpected event
			// info type"): what it wrote until then is its result.
			s.Warn = err.Error()
		default:
			return s, err
		}
	} else if err := m.signal(syscall.SIGINT); err != nil {
		return s, err
	}
	if err := m.wait(stopTimeout); err != nil && s.Warn == "" {
		return s, err
	}
	s.Tail = max(0, m.exited.Sub(end).Seconds())
	s.CPU, s.MaxRSSKiB = m.usage()
	f, err := os.Open(out)
	if err != nil {
		return s, fmt.Errorf("fatrace output: %w", err)
	}
	defer f.Close()
	s.Counts, err = ParseFatrace(f, sentinelName)
	return s, err
}

func fanreadDrain(name string, args []string) config {
	return config{
		name:    name,
		command: "fanread " + strings.ReplaceAll(strings.Join(args, " "), "OUT", "FILE") + " -D -u DIR; SIGUSR1 after the workload",
		ops:     allOps,
		run: func(ctx context.Context, e *env, dir, tag string) (Sample, error) {
			m, err := startFanread(ctx, e, dir, tag, append(fanreadArgv(e, tag, args), "-D", "-u")...)
			if err != nil {
				return Sample{}, err
			}
			defer m.kill()
			wl, err := e.wl(ctx, dir)
			if err != nil {
				return Sample{}, err
			}
			if err := m.signal(syscall.SIGUSR1); err != nil {
				return Sample{}, err
			}
			if err := m.wait(stopTimeout); err != nil {
				return Sample{}, err
			}
			s := Sample{WL: wl}
			s.CPU, s.MaxRSSKiB = m.usage()
			out, _ := os.ReadFile(m.stdout)
			sum, err := ParseFanread(string(out))
			if err != nil {
				return s, err
			}
			s.Counts = sum.Counts()
			s.KernelEvents = sum.Events
			s.DrainS = sum.DrainS
			s.DrainCPU = sum.UTime + sum.STime // whole process; setup is negligible next to the drain
			return s, nil
		},
	}
}

// stopContDrain measures a drain for a monitor with no drain mode of its
// own: stop it once it has marked, run the workload into the unlimited
// queue, then let it run. With quietFile empty, the stop signal is queued
// before SIGCONT and the drain ends when the process exits (fanread stops
// at the first empty read). Otherwise the drain ends when quietFile last
// grew, and the stop signal follows, so a slow shutdown is not counted.
func stopContDrain(ctx context.Context, m *monitor, e *env, dir string, stop syscall.Signal, quietFile string) (Sample, error) {
	if err := m.waitMarked(ctx, readyTimeout, settle); err != nil {
		return Sample{}, err
	}
	if err := m.signal(syscall.SIGSTOP); err != nil {
		return Sample{}, err
	}
	wl, err := e.wl(ctx, dir)
	if err != nil {
		return Sample{}, err
	}
	s := Sample{WL: wl}
	cpu0, err := procCPU(m.pid())
	if err != nil {
		return s, err
	}
	if quietFile == "" {
		if err := m.signal(stop); err != nil {
			return s, err
		}
	}
	start := time.Now()
	if err := m.signal(syscall.SIGCONT); err != nil {
		return s, err
	}
	if quietFile == "" {
		if err := m.wait(stopTimeout); err != nil {
			return s, err
		}
		s.DrainS = m.exited.Sub(start).Seconds()
		s.CPU, s.MaxRSSKiB = m.usage()
		s.DrainCPU = s.CPU - cpu0
		return s, nil
	}
	last, cpuLast, err := m.waitQuiet(ctx, quietFile, quietFor, stopTimeout)
	if err != nil {
		return s, err
	}
	s.DrainS = last.Sub(start).Seconds()
	s.DrainCPU = cpuLast - cpu0
	if s.Warn, err = m.stop(stop, stopTimeout); err != nil {
		return s, err
	}
	s.CPU, s.MaxRSSKiB = m.usage()
	return s, nil
}
