// Package config owns the agent's TOML configuration: the Config type with
// a default for every key, the embedded default config, decoding that
// rejects unknown keys, validation errors that name the key and its line,
// and printing the effective config with secrets redacted.
package config

import (
	_ "embed"
	"time"

	"github.com/fanaudit/fanaudit/internal/record"
	"github.com/fanaudit/fanaudit/sinks"
)

// DefaultPath is where `fanaudit run` looks when --config is not given.
const DefaultPath = "/etc/fanaudit/config.toml"

// DefaultSpoolRoot holds one spool directory per Kafka sink, named after
// the sink, unless [sinks.kafka.spool] dir is set (to "" to turn it off).
const DefaultSpoolRoot = "/var/lib/fanaudit/spool"

// EmbeddedName names the built-in config in messages and the effective
// config's header.
const EmbeddedName = "(embedded default)"

//go:embed default.toml
var embedded []byte

// Embedded returns the built-in default config: watch /etc, JSON lines to
// stdout. `fanaudit run` uses it when --config is not given and DefaultPath
// does not exist, so a fresh machine runs the agent with no setup.
func Embedded() []byte { return append([]byte(nil), embedded...) }

// Sink types.
const (
	SinkStdout = "stdout"
	SinkFile   = "file"
	SinkKafka  = "kafka"
)

// Config is the whole agent configuration. Every key has a default (see
// Default); the TOML names are the contract of config.toml.example.
type Config struct {
	// Paths are the watched roots: absolute, recursive.
	Paths []string `toml:"paths"`
	// Include keeps only events whose file.path matches one of these globs;
	// empty keeps everything.
	Include []string `toml:"include"`
	// Exclude drops events whose file.path matches one of these globs.
	Exclude []string `toml:"exclude"`
	// Events lists the wanted event.action values; empty means all.
	Events []string `toml:"events"`
	// ShutdownTimeout bounds how long a stop waits for the sinks to flush.
	ShutdownTimeout time.Duration `toml:"shutdown_timeout"`
	// StatsInterval is the period of the stats log line; 0 turns it off.
	StatsInterval time.Duration `toml:"stats_interval"`
	// MemoryLimitMB is a soft limit on the agent's Go heap, in MiB: near
	// it the garbage collector runs more often. 0 leaves the runtime's
	// default (GOMEMLIMIT still applies).
	MemoryLimitMB int `toml:"memory_limit_mb"`

	Capture  Capture  `toml:"capture"`
	Pipeline Pipeline `toml:"pipeline"`
	Enrich   Enrich   `toml:"enrich"`
	Metrics  Metrics  `toml:"metrics"`
	Health   Health   `toml:"health"`
	Logging  Logging  `toml:"logging"`
	Sinks    []Sink   `toml:"sinks"`

	// lines locates keys in the file the config came from, for errors
	// found after loading (a watched path that does not exist).
	lines keyLines
}

// KeyError builds a config error for key (dotted, sinks as "sinks.0.x")
// with the key's line in the source file, for problems found after
// Parse, such as a watched path the capture cannot use.
func (c *Config) KeyError(source, key string, err error) *Error {
	return &Error{File: source, Line: c.lines.line(key), Key: displayKey(key), Msg: err.Error()}
}

// Capture tunes the fanotify reader.
type Capture struct {
	// UnlimitedQueue lifts the kernel's 16384-event queue limit. Off by
	// default: the kernel memory it may take is unbounded, and an overflow
	// is reported as an events_lost record rather than lost silently.
	UnlimitedQueue bool          `toml:"unlimited_queue"`
	ReadBuffer     int           `toml:"read_buffer"` // bytes per read(2)
	BatchDelay     time.Duration `toml:"batch_delay"` // sleep when the kernel queue is empty; 0 blocks in poll
	// ExecPaths are directories on the filesystems that hold executables
	// (e.g. "/usr"), marked for exec events alone so that enrichment
	// learns the executable of processes that exit before /proc can be
	// read. Nothing on them is reported. Empty by default.
	ExecPaths []string `toml:"exec_paths"`
	// Scope chooses the marks: "auto" (default), "subtree" (inode marks
	// on every directory under each path) or "filesystem" (one
	// filesystem mark, scope filtered in user space).
	Scope string `toml:"scope"`
	// SubtreeMaxDirs is how many directories auto marks one by one
	// before it takes a filesystem mark instead.
	SubtreeMaxDirs int `toml:"subtree_max_dirs"`
}

