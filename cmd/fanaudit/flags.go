package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/fanaudit/fanaudit/internal/record"
)

// newFlagSet returns a flag set that reports errors to its caller instead
// of printing usage, so that a bad flag makes exactly one stderr line.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses flags that may come before, between or after the
// positional arguments, as users expect from `watch /tmp --duration 5s`.
func parseFlags(cmd string, fs *flag.FlagSet, args []string) ([]string, error) {
	bad := watchValues(fs)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, errHelp
			}
			return nil, usagef("%s: %s", cmd, flagProblem(fs, args, bad))
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > 0 && len(rest) < len(args) && args[len(args)-len(rest)-1] == "--" {
			// Everything after "--" is positional.
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// badValue records the flag value that failed to parse.
type badValue struct {
	flag, value string
	err         error
}

// checkedValue wraps a flag's Value so that a value it rejects is
// recorded, typed, instead of read back from the flag package's message.
type checkedValue struct {
	flag.Value
	name string
	bad  *badValue
}

func (v checkedValue) Set(s string) error {
	err := v.Value.Set(s)
	if err != nil && v.bad.flag == "" {
		*v.bad = badValue{flag: v.name, value: s, err: err}
	}
	return err
}

// IsBoolFlag keeps `--flag` without a value working for bool flags.
func (v checkedValue) IsBoolFlag() bool {
	b, ok := v.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

func watchValues(fs *flag.FlagSet) *badValue {
	bad := &badValue{}
	fs.VisitAll(func(f *flag.Flag) { f.Value = checkedValue{Value: f.Value, name: f.Name, bad: bad} })
	return bad
}

// flagProblem says, naming the flag with the contract's double dash,
// why fs.Parse(args) failed: a value the flag rejected (recorded by its
// checkedValue), else the first flag that is unknown or lacks its value,
// found by walking args the way the flag package does.
func flagProblem(fs *flag.FlagSet, args []string, bad *badValue) string {
	if bad.flag != "" {
		return fmt.Sprintf("--%s: invalid value %q: %v", bad.flag, bad.value, bad.err)
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || len(a) < 2 || a[0] != '-' {
			break
		}
		name, _, hasValue := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		f := fs.Lookup(name)
		if f == nil {
			return fmt.Sprintf("unknown flag --%s", name)
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); hasValue || ok && b.IsBoolFlag() {
			continue
		}
		if i+1 == len(args) {
			return fmt.Sprintf("flag needs an argument: --%s", name)
		}
		i++
	}
	return "bad flags"
}

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// parseEvents turns --events LIST into actions.
func parseEvents(list string) ([]string, error) {
	if strings.TrimSpace(list) == "" {
		return nil, usagef("watch: --events: empty list")
	}
	var out []string
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		a, ok := record.ParseAction(name)
		if !ok || a == record.ActionEventsLost {
			var names []string
			for _, a := range record.FileActions() {
				names = append(names, a.String())
			}
			return nil, usagef("watch: --events: unknown event action %q (want %s)", name, strings.Join(names, ", "))
		}
		out = append(out, name)
	}
	return out, nil
}

func checkExcludes(globs []string) error {
	for _, g := range globs {
		if g == "" {
			return usagef("watch: --exclude: empty glob")
		}
		if _, err := path.Match(g, ""); err != nil {
			return usagef("watch: --exclude: bad glob %q: %v", g, err)
		}
	}
	return nil
}

func absPaths(paths []string) ([]string, error) {
	if len(paths) == 0 {
		return nil, usagef("watch: missing PATH (usage: fanaudit watch [--events LIST] [--exclude GLOB]... [--duration D] PATH...)")
	}
	out := make([]string, 0, len(paths))
	for _, p := range paths {
		a, err := filepath.Abs(p)
		if err != nil {
			return nil, usagef("watch: PATH %q: %v", p, err)
		}
		out = append(out, a)
	}
	return out, nil
}

func checkDuration(d time.Duration) error {
	if d < 0 {
		return usagef("watch: --duration: must not be negative, got %s", d)
	}
	return nil
}
