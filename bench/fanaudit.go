package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

type sinkKind int

const (
	sinkFile       sinkKind = iota
	sinkKafka               // the Kafka sink, read back with kcat
	sinkFileSealed          // the file sink with seal_state (docs/sealing.md)
	sinkWatch               // fanaudit watch, no config, stdout to a file
)

// faConfig is what a benchmark config sets; every other key keeps its
// default, so the figures are those of the default config.
type faConfig struct {
	paths     []string
	out       string // file sink path
	kind      sinkKind
	unlimited bool
	// stateDir is a fresh state_dir per run: the default one is shared
	// with every other agent on the machine, and a run marker left there
	// by a killed agent would turn into an agent_restart record here.
	stateDir  string
	sealState string // sinkFileSealed
	topic     string // sinkKafka
	spool     string
	brokers   string
	scope     string // [capture] scope; empty: the default
}

func (c faConfig) write(path string) error {
	var b strings.Builder
	var ps []string
	for _, p := range c.paths {
		ps = append(ps, strconv.Quote(p))
	}
	fmt.Fprintf(&b, "paths = [%s]\n", strings.Join(ps, ", "))
	if c.stateDir != "" {
		fmt.Fprintf(&b, "state_dir = %s\n", strconv.Quote(c.stateDir))
	}
	if c.unlimited {
		// The drain hook reads the whole queue as a shutdown drain, which
		// shutdown_timeout bounds.
		b.WriteString("shutdown_timeout = \"300s\"\n")
	}
	if c.unlimited || c.scope != "" {
		b.WriteString("\n[capture]\n")
		if c.unlimited {
			b.WriteString("unlimited_queue = true\n")
		}
		if c.scope != "" {
			fmt.Fprintf(&b, "scope = %s\n", strconv.Quote(c.scope))
		}
	}
	// A JSON log keeps stderr parseable; the level stays at its default.
	b.WriteString("\n[logging]\nformat = \"json\"\n")
	switch c.kind {
	case sinkFile, sinkFileSealed:
		seal := ""
		if c.kind == sinkFileSealed {
			seal = "seal_state = " + strconv.Quote(c.sealState) + "\n"
		}
		// Size rotation off: a run writes about a GiB, and the default
		// rotation (100 MB, 5 backups) would delete records before they
		// are counted.
		fmt.Fprintf(&b, "\n[[sinks]]\nname = \"bench\"\ntype = \"file\"\n%s[sinks.file]\npath = %s\nmax_size_mb = 0\n", seal, strconv.Quote(c.out))
	case sinkKafka:
		var bs []string
		for br := range strings.SplitSeq(c.brokers, ",") {
			if br = strings.TrimSpace(br); br != "" {
				bs = append(bs, strconv.Quote(br))
			}
		}
		// A spool of its own per run: the default one (under state_dir)
		// outlives the run and would replay this run's leftovers into the
		// next run's figures. It stays on disk, like the default.
		fmt.Fprintf(&b, "\n[[sinks]]\nname = \"bench\"\ntype = \"kafka\"\n[sinks.kafka]\nbrokers = [%s]\ntopic = %s\n[sinks.kafka.spool]\ndir = %s\n",
			strings.Join(bs, ", "), strconv.Quote(c.topic), strconv.Quote(c.spool))
	default:
		return fmt.Errorf("fanaudit config: no config for sink kind %d", c.kind)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("fanaudit config: %w", err)
	}
	return nil
}

// privateDir makes a fresh root-only directory in the work directory (not
// on the output tmpfs, which the harness empties between runs): the agent
// refuses state and seal files in directories others can write.
func (e *env) privateDir(name string) (string, error) {
	d := filepath.Join(e.o.WorkDir, name)
	if err := os.RemoveAll(d); err != nil {
		return "", fmt.Errorf("private dir: %w", err)
	}
	if err := os.Mkdir(d, 0o700); err != nil {
		return "", fmt.Errorf("private dir: %w", err)
	}
	return d, nil
}

// probeSealing says whether the agent has `seal-keygen`, and if not why
// the sealed configuration is left out.
func probeSealing(ctx context.Context, e *env) (ok bool, na string) {
	d, err := e.privateDir("seal-probe")
	if err != nil {
		return false, err.Error()
	}
	defer os.RemoveAll(d)
	out, err := exec.CommandContext(ctx, e.o.Fanaudit, "seal-keygen", "--state", filepath.Join(d, "probe.state")).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 2 && strings.Contains(string(out), "unknown command") {
		return false, "n/a: sealing not on main (fanaudit has no seal-keygen command)"
	}
	// Any other failure shows up in the sealed configuration's own runs.
	return true, ""
}

func fanauditLive(kind sinkKind) func(ctx context.Context, e *env, dir, tag string) (Sample, error) {
	return func(ctx context.Context, e *env, dir, tag string) (Sample, error) {
		return fanauditLiveRun(ctx, e, dir, tag, kind, e.wl)
	}
}