// Pipeline sizes the channels between the stages, counted in batches.
type Pipeline struct {
	CaptureChannel int `toml:"capture_channel"`
	EnrichChannel  int `toml:"enrich_channel"`
}

// Enrich configures the process, user and file enrichment.
type Enrich struct {
	ProcRoot   string        `toml:"proc_root"`
	EtcRoot    string        `toml:"etc_root"`    // passwd, group and machine-id (a container reads the node's)
	CacheSize  int           `toml:"cache_size"`  // pids kept in the process cache
	CacheTTL   time.Duration `toml:"cache_ttl"`   // how long a cached process is trusted before /proc is read again
	CmdlineMax int           `toml:"cmdline_max"` // bytes of process.command_line
	FileStat   bool          `toml:"file_stat"`   // fstat the file for inode, mode, size, uid, gid
	PidFD      bool          `toml:"pidfd"`       // ask the kernel for pidfds, to tell reused pids apart
	// ProcConnector follows forks, execs and uid changes over netlink
	// (needs CAP_NET_ADMIN), so short-lived processes keep their uid.
	ProcConnector bool `toml:"proc_connector"`
	Hash          Hash `toml:"hash"`
}

// Hash configures SHA-256 hashing of files on close_write.
type Hash struct {
	Enabled        bool  `toml:"enabled"`
	MaxSize        int64 `toml:"max_size"`         // bytes; larger files get fanaudit.hash.status
	BytesPerSecond int64 `toml:"bytes_per_second"` // read budget across workers
	Workers        int   `toml:"workers"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Enabled bool   `toml:"enabled"`
	Listen  string `toml:"listen"`
}

// Health configures /healthz.
type Health struct {
	// SinkFailingAfter is how long a sink may go without delivering, while
	// it has something to deliver, before /healthz reports unhealthy.
	SinkFailingAfter time.Duration `toml:"sink_failing_after"`
}

// Logging configures the agent's own log on stderr.
type Logging struct {
	Level  string `toml:"level"`  // trace, debug, info, warn, error
	Format string `toml:"format"` // json, console, or auto (console on a TTY)
}

// Sink is one `[[sinks]]` entry. Exactly the sub-table matching Type is
// used; the other must be absent.
type Sink struct {
	Name      string       `toml:"name"`
	Type      string       `toml:"type"`
	WhenFull  sinks.Policy `toml:"when_full"`
	QueueSize int          `toml:"queue_size"`

	File  *FileOptions  `toml:"file,omitempty"`
	Kafka *KafkaOptions `toml:"kafka,omitempty"`
}

// Default returns the configuration used for every key a file leaves out.
func Default() Config {
	return Config{
		Paths:           []string{"/etc"},
		Include:         []string{},
		Exclude:         []string{},
		Events:          []string{},
		ShutdownTimeout: 10 * time.Second,
		StatsInterval:   60 * time.Second,
		Capture: Capture{
			ReadBuffer:     256 << 10,
			Scope:          "auto",
			SubtreeMaxDirs: 8192,
		},
		Pipeline: Pipeline{CaptureChannel: 1, EnrichChannel: 1},
		Enrich: Enrich{
			ProcRoot:      "/proc",
			EtcRoot:       "/etc",
			ProcConnector: true,
			CacheSize:     16384,
			CacheTTL:      time.Second,
			CmdlineMax:    4096,
			FileStat:      false,
			PidFD:         false,
			Hash: Hash{
				MaxSize:        64 << 20,
				BytesPerSecond: 64 << 20,
				Workers:        2,
			},
		},
		Metrics: Metrics{Listen: "127.0.0.1:9464"},
		Health:  Health{SinkFailingAfter: 60 * time.Second},
		Logging: Logging{Level: "info", Format: "auto"},
		Sinks:   []Sink{DefaultSink("stdout", SinkStdout)},
	}
}

// DefaultSink returns a sink entry of the given type with every default
// filled in, including its type-specific options.
func DefaultSink(name, typ string) Sink {
	s := Sink{Name: name, Type: typ, WhenFull: sinks.Block, QueueSize: 8192}
	switch typ {
	case SinkFile:
		s.File = defaultFileOptions()
	case SinkKafka:
		s.Kafka = defaultKafkaOptions()
	}
	return s
}

// Actions returns Events as record actions. Validate has checked them.
func (c *Config) Actions() []record.Action {
	out := make([]record.Action, 0, len(c.Events))
	for _, e := range c.Events {
		if a, ok := record.ParseAction(e); ok {
			out = append(out, a)
		}
	}
	return out
}
