package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fanaudit/fanaudit/internal/config"
	"github.com/fanaudit/fanaudit/internal/seal"
	"github.com/fanaudit/fanaudit/sinks"
	"github.com/fanaudit/fanaudit/sinks/kafka"
)

// exitCode ends a command with a code and nothing more on stderr: verify
// has already written its findings, one line each.
type exitCode int

func (e exitCode) Error() string { return "exit status " + strconv.Itoa(int(e)) }

// setSealer opens a sink's seal state (seal_state) and hands the sealer
// to the sink.
func setSealer(sink sinks.Sink, state string, interval time.Duration) error {
	if state == "" {
		return nil
	}
	x, ok := sink.(interface{ SetSealer(sinks.Sealer) })
	if !ok {
		return fmt.Errorf("this sink cannot seal (%T)", sink)
	}
	sl, err := seal.Open(state, interval)
	if err != nil {
		return err
	}
	x.SetSealer(sl)
	return nil
}

// sealStateFlag checks watch's --seal-state.
func sealStateFlag(fs *flag.FlagSet, v string) (string, error) {
	if !flagGiven(fs, "seal-state") {
		return "", nil
	}
	if v == "" {
		return "", usagef("watch: --seal-state: empty file name")
	}
	a, err := filepath.Abs(v)
	if err != nil {
		return "", usagef("watch: --seal-state: %v", err)
	}
	return a, nil
}

func cmdSealKeygen(args []string, stdout io.Writer) error {
	fs := newFlagSet("seal-keygen")
	state := fs.String("state", "", "state file to create")
	pos, err := parseFlags("seal-keygen", fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("seal-keygen: unexpected argument %q", pos[0])
	}
	if *state == "" {
		return usagef("seal-keygen: --state FILE is required")
	}
	k, err := seal.Keygen(*state)
	if err != nil {
		return err
	}
	// The only copy the host ever prints: the caller keeps it elsewhere.
	_, err = fmt.Fprintln(stdout, k.String())
	return err
}

func cmdVerify(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("verify")
	keyArg := fs.String("key", "", "verification key (hex), or @FILE to read it from FILE")
	kafka := fs.Bool("kafka", false, "FILEs are Kafka topic dumps (kcat -C -e): duplicates dropped, order restored by epoch and event.sequence")
	pruned := fs.Bool("allow-pruned", false, "accept a stream whose oldest files were pruned (it starts after the first seal)")
	topic := fs.String("topic", "", "read this Kafka topic directly from --brokers (instead of FILEs)")
	brokers := fs.String("brokers", "", "comma-separated Kafka brokers for --topic (plaintext)")
	cfgFile := fs.String("config", "", "with --sink: read that Kafka sink's topic directly, with its brokers, TLS and SASL settings")
	sinkName := fs.String("sink", "", "the Kafka sink in --config whose topic to read")
	pos, err := parseFlags("verify", fs, args)
	if err != nil {
		return err
	}
	if *keyArg == "" {
		return usagef("verify: --key KEY is required")
	}
	kc, direct, err := verifyTopicFlags(fs, *topic, *brokers, *cfgFile, *sinkName)
	if err != nil {
		return err
	}
	if direct && len(pos) > 0 {
		return usagef("verify: FILE %q given with a topic to read: check one or the other", pos[0])
	}
	if !direct && len(pos) == 0 {
		return usagef("verify: missing FILE (usage: fanaudit verify --key KEY FILE...)")
	}
	ks := *keyArg
	if name, ok := strings.CutPrefix(ks, "@"); ok {
		b, err := os.ReadFile(name)
		if err != nil {
			return usagef("verify: --key: %v", err)
		}
		ks = string(b)
	}
	k, err := seal.ParseKey(ks)
	if err != nil {
		return usagef("verify: --key: %v", err)
	}
	var files []string
	if *kafka || direct {
		files = pos
	} else if files, err = streamFiles(pos); err != nil {
		return usagef("verify: %v", err)
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			return usagef("verify: FILE %q: %v", f, errors.Unwrap(err))
		}
	}
	src := fileSource(files)
	switch {
	case direct:
		if src, err = topicSource(kc); err != nil {
			return err
		}
		files = []string{"topic " + kc.Topic}
	case *kafka:
		if src, err = kafkaSource(files); err != nil {
			return err
		}
	}
	rep, err := seal.VerifyReport(k, src, seal.VerifyOptions{AllowPruned: *pruned})
	if err != nil {
		return err
	}
	for _, f := range rep.Findings {
		fmt.Fprintln(stderr, oneLine(f.String()))
	}
	if len(rep.Findings) > 0 {
		return exitCode(exitRuntime)
	}
	// The last epoch and time are what an auditor compares with where the
	// stream should end: a stream cut back to an earlier clean stop is
	// otherwise intact.
	fmt.Fprintf(stdout, "intact: %d records under %d seals, epochs %d-%d, closed by a clean stop's seal at %s; files: %s\n",
		rep.Records, rep.Seals, rep.FirstEpoch, rep.LastEpoch, rep.LastTime.UTC().Format(time.RFC3339), strings.Join(files, ", "))
	return nil
}

