package config

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/fanaudit/fanaudit/internal/record"
)

// Error is a config error: it names the file, the key and, where the key
// appears in the file, its line. Its message is always one line, because
// the CLI prints it as the single stderr line of exit status 2.
type Error struct {
	File string
	Line int    // 0 when the key is not in the file (a default)
	Key  string // dotted, sinks as sinks[i]
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString("config ")
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":")
			b.WriteString(strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString("key ")
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(oneLine(e.Msg))
	return b.String()
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// Load reads and parses the config file at name.
func Load(name string) (*Config, error) {
	src, err := os.ReadFile(name)
	if err != nil {
		return nil, &Error{File: name, Msg: errors.Unwrap(err).Error() + " (reading the file)"}
	}
	return Parse(name, src)
}

// LoadDefault implements `run`'s config lookup: the explicit file when one
// is given, else DefaultPath when it exists, else the embedded default.
// It returns the config and where it came from.
func LoadDefault(explicit string) (*Config, string, error) {
	if explicit != "" {
		c, err := Load(explicit)
		return c, explicit, err
	}
	if _, err := os.Stat(DefaultPath); err == nil {
		c, err := Load(DefaultPath)
		return c, DefaultPath, err
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, DefaultPath, &Error{File: DefaultPath, Msg: err.Error()}
	}
	c, err := Parse(EmbeddedName, embedded)
	return c, EmbeddedName, err
}

// decodeConfig decodes sinks as primitives: each one needs its type's
// defaults filled in before its keys are decoded over them, and a TOML
// array of tables would otherwise start every element from zero.
type decodeConfig struct {
	Config
	Sinks []toml.Primitive `toml:"sinks"`
}

var tomlErrRE = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

// Parse decodes src over the defaults, rejects keys the Config does not
// have, and validates the result. name is used in error messages.
func Parse(name string, src []byte) (*Config, error) {
	lines := scanKeyLines(src)
	dc := decodeConfig{Config: Default()}
	dc.Config.Sinks = nil
	md, err := toml.NewDecoder(strings.NewReader(string(src))).Decode(&dc)
	if err != nil {
		return nil, tomlError(name, err)
	}
	cfg := dc.Config
	cfg.Sinks = make([]Sink, 0, len(dc.Sinks))
	for i, p := range dc.Sinks {
		var head struct {
			Type string `toml:"type"`
		}
		if err := md.PrimitiveDecode(p, &head); err != nil {
			return nil, tomlError(name, err)
		}
		s := DefaultSink("", head.Type)
		if err := md.PrimitiveDecode(p, &s); err != nil {
			// toml's key positions don't tell array elements apart, so
			// resolve the key within this element.
			e := tomlError(name, err)
			if ce := (*Error)(nil); errors.As(e, &ce) {
				k := fmt.Sprintf("sinks.%d", i)
				if rest, ok := strings.CutPrefix(ce.Key, "sinks."); ok {
					k += "." + rest
				}
				ce.Key = displayKey(k)
				ce.Line = lines.line(k)
			}
			return nil, e
		}
		if _, set := lines.exact[fmt.Sprintf("sinks.%d.kafka.when_full", i)]; s.Kafka != nil && !set {
			// One when_full per sink: the spool follows the queue's policy
			// unless [sinks.kafka] sets its own.
			s.Kafka.WhenFull = s.WhenFull.String()
		}
		if _, set := lines.exact[fmt.Sprintf("sinks.%d.kafka.spool.dir", i)]; s.Kafka != nil && !set {
			// Without a spool, records that were not acked when the agent
			// stops are lost; "" stays available to turn it off.
			s.Kafka.Spool.Dir = filepath.Join(DefaultSpoolRoot, s.Name)
		}
		cfg.Sinks = append(cfg.Sinks, s)
	}
	if len(dc.Sinks) == 0 {
		cfg.Sinks = Default().Sinks
	}
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0].String()
		line := lines.lineAny(k)
		if ik := lines.indexed(k, line); ik != "" {
			k = ik
		}
		return nil, &Error{File: name, Line: line, Key: displayKey(k), Msg: "unknown key"}
	}
	if err := cfg.validate(); err != nil {
		var ve *Error
		if errors.As(err, &ve) {
			ve.File = name
			ve.Line = lines.line(ve.Key)
			ve.Key = displayKey(ve.Key)
		}
		return nil, err
	}
	cfg.lines = lines
	return &cfg, nil
}

