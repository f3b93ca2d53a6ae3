// Command fabench runs fanaudit's side-by-side benchmarks and writes the
// markdown results table; `make bench` runs it through bench/run.sh.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/fanaudit/fanaudit/bench"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "fabench:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		o        bench.Options
		out      string
		pkgs     string
		fanaudit string
		noFat    bool
	)
	flag.StringVar(&o.Repo, "repo", ".", "repository root")
	flag.StringVar(&o.Sticks, "sticks", "", "directory with wl.c and fanread.c (default REPO/../shared/bench)")
	flag.StringVar(&o.WorkDir, "work", "", "scratch directory (default REPO/bench/.work)")
	flag.IntVar(&o.N, "n", 200000, "files per workload run")
	flag.IntVar(&o.Block, "block", 4096, "bytes written per file")
	flag.IntVar(&o.Rounds, "rounds", 3, "interleaved rounds")
	flag.StringVar(&fanaudit, "fanaudit", "", "fanaudit binary (default: build ./cmd/fanaudit if it exists; \"none\" leaves it out)")
	flag.BoolVar(&o.FanauditDrainHook, "drain-hook", false, "fanaudit implements FANAUDIT_BENCH_DRAIN=1 (else SIGSTOP/SIGCONT)")
	flag.StringVar(&o.KafkaBrokers, "kafka", os.Getenv("FANAUDIT_KAFKA_BROKERS"), "brokers for the Kafka configuration (default $FANAUDIT_KAFKA_BROKERS; empty leaves it out)")
	flag.BoolVar(&noFat, "no-fatrace", false, "leave fatrace out")
	flag.BoolVar(&o.NoDrain, "no-drain", false, "skip the drain benchmark")
	flag.Float64Var(&o.PacedRate, "paced-rate", 200000, "records/s of the paced RSS run (0 skips it)")
	flag.DurationVar(&o.PacedFor, "paced-for", 5*time.Second, "length of the paced run")
	flag.IntVar(&o.MemTouchGiB, "memtouch", 3, "GiB of memory to touch once before timing")
	flag.StringVar(&pkgs, "gobench", "./internal/kernel,./enrich,./internal/record,./sinks,./internal/pipeline,./internal/seal", "comma-separated packages for go test -bench (empty skips)")
	flag.StringVar(&o.GoBenchTime, "benchtime", "1s", "go test -benchtime")
	flag.StringVar(&o.PerfDir, "perf-dir", "", "profile one extra fanaudit live and drain run with perf into this directory")
	flag.Func("only", "keep only the configurations whose name matches this regexp (e.g. '^fanaudit file sink' pairs the file sink with the sealed one)", func(v string) error {
		re, err := regexp.Compile(v)
		o.Only = re
		return err
	})
	flag.StringVar(&out, "o", "", "markdown output (default REPO/bench/RESULTS.md; - for stdout)")
	flag.Parse()

	repo, err := filepath.Abs(o.Repo)
	if err != nil {
		return fmt.Errorf("repo: %w", err)
	}
	o.Repo = repo
	if o.Sticks == "" {
		o.Sticks = filepath.Join(repo, "..", "shared", "bench")
	}
	if o.WorkDir == "" {
		o.WorkDir = filepath.Join(repo, "bench", ".work")
	}
	if out == "" {
		out = filepath.Join(repo, "bench", "RESULTS.md")
	}
	if pkgs != "" {
		o.GoBenchPkgs = strings.Split(pkgs, ",")
	}
	o.Log = os.Stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if !noFat {
		if o.Fatrace, err = bench.FindFatrace(ctx, true); err != nil {
			return err
		}
	}
	switch fanaudit {
	case "none":
	case "":
		dst := filepath.Join(o.WorkDir, "bin", "fanaudit")
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("bin dir: %w", err)
		}
		ok, err := bench.BuildFanaudit(ctx, repo, dst)
		if err != nil {
			return err
		}
		if ok {
			o.Fanaudit = dst
		} else {
			fmt.Fprintln(os.Stderr, "fabench: cmd/fanaudit has no Go files yet; fanaudit configurations left out")
		}
	default:
		o.Fanaudit = fanaudit
	}
	if o.KafkaBrokers != "" {
		if o.KcatPath, err = exec.LookPath("kcat"); err != nil {
			return errors.New("the Kafka configuration needs kcat to read the topic back")
		}
	}

	rep, err := bench.Run(ctx, o)
	if err != nil {
		return err
	}
	w := os.Stdout
	if out != "-" {
		f, err := os.Create(out)
		if err != nil {
			return fmt.Errorf("results: %w", err)
		}
		defer f.Close()
		w = f
	}
	if err := rep.Markdown(w); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	if out != "-" {
		fmt.Fprintln(os.Stderr, "fabench: wrote", out)
	}
	return nil
}
