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

	kafkago "github.com/segmentio/kafka-go"
)

type sinkKind int

const (
	sinkFile sinkKind = iota
	sinkKafka
	sinkFileSealed // the file sink with seal_state (docs/sealing.md)
)

// fanauditConfig writes a config that keeps every default but the watched
// path and the sink, so the figures are those of the default config.
func fanauditConfig(path, dir, out, topic, spool string, kind sinkKind, unlimited bool, brokers string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "paths = [%s]\n", strconv.Quote(dir))
	if unlimited {
		// The drain hook reads the whole queue as a shutdown drain, which
		// shutdown_timeout bounds.
		b.WriteString("shutdown_timeout = \"300s\"\n")
	}
	if unlimited {
		b.WriteString("\n[capture]\nunlimited_queue = true\n")
	}
	// A JSON log keeps stderr parseable; the level stays at its default.
	b.WriteString("\n[logging]\nformat = \"json\"\n")
	switch kind {
	case sinkFile, sinkFileSealed:
		seal := ""
		if kind == sinkFileSealed {
			seal = "seal_state = " + strconv.Quote(sealState(path)) + "\n"
		}
		// Size rotation off: a run writes about a GiB, and the default
		// rotation (100 MB, 5 backups) would delete records before they
		// are counted.
		fmt.Fprintf(&b, "\n[[sinks]]\nname = \"bench\"\ntype = \"file\"\n%s[sinks.file]\npath = %s\nmax_size_mb = 0\n", seal, strconv.Quote(out))
	case sinkKafka:
		var bs []string
		for br := range strings.SplitSeq(brokers, ",") {
			if br = strings.TrimSpace(br); br != "" {
				bs = append(bs, strconv.Quote(br))
			}
		}
		// A spool of its own per run: the default one (under /var/lib)
		// outlives the run and would replay this run's leftovers into the
		// next run's figures. It stays on disk, like the default.
		fmt.Fprintf(&b, "\n[[sinks]]\nname = \"bench\"\ntype = \"kafka\"\n[sinks.kafka]\nbrokers = [%s]\ntopic = %s\n[sinks.kafka.spool]\ndir = %s\n",
			strings.Join(bs, ", "), strconv.Quote(topic), strconv.Quote(spool))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("fanaudit config: %w", err)
	}
	return nil
}

// sealState is where a sealed run keeps its seal state: beside the
// work directory's files, in a directory that is root's own (safefile
// refuses a world-writable one such as the output tmpfs's root).
func sealState(cfg string) string {
	return filepath.Join(filepath.Dir(filepath.Dir(cfg)), "seal-"+filepath.Base(cfg)+".state")
}

func fanauditLive(kind sinkKind) func(ctx context.Context, e *env, dir, tag string) (Sample, error) {
	return func(ctx context.Context, e *env, dir, tag string) (Sample, error) {
		return fanauditLiveRun(ctx, e, dir, tag, kind, nil, e.wl)
	}
}