func fanauditLiveRun(ctx context.Context, e *env, dir, tag string, kind sinkKind, wload workload) (Sample, error) {
	s, _, err := fanauditLiveWith(ctx, e, dir, tag, kind, func(ctx context.Context, _ *monitor, _ string) (WLResult, error) {
		return wload(ctx, dir)
	})
	return s, err
}

// fanauditLiveWith starts the agent watching watched with a sink of kind,
// runs wload once it has marked, waits for the last record and stops it.
// It returns the sample (counted over the whole output) and the output
// file (a file sink's file, watch's stdout, or the Kafka topic's dump).
func fanauditLiveWith(ctx context.Context, e *env, watched, tag string, kind sinkKind, wload func(ctx context.Context, m *monitor, out string) (WLResult, error)) (Sample, string, error) {
	return fanauditLiveScope(ctx, e, watched, tag, kind, "", wload)
}

// fanauditLiveScope is fanauditLiveWith with [capture] scope set (empty:
// the default).
func fanauditLiveScope(ctx context.Context, e *env, watched, tag string, kind sinkKind, scope string, wload func(ctx context.Context, m *monitor, out string) (WLResult, error)) (Sample, string, error) {
	cfg := filepath.Join(e.outMnt, tag+".toml")
	out := filepath.Join(e.outMnt, tag+".jsonl")
	topic := "fabench-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + tag
	argv := []string{e.o.Fanaudit, "run", "--config", cfg}
	if kind == sinkWatch {
		argv = []string{e.o.Fanaudit, "watch", watched}
	} else {
		state, err := e.privateDir("state-" + tag)
		if err != nil {
			return Sample{}, "", err
		}
		defer os.RemoveAll(state)
		c := faConfig{paths: []string{watched}, out: out, kind: kind, stateDir: state,
			topic: topic, spool: filepath.Join(state, "spool"), brokers: e.o.KafkaBrokers, scope: scope}
		if kind == sinkFileSealed {
			sd, err := e.privateDir("seal-" + tag)
			if err != nil {
				return Sample{}, "", err
			}
			defer os.RemoveAll(sd)
			c.sealState = filepath.Join(sd, "seal.state")
			if b, err := exec.CommandContext(ctx, e.o.Fanaudit, "seal-keygen", "--state", c.sealState).CombinedOutput(); err != nil {
				return Sample{}, "", fmt.Errorf("seal-keygen: %w: %s", err, b)
			}
		}
		if err := c.write(cfg); err != nil {
			return Sample{}, "", err
		}
	}
	if kind == sinkKafka {
		if err := createTopic(ctx, e.o.KafkaBrokers, topic); err != nil {
			return Sample{}, "", err
		}
	}
	m, err := startMonitor(e.outMnt, tag, "", nil, argv...)
	if err != nil {
		return Sample{}, "", err
	}
	defer m.kill()
	if kind == sinkWatch {
		out = m.stdout
	}
	if err := m.waitMarked(ctx, readyTimeout, settle); err != nil {
		return Sample{}, "", err
	}
	// The agent's CPU is counted from the workload's start to its last
	// record: start-up and the idle wait for quiet are not the workload's.
	// (Idle, the agent still follows every exec on the machine through the
	// proc connector and its exec marks; on a busy machine that shows.)
	cpu0, err := procCPU(m.pid())
	if err != nil {
		return Sample{}, "", err
	}
	wl, err := wload(ctx, m, out)
	if err != nil {
		return Sample{}, "", err
	}
	end := time.Now()
	s := Sample{WL: wl}
	// The tail ends with the last record delivered, not with the exit, so
	// a slow shutdown does not count as catching up.
	var last time.Time
	var cpuLast float64
	if kind != sinkKafka {
		last, cpuLast, err = m.waitQuiet(ctx, out, quietFor, stopTimeout)
	} else {
		// The Kafka sink spools and may exit with records still in its
		// spool, so wait for the topic itself to stop growing.
		last, cpuLast, err = waitTopicQuiet(ctx, m, e.o.KafkaBrokers, topic, quietFor, stopTimeout)
	}
	if err != nil {
		return s, "", err
	}
	s.Tail = max(0, last.Sub(end).Seconds())
	// By contract SIGTERM drains the kernel queue and flushes the sinks.
	if s.Warn, err = m.stop(syscall.SIGTERM, stopTimeout); err != nil {
		return s, "", err
	}
	s.CPUTotal, s.MaxRSSKiB = m.usage()
	s.CPU = cpuLast - cpu0
	if b, err := os.ReadFile(m.stderr); err == nil {
		s.KernelEvents, _ = FanauditKernelEvents(b)
	}
	if kind == sinkKafka {
		if out, err = dumpKafka(ctx, e, topic, tag); err != nil {
			return s, "", err
		}
	}
	f, err := os.Open(out)
	if err != nil {
		return s, "", fmt.Errorf("fanaudit output: %w", err)
	}
	defer f.Close()
	s.Counts, err = ParseFanaudit(f, "")
	return s, out, err
}

