package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"sync"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/internal/config"
	"github.com/fanaudit/fanaudit/internal/record"
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
	format := fs.String("format", "ecs", "record format: ecs (JSON, default), ocsf (JSON) or text (one line per event)")
	sealState := fs.String("seal-state", "", "seal the stream with this state (fanaudit seal-keygen)")
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
	if cfg.Sinks[0].SealState, err = sealStateFlag(fs, *sealState); err != nil {
		return err
	}
	// watch is interactive: the stats line every minute would be noise.
	cfg.StatsInterval = config.Duration{}
	if err := cfg.Validate(); err != nil {
		return usagef("watch: %v", err)
	}
	// Set after Validate: text is watch's own format, not a sink format
	// a config file may choose.
	if _, ok := record.ParseFormat(*format); !ok {
		return usagef("watch: --format: unknown format %q (want ecs, ocsf or text)", *format)
	}
	cfg.Sinks[0].Format = *format
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	return startAgent(ctx, &cfg, stdout, stderr, "watch")
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
	cfg, source, err := loadConfigFlag("run", "config file (default "+config.DefaultPath+", else the embedded default)", args)
	if err != nil {
		return err
	}
	if err := checkFiles(cfg, source); err != nil {
		return wrapConfig(err)
	}
	return startAgent(ctx, cfg, stdout, stderr, source)
}

// startAgent runs the agent with its log held back until the stages are
// set up: a config or usage error found during setup must be the only
// stderr line (the contract), so what setup logged before it is dropped;
// after any other outcome it is written out, in order.
func startAgent(ctx context.Context, cfg *config.Config, stdout, stderr io.Writer, source string) error {
	held := &heldWriter{w: stderr}
	err := runAgent(ctx, cfg, newLogger(held, cfg.Logging), stdout, source, held.release)
	var ue *usageError
	var ce *configError
	if errors.As(err, &ue) || errors.As(err, &ce) {
		held.discard()
	} else {
		held.release()
	}
	return err
}

// heldWriter buffers writes until release (then writes them and passes
// everything through) or discard (then drops them).
type heldWriter struct {
	mu   sync.Mutex
	w    io.Writer
	buf  bytes.Buffer
	open bool
}

func (h *heldWriter) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.open {
		return h.w.Write(p)
	}
	return h.buf.Write(p)
}

func (h *heldWriter) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.open {
		h.w.Write(h.buf.Bytes()) // best effort, like every log write
		h.buf.Reset()
		h.open = true
	}
}

func (h *heldWriter) discard() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf.Reset()
	h.open = true
}

func cmdCheckConfig(args []string, stdout io.Writer) error {
	cfg, source, err := loadConfigFlag("check-config", "config file", args)
	if err != nil {
		return err
	}
	// No check that the watched paths or the credential files exist
	// (run checks those): a config is often checked on another machine
	// than the one it runs on (a ConfigMap, a build).
	return cfg.WriteTOML(stdout, source)
}

// loadConfigFlag is the common part of run and check-config: it parses
// cmd's only flag, --config (described by help), loads the file it names
// (else the default) and checks the options the stages derive from it.
func loadConfigFlag(cmd, help string, args []string) (*config.Config, string, error) {
	fs := newFlagSet(cmd)
	file := fs.String("config", "", help)
	pos, err := parseFlags(cmd, fs, args)
	if err != nil {
		return nil, "", err
	}
	if len(pos) > 0 {
		return nil, "", usagef("%s: unexpected argument %q", cmd, pos[0])
	}
	if flagGiven(fs, "config") && *file == "" {
		return nil, "", usagef("%s: --config: empty file name", cmd)
	}
	cfg, source, err := config.LoadDefault(*file)
	if err != nil {
		return nil, "", wrapConfig(err)
	}
	if err := checkOptions(cfg, source); err != nil {
		return nil, "", wrapConfig(err)
	}
	return cfg, source, nil
}

// newLogger builds the agent's own log on stderr: JSON, or a console
// format on a terminal (format auto) or on request.
// isTerminal reports whether w is a terminal (text records get colour).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isatty.IsTerminal(f.Fd())
}

func newLogger(w io.Writer, lc config.Logging) zerolog.Logger {
	console := lc.Format == "console"
	tty := w
	if h, ok := w.(*heldWriter); ok {
		tty = h.w
	}
	if lc.Format == "auto" {
		if f, ok := tty.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
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
