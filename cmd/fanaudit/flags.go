package main

import (
	"errors"
	"flag"
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
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, errHelp
			}
			return nil, usagef("%s: %s", cmd, flagErr(err))
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

// flagErr rewrites the flag package's messages to name the flag with the
// double dash the contract uses.
func flagErr(err error) string {
	msg := err.Error()
	msg = strings.Replace(msg, "flag provided but not defined: -", "unknown flag --", 1)
	if i := strings.Index(msg, " for flag -"); i >= 0 {
		// `invalid value "x" for flag -duration: parse error`
		msg = "--" + strings.TrimPrefix(msg[i:], " for flag -") + " (" + msg[:i] + ")"
	}
	msg = strings.Replace(msg, "flag needs an argument: -", "flag needs an argument: --", 1)
	return msg
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