// createTopic makes the run's topic up front: the sink does not rely on
// broker-side auto-creation, and neither do production deployments.
func createTopic(ctx context.Context, brokers, topic string) error {
	broker, _, _ := strings.Cut(brokers, ",")
	c := &kafkago.Client{Addr: kafkago.TCP(broker), Timeout: 30 * time.Second}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := c.CreateTopics(cctx, &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{{Topic: topic, NumPartitions: 1, ReplicationFactor: 1}}})
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	if err := res.Errors[topic]; err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return nil
}

// waitTopicQuiet polls the end offset of the topic's only partition until
// it has not moved for quiet, and returns when it last moved and the CPU
// time the monitor had used by then.
func waitTopicQuiet(ctx context.Context, m *monitor, brokers, topic string, quiet, timeout time.Duration) (time.Time, float64, error) {
	broker, _, _ := strings.Cut(brokers, ",")
	conn, err := kafkago.DialLeader(ctx, "tcp", broker, topic, 0)
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("dial %s: %w", topic, err)
	}
	defer conn.Close()
	deadline := time.Now().Add(timeout)
	var off int64 = -1
	last := time.Now()
	var cpuLast float64
	for {
		o, err := conn.ReadLastOffset()
		if err != nil {
			return last, cpuLast, fmt.Errorf("end offset of %s: %w", topic, err)
		}
		now := time.Now()
		if o != off {
			off, last = o, now
			if cpuLast, err = procCPU(m.pid()); err != nil {
				return last, cpuLast, err
			}
		}
		if off > 0 && now.Sub(last) >= quiet {
			return last, cpuLast, nil
		}
		select {
		case <-m.done:
			return last, cpuLast, fmt.Errorf("fanaudit exited while delivering: %w: %s", m.waitErr, m.tail())
		case <-ctx.Done():
			return last, cpuLast, ctx.Err()
		default:
		}
		if now.After(deadline) {
			return last, cpuLast, fmt.Errorf("topic %s still growing after %v", topic, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dumpKafka reads the run's topic back to the end with kcat into a file
// of one record per line, like the file sink's.
func dumpKafka(ctx context.Context, e *env, topic, tag string) (string, error) {
	if e.o.KcatPath == "" {
		return "", fmt.Errorf("no kcat to read topic %s back", topic)
	}
	out := filepath.Join(e.outMnt, tag+".kafka.jsonl")
	f, err := os.Create(out)
	if err != nil {
		return "", fmt.Errorf("kafka dump: %w", err)
	}
	defer f.Close()
	broker, _, _ := strings.Cut(e.o.KafkaBrokers, ",")
	cctx, cancel := context.WithTimeout(ctx, stopTimeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, e.o.KcatPath, "-C", "-b", broker, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%s\n")
	cmd.Stdout = f
	var se strings.Builder
	cmd.Stderr = &se
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("kcat: %w: %s", err, se.String())
	}
	return out, nil
}

func fanauditDrain(ctx context.Context, e *env, dir, tag string) (Sample, error) {
	cfg := filepath.Join(e.outMnt, tag+".toml")
	out := filepath.Join(e.outMnt, tag+".jsonl")
	state, err := e.privateDir("state-" + tag)
	if err != nil {
		return Sample{}, err
	}
	defer os.RemoveAll(state)
	if err := (faConfig{paths: []string{dir}, out: out, kind: sinkFile, unlimited: true, stateDir: state}).write(cfg); err != nil {
		return Sample{}, err
	}
	var env []string
	if e.o.FanauditDrainHook {
		env = append(env, "FANAUDIT_BENCH_DRAIN=1")
	}
	m, err := startMonitor(e.outMnt, tag, "", env, e.o.Fanaudit, "run", "--config", cfg)
	if err != nil {
		return Sample{}, err
	}
	defer m.kill()
	var s Sample
	if e.o.FanauditDrainHook {
		s, err = signalDrain(ctx, m, e, dir)
	} else {
		s, err = stopContDrain(ctx, m, e, dir, syscall.SIGTERM, out)
	}
	if err != nil {
		return s, err
	}
	if b, err := os.ReadFile(m.stderr); err == nil {
		s.KernelEvents, _ = FanauditKernelEvents(b)
	}
	f, err := os.Open(out)
	if err != nil {
		return s, fmt.Errorf("fanaudit output: %w", err)
	}
	defer f.Close()
	s.Counts, err = ParseFanaudit(f, "")
	return s, err
}

// signalDrain drives a monitor with a fanread -D style drain mode: it
// waits for SIGUSR1 after marking, then exits once the queue is empty.
func signalDrain(ctx context.Context, m *monitor, e *env, dir string) (Sample, error) {
	if err := m.waitMarked(ctx, readyTimeout, settle); err != nil {
		return Sample{}, err
	}
	wl, err := e.wl(ctx, dir)
	if err != nil {
		return Sample{}, err
	}
	cpu0, err := procCPU(m.pid())
	if err != nil {
		return Sample{}, err
	}
	start := time.Now()
	s := Sample{WL: wl}
	if s.Warn, err = m.stop(syscall.SIGUSR1, stopTimeout); err != nil {
		return s, err
	}
	s.DrainS = m.exited.Sub(start).Seconds()
	s.CPU, s.MaxRSSKiB = m.usage()
	s.DrainCPU = s.CPU - cpu0
	return s, nil
}
