package config

import (
	"errors"
	"fmt"
	"net"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// The event.action values a config may filter on (events_lost records
// are always produced). The record package owns the actions; a test
// there keeps this list equal to its own.
var fileActions = []string{
	"create", "open", "exec", "access", "modify", "attrib", "close_write",
	"close_nowrite", "rename", "move_self", "delete", "delete_self",
}

// Limits of sizes and counts: far below where a later conversion (MiB to
// bytes, a doubling, int32 in a kernel call) could overflow, far above
// anything useful.
const (
	maxMemoryLimitMB = 1 << 30 // MiB: 1 PiB
	maxChannel       = 1 << 16
	maxCount         = 1 << 24 // queue and cache entries
	maxSubtreeDirs   = 1 << 24
	maxBytes         = 1 << 50 // byte counts
	maxFileSizeMB    = 1 << 30
	maxBackups       = 1 << 20
	maxKafkaBatch    = 1 << 20
	maxMessageBytes  = 1 << 30
	minMessageBytes  = 1024
	maxSegmentBytes  = 1 << 40
)

// Validate checks a Config built in code (the watch command's). Its errors
// name the key but no file or line.
func (c *Config) Validate() error {
	err := c.validate()
	var ve *Error
	if errors.As(err, &ve) {
		ve.Line = c.lines.line(ve.Key)
		ve.Key = displayKey(ve.Key)
		if c.source != "" {
			ve.File = c.source
		}
	}
	return err
}

func bad(key, format string, a ...any) error {
	return &Error{Key: key, Msg: fmt.Sprintf(format, a...)}
}

var sinkNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// validate checks every value; keys are internal dotted keys ("sinks.0.x")
// that Parse resolves to lines.
func (c *Config) validate() error {
	if len(c.Paths) == 0 {
		return bad("paths", "must list at least one directory to watch")
	}
	if err := absPaths("paths", c.Paths); err != nil {
		return err
	}
	for _, g := range [...]struct {
		key   string
		globs []string
	}{{"include", c.Include}, {"exclude", c.Exclude}} {
		for i, p := range g.globs {
			if err := checkGlob(p); err != nil {
				return bad(g.key+"."+strconv.Itoa(i), "%v", err)
			}
		}
	}
	for i, e := range c.Events {
		if !isFileAction(e) {
			return bad("events."+strconv.Itoa(i), "unknown event action %q (want %s)", e, strings.Join(fileActions, ", "))
		}
	}
	if err := intRange("memory_limit_mb", c.MemoryLimitMB, 0, maxMemoryLimitMB); err != nil {
		return err
	}
	// 39 spans every nice value (19 to -20); more is surely a typo.
	if err := intRange("priority_boost", c.PriorityBoost, 0, 39); err != nil {
		return err
	}
	if c.ShutdownTimeout.Duration <= 0 {
		return bad("shutdown_timeout", "must be positive, e.g. \"10s\"")
	}
	if c.StatsInterval.Duration < 0 {
		return bad("stats_interval", "must not be negative (\"0s\" turns the stats line off)")
	}
	if err := absPath("state_dir", c.StateDir, true); err != nil {
		return err
	}
	if err := c.Capture.validate(); err != nil {
		return err
	}
	if err := intRange("pipeline.capture_channel", c.Pipeline.CaptureChannel, 1, maxChannel); err != nil {
		return err
	}
	if err := intRange("pipeline.enrich_channel", c.Pipeline.EnrichChannel, 1, maxChannel); err != nil {
		return err
	}
	if err := c.Enrich.validate(); err != nil {
		return err
	}
	if err := hostPort("metrics.listen", c.Metrics.Listen, false); err != nil {
		return err
	}
	if c.Health.SinkFailingAfter.Duration <= 0 {
		return bad("health.sink_failing_after", "must be positive")
	}
	if err := oneOf("logging.level", c.Logging.Level, "trace", "debug", "info", "warn", "error"); err != nil {
		return err
	}
	if err := oneOf("logging.format", c.Logging.Format, "json", "console", "auto"); err != nil {
		return err
	}
	if err := c.validateSinks(); err != nil {
		return err
	}
	return c.checkOutputs()
}

func (c *Capture) validate() error {
	if err := intRange("capture.read_buffer", c.ReadBuffer, 4096, 64<<20); err != nil {
		return err
	}
	if err := intRange("capture.read_ahead", c.ReadAhead, 0, 1<<30); err != nil {
		return err
	}
	if c.BatchDelay.Duration < 0 {
		return bad("capture.batch_delay", "must not be negative")
	}
	if err := absPaths("capture.exec_paths", c.ExecPaths); err != nil {
		return err
	}
	if err := oneOf("capture.scope", c.Scope, ScopeAuto, ScopeSubtree, ScopeFilesystem); err != nil {
		return err
	}
	if err := intRange("capture.out_of_scope_marks", c.OutOfScopeMarks, 0, maxSubtreeDirs); err != nil {
		return err
	}
	return intRange("capture.subtree_max_dirs", c.SubtreeMaxDirs, 1, maxSubtreeDirs)
}

func (e *Enrich) validate() error {
	if err := absPath("enrich.proc_root", e.ProcRoot, true); err != nil {
		return err
	}
	if err := absPath("enrich.etc_root", e.EtcRoot, true); err != nil {
		return err
	}
	if err := intRange("enrich.cache_size", e.CacheSize, 1, maxCount); err != nil {
		return err
	}
	if e.CacheTTL.Duration <= 0 {
		return bad("enrich.cache_ttl", "must be positive")
	}
	if err := intRange("enrich.cmdline_max", e.CmdlineMax, 1, 1<<20); err != nil {
		return err
	}
	if err := int64Range("enrich.hash.max_size", e.Hash.MaxSize, 1, maxBytes); err != nil {
		return err
	}
	if err := int64Range("enrich.hash.bytes_per_second", e.Hash.BytesPerSecond, 1, maxBytes); err != nil {
		return err
	}
	return intRange("enrich.hash.workers", e.Hash.Workers, 1, 64)
}

func (c *Config) validateSinks() error {
	if len(c.Sinks) == 0 {
		return bad("sinks", "must configure at least one sink")
	}
	names := map[string]bool{}
	stdout := 0
	for i := range c.Sinks {
		s := &c.Sinks[i]
		k := sinkKey(i)
		if !sinkNameRE.MatchString(s.Name) {
			return bad(k("name"), "%q is not a valid sink name (1-64 of A-Z a-z 0-9 _ . -)", s.Name)
		}
		if names[s.Name] {
			return bad(k("name"), "duplicate sink name %q", s.Name)
		}
		names[s.Name] = true
		if err := oneOf(k("when_full"), s.WhenFull, "block", "drop_newest", "drop_oldest"); err != nil {
			return err
		}
		if err := intRange(k("queue_size"), s.QueueSize, 1, maxCount); err != nil {
			return err
		}
		if err := oneOf(k("format"), s.Format, FormatECS, FormatOCSF); err != nil {
			return err
		}
		if s.SealState != "" {
			if err := absPath(k("seal_state"), s.SealState, false); err != nil {
				return err
			}
		}
		if s.SealInterval.Duration <= 0 {
			return bad(k("seal_interval"), "must be positive, e.g. \"10s\"")
		}
		if s.File != nil && s.Type != SinkFile {
			return bad(k("file"), "a file table is given for a sink of type %q", s.Type)
		}
		if s.Kafka != nil && s.Type != SinkKafka {
			return bad(k("kafka"), "a kafka table is given for a sink of type %q", s.Type)
		}
		switch s.Type {
		case SinkStdout:
			stdout++
			if stdout > 1 {
				return bad(k("type"), "only one stdout sink is allowed")
			}
		case SinkFile:
			if err := s.File.validate(k); err != nil {
				return err
			}
		case SinkKafka:
			if err := s.Kafka.validate(k); err != nil {
				return err
			}
		default:
			return bad(k("type"), "unknown sink type %q (want stdout, file or kafka)", s.Type)
		}
	}
	return nil
}

// sinkKey returns a function naming keys of sink i.
func sinkKey(i int) func(string) string {
	return func(f string) string {
		if f == "" {
			return "sinks." + strconv.Itoa(i)
		}
		return "sinks." + strconv.Itoa(i) + "." + f
	}
}

func (f *FileSink) validate(k func(string) string) error {
	if err := absPath(k("file.path"), f.Path, false); err != nil {
		return err
	}
	if strings.HasSuffix(f.Path, "/") || filepath.Base(f.Path) == "." || filepath.Base(f.Path) == ".." {
		return bad(k("file.path"), "must name a file, got %q", f.Path)
	}
	if err := intRange(k("file.max_size_mb"), f.MaxSizeMB, 0, maxFileSizeMB); err != nil {
		return err
	}
	if f.MaxAge.Duration < 0 {
		return bad(k("file.max_age"), "must not be negative (\"0s\" turns age rotation off)")
	}
	if err := intRange(k("file.max_backups"), f.MaxBackups, 0, maxBackups); err != nil {
		return err
	}
	return fsync(k("file.fsync"), k("file.fsync_interval"), f.Fsync, f.FsyncInterval)
}

func fsync(key, intervalKey, mode string, interval Duration) error {
	if err := oneOf(key, mode, "never", "interval", "always"); err != nil {
		return err
	}
	if mode == "interval" && interval.Duration <= 0 {
		return bad(intervalKey, "must be positive when fsync = \"interval\"")
	}
	return nil
}

func (ks *KafkaSink) validate(k func(string) string) error {
	if len(ks.Brokers) == 0 {
		return bad(k("kafka.brokers"), "at least one broker address (host:port) is required")
	}
	for i, b := range ks.Brokers {
		if err := hostPort(k("kafka.brokers."+strconv.Itoa(i)), b, true); err != nil {
			return err
		}
	}
	if ks.Topic == "" {
		return bad(k("kafka.topic"), "required")
	}
	if err := oneOf(k("kafka.key"), ks.Key, "host_id", "path", "none"); err != nil {
		return err
	}
	if err := oneOf(k("kafka.required_acks"), ks.RequiredAcks, "all", "one", "none"); err != nil {
		return err
	}
	if ks.RequiredAcks != "all" && !ks.AllowLossy {
		return bad(k("kafka.required_acks"), "%q can lose acknowledged events; set allow_lossy = true to accept that", ks.RequiredAcks)
	}
	if err := oneOf(k("kafka.compression"), ks.Compression, "zstd", "lz4", "snappy", "gzip", "none"); err != nil {
		return err
	}
	if err := intRange(k("kafka.batch_size"), ks.BatchSize, 1, maxKafkaBatch); err != nil {
		return err
	}
	if err := int64Range(k("kafka.max_message_bytes"), ks.MaxMessageBytes, minMessageBytes, maxMessageBytes); err != nil {
		return err
	}
	if err := int64Range(k("kafka.batch_bytes"), ks.BatchBytes, ks.MaxMessageBytes, maxMessageBytes); err != nil {
		return bad(k("kafka.batch_bytes"), "must be at least max_message_bytes (%d) and at most %d, got %d", ks.MaxMessageBytes, maxMessageBytes, ks.BatchBytes)
	}
	if err := int64Range(k("kafka.max_in_flight_bytes"), ks.MaxInFlightBytes, ks.BatchBytes, maxBytes); err != nil {
		return bad(k("kafka.max_in_flight_bytes"), "must be at least batch_bytes (%d) and at most %d, got %d", ks.BatchBytes, int64(maxBytes), ks.MaxInFlightBytes)
	}
	if ks.BatchTimeout.Duration <= 0 {
		return bad(k("kafka.batch_timeout"), "must be positive")
	}
	if ks.WriteTimeout.Duration <= 0 {
		return bad(k("kafka.write_timeout"), "must be positive")
	}
	if err := oneOf(k("kafka.when_full"), ks.WhenFull, "block", "drop_newest", "drop_oldest"); err != nil {
		return err
	}
	if ks.DeadLetterFile != "" {
		if err := absPath(k("kafka.dead_letter_file"), ks.DeadLetterFile, false); err != nil {
			return err
		}
	}
	if err := ks.TLS.validate(k); err != nil {
		return err
	}
	if err := ks.SASL.validate(k); err != nil {
		return err
	}
	return ks.Spool.validate(k)
}

func (t *KafkaTLS) validate(k func(string) string) error {
	files := []struct{ key, path string }{{"ca_file", t.CAFile}, {"cert_file", t.CertFile}, {"key_file", t.KeyFile}}
	for _, f := range files {
		if f.path == "" {
			continue
		}
		if !t.Enabled {
			return bad(k("kafka.tls."+f.key), "is set but tls.enabled is false")
		}
		if err := absPath(k("kafka.tls."+f.key), f.path, false); err != nil {
			return err
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return bad(k("kafka.tls.cert_file"), "cert_file and key_file must be set together")
	}
	return nil
}

func (s *KafkaSASL) validate(k func(string) string) error {
	if s.Mechanism == "" {
		if s.Username != "" || s.PasswordFile != "" || s.PasswordEnv != "" {
			return bad(k("kafka.sasl.mechanism"), "must be set when sasl.username or a password is")
		}
		return nil
	}
	if err := oneOf(k("kafka.sasl.mechanism"), s.Mechanism, "plain", "scram-sha-256", "scram-sha-512"); err != nil {
		return err
	}
	if s.Username == "" {
		return bad(k("kafka.sasl.username"), "required with sasl.mechanism")
	}
	if (s.PasswordFile == "") == (s.PasswordEnv == "") {
		return bad(k("kafka.sasl.password_file"), "set exactly one of password_file and password_env")
	}
	if s.PasswordFile != "" {
		return absPath(k("kafka.sasl.password_file"), s.PasswordFile, false)
	}
	return nil
}

func (s *Spool) validate(k func(string) string) error {
	if s.Dir == "" {
		return nil
	}
	if err := absPath(k("kafka.spool.dir"), s.Dir, true); err != nil {
		return err
	}
	if err := int64Range(k("kafka.spool.segment_bytes"), s.SegmentBytes, 1, maxSegmentBytes); err != nil {
		return err
	}
	if err := int64Range(k("kafka.spool.max_bytes"), s.MaxBytes, 2*s.SegmentBytes, maxBytes); err != nil {
		return bad(k("kafka.spool.max_bytes"), "must be at least two segments (%d) and at most %d, got %d", 2*s.SegmentBytes, int64(maxBytes), s.MaxBytes)
	}
	return fsync(k("kafka.spool.fsync"), k("kafka.spool.fsync_interval"), s.Fsync, s.FsyncInterval)
}

func intRange(key string, v, lo, hi int) error {
	if v < lo || v > hi {
		return bad(key, "%d out of range (%d to %d)", v, lo, hi)
	}
	return nil
}

func int64Range(key string, v, lo, hi int64) error {
	if v < lo || v > hi {
		return bad(key, "%d out of range (%d to %d)", v, lo, hi)
	}
	return nil
}

func oneOf(key, v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	quoted := make([]string, len(allowed))
	for i, a := range allowed {
		quoted[i] = strconv.Quote(a)
	}
	return bad(key, "%q is not one of %s", v, strings.Join(quoted, ", "))
}

// absPath requires an absolute path. A relative one would depend on the
// agent's working directory, which differs between a shell and systemd.
func absPath(key, p string, dir bool) error {
	what := "a file"
	if dir {
		what = "a directory"
	}
	switch {
	case p == "":
		return bad(key, "must name %s", what)
	case !filepath.IsAbs(p):
		return bad(key, "%q is not an absolute path", p)
	case strings.ContainsRune(p, 0):
		return bad(key, "%q holds a NUL byte", p)
	}
	return nil
}

func absPaths(key string, ps []string) error {
	for i, p := range ps {
		if err := absPath(key+"."+strconv.Itoa(i), p, true); err != nil {
			return err
		}
	}
	return nil
}

// hostPort checks a host:port address with a numeric port. needHost
// requires the host (a broker); a listen address may leave it out.
func hostPort(key, addr string, needHost bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return bad(key, "%q is not a host:port address", addr)
	}
	if needHost && host == "" {
		return bad(key, "%q has no host", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || (needHost && n == 0) {
		return bad(key, "%q: port %q is not a number from 1 to 65535", addr, port)
	}
	return nil
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

func isFileAction(a string) bool {
	for _, x := range fileActions {
		if a == x {
			return true
		}
	}
	return false
}

// output is a file or directory the agent writes, and the key naming it.
type output struct {
	key  string
	path string
	dir  bool
}

// Outputs lists every file and directory the configured sinks write,
// with the internal key that names each.
func (c *Config) outputs() []output {
	var out []output
	for i := range c.Sinks {
		s := &c.Sinks[i]
		k := sinkKey(i)
		if s.File != nil && s.Type == SinkFile {
			out = append(out, output{k("file.path"), s.File.Path, false})
		}
		if s.Kafka != nil && s.Type == SinkKafka {
			if s.Kafka.Spool.Dir != "" {
				out = append(out, output{k("kafka.spool.dir"), s.Kafka.Spool.Dir, true})
			}
			if s.Kafka.DeadLetterFile != "" {
				out = append(out, output{k("kafka.dead_letter_file"), s.Kafka.DeadLetterFile, false})
			}
		}
		if s.SealState != "" {
			out = append(out, output{k("seal_state"), s.SealState, false})
		}
	}
	return out
}

// checkOutputs refuses two writers on one file or directory, and a file
// one sink writes inside a directory another owns (a spool): they would
// clobber each other's data.
func (c *Config) checkOutputs() error {
	outs := c.outputs()
	for i, a := range outs {
		pa := filepath.Clean(a.path)
		for _, b := range outs[:i] {
			pb := filepath.Clean(b.path)
			switch {
			case pa == pb:
				return bad(a.key, "%q is also %s", a.path, displayKey(b.key))
			case b.dir && within(pa, pb):
				return bad(a.key, "%q is inside %s (%q)", a.path, displayKey(b.key), b.path)
			case a.dir && within(pb, pa):
				return bad(a.key, "%q holds %s (%q)", a.path, displayKey(b.key), b.path)
			}
		}
	}
	return nil
}

func within(p, dir string) bool {
	return strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// OutputPaths lists every file and directory the configured sinks write,
// for the capture's IgnorePaths: the agent never audits its own output.
func (c *Config) OutputPaths() []string {
	var out []string
	for _, o := range c.outputs() {
		out = append(out, o.path)
	}
	return out
}
