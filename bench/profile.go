package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Profile is a perf profile of one extra fanaudit run.
type Profile struct {
	Name      string
	Data      string // perf.data
	Records   uint64
	Seconds   float64 // live: workload start to last record; drain: SIGCONT to last record
	Inclusive []ProfileLine
	Self      []ProfileLine
	// GC is the garbage collector's share of the samples (inclusive % of
	// its background workers, mark assists, sweeper and scavenger).
	GC  float64
	Err string
}

// ProfileLine is one symbol of perf report.
type ProfileLine struct {
	Percent float64
	Symbol  string
}

// profileRuns profiles fanaudit with perf (no support needed from the
// agent: perf reads Go's symbols and sees the kernel side too), once live
// and once draining with the file sink, and live with the sealed file sink
// and the Kafka sink where those run, outside the timed rounds.
func profileRuns(ctx context.Context, e *env) []Profile {
	perf, err := exec.LookPath("perf")
	if err != nil {
		return []Profile{{Name: "perf", Err: "perf not installed"}}
	}
	if err := os.MkdirAll(e.o.PerfDir, 0o755); err != nil {
		return []Profile{{Name: "perf", Err: err.Error()}}
	}
	type run struct {
		name, file string
		kind       sinkKind
		drain      bool
		config     string // the configuration it profiles (Options.Only)
	}
	runs := []run{
		{"live, default config + file sink", "live", sinkFile, false, nameFile},
		{"drain, unlimited_queue + file sink", "drain", sinkFile, true, nameFileDrain},
	}
	if e.sealing {
		runs = append(runs, run{"live, file sink with seal_state", "live-sealed", sinkFileSealed, false, nameSealed})
	}
	if e.o.KafkaBrokers != "" {
		runs = append(runs, run{"live, Kafka sink", "live-kafka", sinkKafka, false, nameKafka})
	}
	var out []Profile
	for _, r := range runs {
		if e.o.Only != nil && !e.o.Only.MatchString(r.config) {
			continue
		}
		e.o.logf("perf profile: %s", r.name)
		p := Profile{Name: r.name, Data: filepath.Join(e.o.PerfDir, "fanaudit-"+r.file+".perf.data")}
		var err error
		if r.drain {
			err = profileOne(ctx, e, perf, true, &p)
		} else {
			err = profileLive(ctx, e, perf, r.kind, &p)
		}
		if err != nil {
			p.Err = err.Error()
			e.o.logf("perf profile %s: %v", r.name, err)
		}
		out = append(out, p)
	}
	return out
}

// profileLive profiles a live run of the agent with a sink of kind: perf
// attaches once the agent has marked, before the workload starts, and
// ends with the agent.
func profileLive(ctx context.Context, e *env, perf string, kind sinkKind, p *Profile) error {
	tag, dir, err := e.runDir("perf")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	defer e.clearOut()
	var rec *monitor
	defer func() {
		if rec != nil {
			rec.kill()
		}
	}()
	s, _, err := fanauditLiveWith(ctx, e, dir, tag, kind, func(ctx context.Context, m *monitor, _ string) (WLResult, error) {
		var err error
		rec, err = startMonitor(e.outMnt, tag+"-perf", "", nil, perf, "record", "-F", "999", "-g", "-p", strconv.Itoa(m.pid()), "-o", p.Data)
		if err != nil {
			return WLResult{}, err
		}
		if err := rec.waitPerfAttached(ctx, readyTimeout); err != nil {
			return WLResult{}, err
		}
		return e.wl(ctx, dir)
	})
	if err != nil {
		return err
	}
	// perf record -p ends when its target does; SIGINT in case it has not.
	select {
	case <-rec.done:
	case <-time.After(quietFor):
		if _, err := rec.stop(syscall.SIGINT, stopTimeout); err != nil {
			select {
			case <-rec.done: // it ended meanwhile
			default:
				return err
			}
		}
	}
	p.Records = s.Counts.Events
	p.Seconds = s.WL.Elapsed + s.Tail
	return p.report(ctx, perf)
}

// report fills the profile's tables from its perf.data.
func (p *Profile) report(ctx context.Context, perf string) error {
	var all string
	var err error
	if p.Inclusive, all, err = perfReport(ctx, perf, p.Data, true, 25); err != nil {
		return err
	}
	p.GC = GCShare(all)
	p.Self, _, err = perfReport(ctx, perf, p.Data, false, 20)
	return err
}