func tomlError(name string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return &Error{File: name, Line: pe.Position.Line, Key: pe.LastKey, Msg: pe.Message}
	}
	if m := tomlErrRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: name, Line: line, Key: m[2], Msg: m[3]}
	}
	return &Error{File: name, Msg: strings.TrimPrefix(err.Error(), "toml: ")}
}

// displayKey turns the internal "sinks.1.when_full" into "sinks[1].when_full".
func displayKey(k string) string {
	parts := strings.Split(k, ".")
	var b strings.Builder
	for i, p := range parts {
		if _, err := strconv.Atoi(p); err == nil && i > 0 {
			b.WriteString("[" + p + "]")
			continue
		}
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(p)
	}
	return b.String()
}

func bad(key, format string, a ...any) error {
	return &Error{Key: key, Msg: fmt.Sprintf(format, a...)}
}

var sinkNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// Validate checks a Config built in code (the watch command's). Its errors
// name the key but no file or line.
func (c *Config) Validate() error {
	err := c.validate()
	var ve *Error
	if errors.As(err, &ve) {
		ve.Key = displayKey(ve.Key)
	}
	return err
}

// validate checks every value; keys are internal dotted keys ("sinks.0.x")
// that Parse resolves to lines.
func (c *Config) validate() error {
	if len(c.Paths) == 0 {
		return bad("paths", "must list at least one directory to watch")
	}
	for _, p := range c.Paths {
		if !filepath.IsAbs(p) {
			return bad("paths", "%q is not an absolute path", p)
		}
	}
	for _, g := range [...]struct {
		key   string
		globs []string
	}{{"include", c.Include}, {"exclude", c.Exclude}} {
		for _, p := range g.globs {
			if err := checkGlob(p); err != nil {
				return bad(g.key, "%v", err)
			}
		}
	}
	for _, e := range c.Events {
		if a, ok := record.ParseAction(e); !ok || a == record.ActionEventsLost {
			return bad("events", "unknown event action %q (want %s)", e, actionList())
		}
	}
	if c.MemoryLimitMB < 0 {
		return bad("memory_limit_mb", "must be 0 (no limit) or a size in MiB, e.g. 64")
	}
	if c.ShutdownTimeout <= 0 {
		return bad("shutdown_timeout", "must be positive, e.g. \"10s\"")
	}
	if c.StatsInterval < 0 {
		return bad("stats_interval", "must not be negative (0 turns the stats line off)")
	}
	if c.Capture.ReadBuffer < 4096 || c.Capture.ReadBuffer > 64<<20 {
		return bad("capture.read_buffer", "%d out of range (4096 to 67108864 bytes)", c.Capture.ReadBuffer)
	}
	if c.Capture.BatchDelay < 0 {
		return bad("capture.batch_delay", "must not be negative")
	}
	switch c.Capture.Scope {
	case "auto", "subtree", "filesystem":
	default:
		return bad("capture.scope", "%q is not one of auto, subtree, filesystem", c.Capture.Scope)
	}
	if c.Capture.SubtreeMaxDirs < 1 {
		return bad("capture.subtree_max_dirs", "must be at least 1")
	}
	if c.Pipeline.CaptureChannel < 1 {
		return bad("pipeline.capture_channel", "must be at least 1")
	}
	if c.Pipeline.EnrichChannel < 1 {
		return bad("pipeline.enrich_channel", "must be at least 1")
	}
	if err := c.Enrich.validate(); err != nil {
		return err
	}
	if c.Metrics.Listen == "" || !strings.Contains(c.Metrics.Listen, ":") {
		return bad("metrics.listen", "%q is not a host:port address", c.Metrics.Listen)
	}
	if c.Health.SinkFailingAfter <= 0 {
		return bad("health.sink_failing_after", "must be positive")
	}
	switch c.Logging.Level {
	case "trace", "debug", "info", "warn", "error":
	default:
		return bad("logging.level", "unknown level %q (want trace, debug, info, warn or error)", c.Logging.Level)
	}
	switch c.Logging.Format {
	case "json", "console", "auto":
	default:
		return bad("logging.format", "unknown format %q (want json, console or auto)", c.Logging.Format)
	}
	return c.validateSinks()
}