// Rotated names: the file sink's NAME.20060102T150405.000000000Z[.gz],
// logrotate's NAME.N[.gz] (higher is older) and NAME-DATE[.gz] (dateext).
var (
	sinkRotated = regexp.MustCompile(`^\.(\d{8}T\d{6}\.\d{9}Z)(\.gz)?$`)
	numRotated  = regexp.MustCompile(`^\.(\d+)(\.gz)?$`)
	dateRotated = regexp.MustCompile(`^-(\d{8,14})(\.gz)?$`)
)

// rotatedRank orders a file of the stream based at base: older first.
// ok is false when name is not base or one of its rotated files.
func rotatedRank(base, name string) (rank []string, ok bool) {
	if name == base {
		return []string{"3"}, true
	}
	rest, found := strings.CutPrefix(name, base)
	if !found {
		return nil, false
	}
	if m := numRotated.FindStringSubmatch(rest); m != nil {
		n, _ := strconv.Atoi(m[1])
		return []string{"0", fmt.Sprintf("%020d", 1<<40-n)}, true
	}
	if m := dateRotated.FindStringSubmatch(rest); m != nil {
		return []string{"1", m[1]}, true
	}
	if m := sinkRotated.FindStringSubmatch(rest); m != nil {
		return []string{"2", m[1]}, true
	}
	return nil, false
}

// streamFiles expands each live file to its rotated files, oldest first,
// then itself. A rotated file named on its own is taken as it is; the
// files of one stream are ordered oldest first whatever the argument order.
func streamFiles(args []string) ([]string, error) {
	type entry struct {
		name string
		base string
		rank []string
	}
	var out []entry
	seen := map[string]bool{}
	add := func(name, base string, rank []string) {
		if !seen[name] {
			seen[name] = true
			out = append(out, entry{name, base, rank})
		}
	}
	for _, a := range args {
		dir, file := filepath.Split(a)
		ents, err := os.ReadDir(filepath.Clean(dir + "."))
		if err != nil {
			return nil, err
		}
		// Is a a rotated file of a sibling? Then it belongs to that stream.
		base, rank := a, []string{"3"}
		for _, e := range ents {
			if e.Name() != file && strings.HasPrefix(file, e.Name()) {
				if r, ok := rotatedRank(e.Name(), file); ok {
					base, rank = filepath.Join(dir, e.Name()), r
					break
				}
			}
		}
		add(a, base, rank)
		if base != a {
			continue
		}
		for _, e := range ents {
			if r, ok := rotatedRank(file, e.Name()); ok && e.Type().IsRegular() && e.Name() != file {
				add(filepath.Join(dir, e.Name()), a, r)
			}
		}
	}
	// Keep the streams in argument order; within one, oldest first.
	order := map[string]int{}
	for i, e := range out {
		if _, ok := order[e.base]; !ok {
			order[e.base] = i
		}
	}
	slices.SortStableFunc(out, func(x, y entry) int {
		if c := order[x.base] - order[y.base]; c != 0 {
			return c
		}
		return slices.Compare(x.rank, y.rank)
	})
	names := make([]string, 0, len(out))
	for _, e := range out {
		// A compression cut short leaves both X and X.gz, each whole
		// (X is removed after X.gz is in place): read one of them.
		if plain, ok := strings.CutSuffix(e.name, ".gz"); ok && seen[plain] {
			continue
		}
		names = append(names, e.name)
	}
	return names, nil
}

