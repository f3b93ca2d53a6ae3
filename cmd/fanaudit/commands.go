package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/internal/config"
)

// configError marks config errors (exit 2); config.Error already names
// the file, key and line.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

func wrapConfig(err error) error {
	if err == nil {
		return nil
	}
	return &configError{err: err}
}

func cmdWatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("watch")
	events := fs.String("events", "", "comma-separated event.action values")
	var excludes listFlag
	fs.Var(&excludes, "exclude", "glob of paths to leave out (repeatable)")
	duration := fs.Duration("duration", 0, "stop after this long")
	pos, err := parseFlags("watch", fs, args)
	if err != nil {
		return err
	}
	cfg := config.Default()
	if cfg.Paths, err = absPaths(pos); err != nil {
		return err
	}
	for _, p := range cfg.Paths {
		if _, err := os.Stat(p); err != nil {
			return usagef("watch: PATH %q: %v", p, errors.Unwrap(err))
		}
	}
	if flagGiven(fs, "events") {
		if cfg.Events, err = parseEvents(*events); err != nil {
			return err
		}
	}
	if err := checkExcludes(excludes); err != nil {
		return err
	}
	cfg.Exclude = excludes
	if err := checkDuration(*duration); err != nil {
		return err
	}
	cfg.Sinks = []config.Sink{config.DefaultSink("stdout", config.SinkStdout)}
	// watch is interactive: the stats line every minute would be noise.
	cfg.StatsInterval = 0
	if err := cfg.Validate(); err != nil {
		return usagef("watch: %v", err)
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	log := newLogger(stderr, cfg.Logging)
	return runAgent(ctx, &cfg, log, stdout, "watch")
}

func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			given = true
		}
	})
	return given
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("run")
	file := fs.String("config", "", "config file (default "+config.DefaultPath+", else the embedded default)")
	pos, err := parseFlags("run", fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("run: unexpected argument %q", pos[0])
	}
	if flagGiven(fs, "config") && *file == "" {
		return usagef("run: --config: empty file name")
	}
	cfg, source, err := config.LoadDefault(*file)
	if err != nil {
		return wrapConfig(err)
	}
	// Nothing is logged before the stages are set up, so that a config
	// problem found there still makes exactly one stderr line.
	return runAgent(ctx, cfg, newLogger(stderr, cfg.Logging), stdout, source)
}

func cmdCheckConfig(args []string, stdout io.Writer) error {
	fs := newFlagSet("check-config")
	file := fs.String("config", "", "config file")
	pos, err := parseFlags("check-config", fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("check-config: unexpected argument %q", pos[0])
	}
	if flagGiven(fs, "config") && *file == "" {
		return usagef("check-config: --config: empty file name")
	}
	cfg, source, err := config.LoadDefault(*file)
	if err != nil {
		return wrapConfig(err)
	}
	// No check that the watched paths exist: a config is often checked
	// on another machine than the one it runs on (a ConfigMap, a build).
	return cfg.WriteTOML(stdout, source)
}

// newLogger builds the agent's own log on stderr: JSON, or a console
// format on a terminal (format auto) or on request.
func newLogger(w io.Writer, lc config.Logging) zerolog.Logger {
	console := lc.Format == "console"
	if lc.Format == "auto" {
		if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			console = true
		}
	}
	if console {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	}
	level, err := zerolog.ParseLevel(lc.Level)
	if err != nil {
		level = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}