func (e *Enrich) validate() error {
	if !filepath.IsAbs(e.ProcRoot) {
		return bad("enrich.proc_root", "%q is not an absolute path", e.ProcRoot)
	}
	if e.CacheSize < 1 {
		return bad("enrich.cache_size", "must be at least 1")
	}
	if e.CacheTTL <= 0 {
		return bad("enrich.cache_ttl", "must be positive")
	}
	if e.CmdlineMax < 1 || e.CmdlineMax > 1<<20 {
		return bad("enrich.cmdline_max", "%d out of range (1 to 1048576)", e.CmdlineMax)
	}
	if e.Hash.MaxSize < 1 {
		return bad("enrich.hash.max_size", "must be positive")
	}
	if e.Hash.BytesPerSecond < 1 {
		return bad("enrich.hash.bytes_per_second", "must be positive")
	}
	if e.Hash.Workers < 1 || e.Hash.Workers > 64 {
		return bad("enrich.hash.workers", "%d out of range (1 to 64)", e.Hash.Workers)
	}
	return nil
}

func (c *Config) validateSinks() error {
	if len(c.Sinks) == 0 {
		return bad("sinks", "must configure at least one sink")
	}
	names := map[string]bool{}
	stdout := 0
	for i := range c.Sinks {
		s := &c.Sinks[i]
		k := func(f string) string {
			if f == "" {
				return fmt.Sprintf("sinks.%d", i)
			}
			return fmt.Sprintf("sinks.%d.%s", i, f)
		}
		if !sinkNameRE.MatchString(s.Name) {
			return bad(k("name"), "%q is not a valid sink name (1-64 of A-Z a-z 0-9 _ . -)", s.Name)
		}
		if names[s.Name] {
			return bad(k("name"), "duplicate sink name %q", s.Name)
		}
		names[s.Name] = true
		if s.QueueSize < 1 || s.QueueSize > 1<<24 {
			return bad(k("queue_size"), "%d out of range (1 to 16777216)", s.QueueSize)
		}
		if s.File != nil && s.Type != SinkFile {
			return bad(k("file"), "[sinks.file] given for a sink of type %q", s.Type)
		}
		if s.Kafka != nil && s.Type != SinkKafka {
			return bad(k("kafka"), "[sinks.kafka] given for a sink of type %q", s.Type)
		}
		switch s.Type {
		case SinkStdout:
			stdout++
			if stdout > 1 {
				return bad(k("type"), "only one stdout sink is allowed")
			}
		case SinkFile:
			if err := s.File.Validate(); err != nil {
				return subKeyError(k("file"), err)
			}
		case SinkKafka:
			if err := s.Kafka.Validate(); err != nil {
				return subKeyError(k("kafka"), err)
			}
		default:
			return bad(k("type"), "unknown sink type %q (want stdout, file or kafka)", s.Type)
		}
	}
	return nil
}

// subKeyError maps a sink package's Validate error to a key: by convention
// the message starts with the offending key ("path: must be ..."), which
// then resolves to its line.
func subKeyError(prefix string, err error) error {
	msg := err.Error()
	if i := strings.Index(msg, ": "); i > 0 && !strings.ContainsAny(msg[:i], " \t") {
		return bad(prefix+"."+msg[:i], "%s", msg[i+2:])
	}
	return bad(prefix, "%s", msg)
}

func checkGlob(p string) error {
	if p == "" {
		return errors.New("empty glob")
	}
	if _, err := path.Match(p, ""); err != nil {
		return fmt.Errorf("bad glob %q: %w", p, err)
	}
	return nil
}

func actionList() string {
	var names []string
	for _, a := range record.FileActions() {
		names = append(names, a.String())
	}
	return strings.Join(names, ", ")
}

// OutputGlobs lists globs for the files the sinks derive from their
// outputs (rotated files), for the capture's Exclude.
func (c *Config) OutputGlobs() []string {
	var out []string
	for i := range c.Sinks {
		out = append(out, sinkOutputGlobs(&c.Sinks[i])...)
	}
	return out
}

// OutputPaths lists every file the configured sinks write, for the
// capture's IgnorePaths.
func (c *Config) OutputPaths() []string {
	var out []string
	for i := range c.Sinks {
		out = append(out, sinkOutputPaths(&c.Sinks[i])...)
	}
	return out
}