// fileSource reads files in order, gunzipping .gz ones.
func fileSource(files []string) seal.Source {
	return func(yield func(seal.Line) bool) error {
		for _, name := range files {
			stop, err := readLines(name, func(no int, line []byte) bool {
				return yield(seal.Line{Name: name, No: no, Data: line})
			})
			if err != nil {
				return err
			}
			if stop {
				return nil
			}
		}
		return nil
	}
}

// readLines calls fn for each line of name (without its '\n'); it
// reports whether fn stopped it.
func readLines(name string, fn func(no int, line []byte) bool) (bool, error) {
	f, err := os.Open(name)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(name, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return false, fmt.Errorf("%s: %w", name, err)
		}
		defer zr.Close()
		r = zr
	}
	br := bufio.NewReaderSize(r, 256<<10)
	for no := 1; ; no++ {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: gather it whole.
			long := bytes.Clone(line)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if len(line) > 0 {
			if !fn(no, bytes.TrimSuffix(line, []byte("\n"))) {
				return true, nil
			}
		}
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("%s: %w", name, err)
		}
	}
}

// verifyTopicFlags decides whether verify reads a topic directly: with
// --topic and --brokers (plaintext), or with --config and --sink (that
// Kafka sink's brokers, topic, TLS and SASL).
func verifyTopicFlags(fs *flag.FlagSet, topic, brokers, cfgFile, sinkName string) (kafka.Config, bool, error) {
	byFlags := flagGiven(fs, "topic") || flagGiven(fs, "brokers")
	byConfig := flagGiven(fs, "config") || flagGiven(fs, "sink")
	switch {
	case byFlags && byConfig:
		return kafka.Config{}, false, usagef("verify: --topic/--brokers and --config/--sink both given: use one pair")
	case byFlags:
		var bs []string
		for b := range strings.SplitSeq(brokers, ",") {
			if b = strings.TrimSpace(b); b != "" {
				bs = append(bs, b)
			}
		}
		if topic == "" || len(bs) == 0 {
			return kafka.Config{}, false, usagef("verify: --topic and --brokers go together, neither empty")
		}
		return kafka.Config{Brokers: bs, Topic: topic}, true, nil
	case byConfig:
		if cfgFile == "" || sinkName == "" {
			return kafka.Config{}, false, usagef("verify: --config and --sink go together, neither empty")
		}
		cfg, err := config.Load(cfgFile)
		if err != nil {
			return kafka.Config{}, false, wrapConfig(err)
		}
		for i := range cfg.Sinks {
			if s := &cfg.Sinks[i]; s.Name == sinkName {
				if s.Type != config.SinkKafka {
					return kafka.Config{}, false, usagef("verify: --sink %q is a %s sink: give its files instead", sinkName, s.Type)
				}
				return kafkaConfig(s.Kafka), true, nil
			}
		}
		return kafka.Config{}, false, usagef("verify: --sink: no sink named %q in %s", sinkName, cfgFile)
	}
	return kafka.Config{}, false, nil
}

// topicSource reads a Kafka topic directly (kafka.ReadTopic) and restores
// its sealed order as kafkaSource does for a dump. A line is named
// TOPIC[PARTITION] and numbered by its offset.
func topicSource(kc kafka.Config) (seal.Source, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var lines []seal.Line
	err := kafka.ReadTopic(ctx, kc, func(p int, off int64, v []byte) error {
		lines = append(lines, seal.Line{Name: kc.Topic + "[" + strconv.Itoa(p) + "]", No: int(off), Data: bytes.Clone(v)})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	return seal.SliceSource(seal.Reorder(lines)), nil
}

// kafkaSource reads topic dumps into memory and restores their sealed
// order (seal.Reorder).
func kafkaSource(files []string) (seal.Source, error) {
	var lines []seal.Line
	for _, name := range files {
		_, err := readLines(name, func(no int, line []byte) bool {
			lines = append(lines, seal.Line{Name: name, No: no, Data: bytes.Clone(line)})
			return true
		})
		if err != nil {
			return nil, err
		}
	}
	return seal.SliceSource(seal.Reorder(lines)), nil
}