func profileOne(ctx context.Context, e *env, perf string, drain bool, p *Profile) error {
	tag, dir, err := e.runDir("perf")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	defer e.clearOut()
	cfg := filepath.Join(e.outMnt, tag+".toml")
	out := filepath.Join(e.outMnt, tag+".jsonl")
	state, err := e.privateDir("state-" + tag)
	if err != nil {
		return err
	}
	defer os.RemoveAll(state)
	if err := (faConfig{paths: []string{dir}, out: out, kind: sinkFile, unlimited: drain, stateDir: state}).write(cfg); err != nil {
		return err
	}
	m, err := startMonitor(e.outMnt, tag, "", nil, e.o.Fanaudit, "run", "--config", cfg)
	if err != nil {
		return err
	}
	defer m.kill()
	if err := m.waitMarked(ctx, readyTimeout, settle); err != nil {
		return err
	}
	if drain {
		if err := m.signal(syscall.SIGSTOP); err != nil {
			return err
		}
		if _, err := e.wl(ctx, dir); err != nil {
			return err
		}
	}
	rec, err := startMonitor(e.outMnt, tag+"-perf", "", nil, perf, "record", "-F", "999", "-g", "-p", strconv.Itoa(m.pid()), "-o", p.Data)
	if err != nil {
		return err
	}
	defer rec.kill()
	if err := rec.waitPerfAttached(ctx, readyTimeout); err != nil {
		return err
	}
	start := time.Now()
	if drain {
		if err := m.signal(syscall.SIGCONT); err != nil {
			return err
		}
	} else if _, err := e.wl(ctx, dir); err != nil {
		return err
	}
	last, _, err := m.waitQuiet(ctx, out, quietFor, stopTimeout)
	if err != nil {
		return err
	}
	p.Seconds = last.Sub(start).Seconds()
	if _, err := rec.stop(syscall.SIGINT, stopTimeout); err != nil {
		return err
	}
	if _, err := m.stop(syscall.SIGTERM, stopTimeout); err != nil {
		return err
	}
	f, err := os.Open(out)
	if err != nil {
		return fmt.Errorf("fanaudit output: %w", err)
	}
	c, err := ParseFanaudit(f, "")
	f.Close()
	if err != nil {
		return err
	}
	p.Records = c.Events
	return p.report(ctx, perf)
}

// gcRoots are the runtime functions under which the collector's work runs.
var gcRoots = []string{"runtime.gcBgMarkWorker", "runtime.gcAssistAlloc", "runtime.bgsweep", "runtime.bgscavenge"}

// GCShare sums the inclusive percentages of the collector's roots in a
// `perf report --children` output.
func GCShare(out string) float64 {
	var sum float64
	for _, l := range ParsePerfReport(out, true, 0) {
		for _, r := range gcRoots {
			if l.Symbol == r {
				sum += l.Percent
			}
		}
	}
	return sum
}

// waitPerfAttached polls until perf holds perf_event descriptors, i.e. the
// target is being sampled.
func (m *monitor) waitPerfAttached(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	fdDir := fmt.Sprintf("/proc/%d/fd", m.pid())
	for {
		ents, _ := os.ReadDir(fdDir)
		for _, en := range ents {
			if l, err := os.Readlink(filepath.Join(fdDir, en.Name())); err == nil && strings.Contains(l, "perf_event") {
				return nil
			}
		}
		select {
		case <-m.done:
			return fmt.Errorf("perf exited before attaching: %w: %s", m.waitErr, m.tail())
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("perf did not attach within %v", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// perfReport returns the top symbols, inclusive (children) or self, and
// the whole report.
func perfReport(ctx context.Context, perf, data string, inclusive bool, top int) ([]ProfileLine, string, error) {
	args := []string{perf, "report", "-i", data, "--stdio", "--sort", "symbol", "-g", "none", "--percent-limit", "0.5"}
	if inclusive {
		args = append(args, "--children")
	} else {
		args = append(args, "--no-children")
	}
	out, err := run(ctx, "", args...)
	if err != nil {
		return nil, "", err
	}
	return ParsePerfReport(out, inclusive, top), out, nil
}

// ParsePerfReport reads `perf report --stdio -g none` lines such as
// "  34.99%   0.69%  [.] sym". With inclusive, the first percentage
// (children) is kept, else the only one. Wrappers every stack goes through
// are skipped. top 0 keeps every line.
func ParsePerfReport(out string, inclusive bool, top int) []ProfileLine {
	var res []ProfileLine
	for line := range strings.SplitSeq(out, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		i := strings.Index(t, "] ")
		if i < 0 {
			continue
		}
		f := strings.Fields(t[:i])
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSuffix(f[0], "%"), 64)
		if err != nil {
			continue
		}
		// perf pads the symbol column and appends empty "-" columns.
		sym := strings.TrimSpace(t[i+2:])
		for strings.HasSuffix(sym, " -") {
			sym = strings.TrimSpace(strings.TrimSuffix(sym, " -"))
		}
		if j := strings.Index(sym, "[go.shape"); j >= 0 {
			sym = sym[:j] + "[…]" + sym[strings.LastIndex(sym, "])")+1:]
		}
		if inclusive && skipInclusive(sym) {
			continue
		}
		res = append(res, ProfileLine{Percent: v, Symbol: sym})
		if len(res) == top {
			break
		}
	}
	return res
}

func skipInclusive(sym string) bool {
	if strings.HasSuffix(sym, "-fm") { // the method value twin of the line above it
		return true
	}
	for _, p := range []string{"runtime.goexit", "runtime.mstart", "runtime.systemstack", "entry_SYSCALL", "do_syscall_64", "runtime.mcall", "[unknown]"} {
		if strings.HasPrefix(sym, p) {
			return true
		}
	}
	return false
}