func fanauditLiveRun(ctx context.Context, e *env, dir, tag string, kind sinkKind, extraEnv []string, wload workload) (Sample, error) {
	cfg := filepath.Join(e.outMnt, tag+".toml")
	out := filepath.Join(e.outMnt, tag+".jsonl")
	topic := "fabench-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + tag
	spool := filepath.Join(e.o.WorkDir, "spool-"+tag)
	defer os.RemoveAll(spool)
	if err := fanauditConfig(cfg, dir, out, topic, spool, kind, false, e.o.KafkaBrokers); err != nil {
		return Sample{}, err
	}
	if kind == sinkKafka {
		if err := createTopic(ctx, e.o.KafkaBrokers, topic); err != nil {
			return Sample{}, err
		}
	}
	if kind == sinkFileSealed {
		state := sealState(cfg)
		os.Remove(state)
		if out, err := exec.CommandContext(ctx, e.o.Fanaudit, "seal-keygen", "--state", state).CombinedOutput(); err != nil {
			return Sample{}, fmt.Errorf("seal-keygen: %v: %s", err, out)
		}
		defer os.Remove(state)
	}
	m, err := startMonitor(e.outMnt, tag, "", extraEnv, e.o.Fanaudit, "run", "--config", cfg)
	if err != nil {
		return Sample{}, err
	}
	defer m.kill()
	if err := m.waitMarked(ctx, readyTimeout, settle); err != nil {
		return Sample{}, err
	}
	wl, err := wload(ctx, dir)
	if err != nil {
		return Sample{}, err
	}
	end := time.Now()
	s := Sample{WL: wl}
	// The tail ends with the last record delivered, not with the exit, so
	// a slow shutdown does not count as catching up.
	var last time.Time
	if kind != sinkKafka {
		last, _, err = m.waitQuiet(ctx, out, quietFor, stopTimeout)
	} else {
		// The Kafka sink spools and may exit with records still in its
		// spool, so wait for the topic itself to stop growing.
		last, err = waitTopicQuiet(ctx, m, e.o.KafkaBrokers, topic, quietFor, stopTimeout)
	}
	if err != nil {
		return s, err
	}
	s.Tail = max(0, last.Sub(end).Seconds())
	// By contract SIGTERM drains the kernel queue and flushes the sinks.
	if s.Warn, err = m.stop(syscall.SIGTERM, stopTimeout); err != nil {
		return s, err
	}
	s.CPU, s.MaxRSSKiB = m.usage()
	switch kind {
	case sinkFile, sinkFileSealed:
		f, err := os.Open(out)
		if err != nil {
			return s, fmt.Errorf("fanaudit output: %w", err)
		}
		defer f.Close()
		s.Counts, err = ParseFanaudit(f, "")
		return s, err
	default:
		s.Counts, err = consumeKafka(ctx, e, topic, tag)
		return s, err
	}
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
// it has not moved for quiet, and returns when it last moved.
func waitTopicQuiet(ctx context.Context, m *monitor, brokers, topic string, quiet, timeout time.Duration) (time.Time, error) {
	broker, _, _ := strings.Cut(brokers, ",")
	conn, err := kafkago.DialLeader(ctx, "tcp", broker, topic, 0)
	if err != nil {
		return time.Time{}, fmt.Errorf("dial %s: %w", topic, err)
	}
	defer conn.Close()
	deadline := time.Now().Add(timeout)
	var off int64 = -1
	last := time.Now()
	for {
		o, err := conn.ReadLastOffset()
		if err != nil {
			return last, fmt.Errorf("end offset of %s: %w", topic, err)
		}
		now := time.Now()
		if o != off {
			off, last = o, now
		}
		if off > 0 && now.Sub(last) >= quiet {
			return last, nil
		}
		select {
		case <-m.done:
			return last, fmt.Errorf("fanaudit exited while delivering: %v: %s", m.waitErr, m.tail())
		case <-ctx.Done():
			return last, ctx.Err()
		default:
		}
		if now.After(deadline) {
			return last, fmt.Errorf("topic %s still growing after %v", topic, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// consumeKafka reads the run's topic back to the end with kcat and counts
// it like the file sink's output.
func consumeKafka(ctx context.Context, e *env, topic, tag string) (Counts, error) {
	if e.o.KcatPath == "" {
		return newCounts(), fmt.Errorf("no kcat to read topic %s back", topic)
	}
	out := filepath.Join(e.outMnt, tag+".kafka.jsonl")
	f, err := os.Create(out)
	if err != nil {
		return newCounts(), fmt.Errorf("kafka dump: %w", err)
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
		return newCounts(), fmt.Errorf("kcat: %w: %s", err, se.String())
	}
	if _, err := f.Seek(0, 0); err != nil {
		return newCounts(), fmt.Errorf("kafka dump: %w", err)
	}
	return ParseFanaudit(f, "")
}

func fanauditDrain(ctx context.Context, e *env, dir, tag string) (Sample, error) {
	cfg := filepath.Join(e.outMnt, tag+".toml")
	out := filepath.Join(e.outMnt, tag+".jsonl")
	if err := fanauditConfig(cfg, dir, out, "", "", sinkFile, true, ""); err != nil {
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
