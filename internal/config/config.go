// Package config owns the agent's TOML configuration as plain data: the
// Config type with a default for every key, the embedded default config,
// decoding in which the TOML decoder alone decides which keys were set
// (unknown keys are errors), validation errors that name the key and its
// line, and printing the effective config with secrets redacted.
//
// config imports no stage of the agent: cmd/fanaudit maps a Config to
// each stage's options.
package config

import (
	_ "embed"
	"time"
)

// DefaultPath is where `fanaudit run` looks when --config is not given.
const DefaultPath = "/etc/fanaudit/config.toml"

// DefaultStateDir is the default of state_dir.
const DefaultStateDir = "/var/lib/fanaudit"

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

// Record formats of a sink (the contract's `format` key).
const (
	FormatECS  = "ecs"
	FormatOCSF = "ocsf"
)

// Capture scopes (the contract's `[capture] scope` key).
const (
	ScopeAuto       = "auto"
	ScopeSubtree    = "subtree"
	ScopeFilesystem = "filesystem"
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
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
	// StatsInterval is the period of the stats log line; 0 turns it off.
	StatsInterval Duration `toml:"stats_interval"`
	// MemoryLimitMB is a soft limit on the agent's Go heap, in MiB: near
	// it the garbage collector runs more often. 0 leaves the runtime's
	// default (GOMEMLIMIT still applies).
	MemoryLimitMB int `toml:"memory_limit_mb"`
	// PriorityBoost lowers every agent thread's nice value by this much
	// at start, as auditd's priority_boost does, so that a burst that
	// fills the cores does not starve the capture until the kernel queue
	// overflows. 0 leaves the priority alone. Needs CAP_SYS_NICE (root
	// has it); without it the agent warns once and runs unboosted.
	PriorityBoost int `toml:"priority_boost"`
	// StateDir holds the agent's own state: the run marker and, unless a
	// Kafka sink sets spool.dir, the spools (StateDir/spool/<sink name>).
	StateDir string `toml:"state_dir"`

	Capture  Capture  `toml:"capture"`
	Pipeline Pipeline `toml:"pipeline"`
	Enrich   Enrich   `toml:"enrich"`
	Metrics  Metrics  `toml:"metrics"`
	Health   Health   `toml:"health"`
	Logging  Logging  `toml:"logging"`
	Sinks    []Sink   `toml:"sinks"`

	// lines locates keys in the file the config came from, for errors
	// found after loading (a watched path that does not exist).
	lines lineIndex
	// source names the file the config came from in those errors.
	source string
}

// DefaultReadAhead is [capture] read_ahead's default: 16 MiB of kernel
// events, about 200,000 of them (70-100 bytes each), twelve times what
// the kernel queues by default.
const DefaultReadAhead = 16 << 20

// Capture tunes the fanotify reader.
type Capture struct {
	// UnlimitedQueue lifts the kernel's 16384-event queue limit. Off by
	// default: the kernel memory it may take is unbounded, and an overflow
	// is reported as an events_lost record rather than lost silently.
	UnlimitedQueue bool `toml:"unlimited_queue"`
	ReadBuffer     int  `toml:"read_buffer"` // bytes per read(2)
	// ReadAhead bounds the bytes of kernel events read ahead into the
	// agent's memory while enrichment or the sinks are behind, so that a
	// burst waits there instead of overflowing the kernel's queue.
	ReadAhead  int      `toml:"read_ahead"`
	BatchDelay Duration `toml:"batch_delay"` // sleep when the kernel queue is empty; 0 blocks in poll
	// ExecPaths are directories on the filesystems that hold executables
	// (e.g. "/usr"), marked for exec events alone so that enrichment
	// learns the executable of processes that exit before /proc can be
	// read. Nothing on them is reported. Default: DefaultExecPaths();
	// an empty list turns the exec marks off.
	ExecPaths []string `toml:"exec_paths"`
	// Scope chooses the marks: "filesystem" (default: one filesystem
	// mark, scope filtered in user space), "subtree" (inode marks on
	// every directory under each path) or "auto" (subtree up to
	// SubtreeMaxDirs). Inode marks miss what happens in a new directory
	// before its mark is placed: announced (events_lost, unwatched_window)
	// except work that leaves the directory as it was within the clock tick
	// of its creation, which no trace shows, so they are opt-in.
	Scope string `toml:"scope"`
	// SubtreeMaxDirs is how many directories auto marks one by one
	// before it takes a filesystem mark instead.
	SubtreeMaxDirs int `toml:"subtree_max_dirs"`
	// OutOfScopeMarks bounds the in-kernel ignore marks that a filesystem
	// mark's out-of-scope directories get once their first event is
	// read, so that the kernel drops their files' events; 0 turns them
	// off.
	OutOfScopeMarks int `toml:"out_of_scope_marks"`
}

// Pipeline sizes the channels between the stages, counted in batches.
type Pipeline struct {
	CaptureChannel int `toml:"capture_channel"`
	// EnrichChannel is accepted (the contract lists it) and validated,
	// but unused: enrichment hands its batches to the fan-out in its own
	// goroutine.
	EnrichChannel int `toml:"enrich_channel"`
}

// Enrich configures the process, user and file enrichment.
type Enrich struct {
	ProcRoot   string   `toml:"proc_root"`
	EtcRoot    string   `toml:"etc_root"`    // passwd, group and machine-id (a container reads the node's)
	CacheSize  int      `toml:"cache_size"`  // pids kept in the process cache
	CacheTTL   Duration `toml:"cache_ttl"`   // how long a cached process is trusted before /proc is read again
	CmdlineMax int      `toml:"cmdline_max"` // bytes of process.command_line
	FileStat   bool     `toml:"file_stat"`   // fstat the file for inode, mode, size, uid, gid
	PidFD      bool     `toml:"pidfd"`       // ask the kernel for pidfds, to tell reused pids apart
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
	SinkFailingAfter Duration `toml:"sink_failing_after"`
}

// Logging configures the agent's own log on stderr.
type Logging struct {
	Level  string `toml:"level"`  // trace, debug, info, warn, error
	Format string `toml:"format"` // json, console, or auto (console on a TTY)
}

// Sink is one `[[sinks]]` entry. Exactly the sub-table matching Type is
// used; the other must be absent.
type Sink struct {
	Name string `toml:"name"`
	Type string `toml:"type"`
	// WhenFull is the queue policy: block, drop_newest or drop_oldest.
	WhenFull  string `toml:"when_full"`
	QueueSize int    `toml:"queue_size"`
	// Format is the record format the sink writes: ecs or ocsf.
	Format string `toml:"format"`
	// SealState is the sealing state file; "" leaves the stream unsealed.
	SealState string `toml:"seal_state"`
	// SealInterval is the period of seal records on a sealed stream.
	SealInterval Duration `toml:"seal_interval"`

	File  *FileSink  `toml:"file,omitempty"`
	Kafka *KafkaSink `toml:"kafka,omitempty"`
}

// FileSink is `[sinks.file]`: JSON lines appended to a file.
type FileSink struct {
	Path          string   `toml:"path"`
	FileMode      Mode     `toml:"file_mode"`
	DirMode       Mode     `toml:"dir_mode"`
	MaxSizeMB     int      `toml:"max_size_mb"` // 0 = no size rotation
	MaxAge        Duration `toml:"max_age"`     // 0 = no age rotation
	MaxBackups    int      `toml:"max_backups"` // 0 keeps all
	Compress      bool     `toml:"compress"`
	Fsync         string   `toml:"fsync"` // never, interval or always
	FsyncInterval Duration `toml:"fsync_interval"`
}

// KafkaSink is `[sinks.kafka]`.
type KafkaSink struct {
	Brokers          []string  `toml:"brokers"`
	Topic            string    `toml:"topic"`
	Key              string    `toml:"key"`           // host_id, path or none
	RequiredAcks     string    `toml:"required_acks"` // all, one or none
	AllowLossy       bool      `toml:"allow_lossy"`
	Compression      string    `toml:"compression"`
	BatchSize        int       `toml:"batch_size"`
	BatchBytes       int64     `toml:"batch_bytes"`
	BatchTimeout     Duration  `toml:"batch_timeout"`
	MaxInFlightBytes int64     `toml:"max_in_flight_bytes"`
	MaxMessageBytes  int64     `toml:"max_message_bytes"`
	WriteTimeout     Duration  `toml:"write_timeout"`
	ClientID         string    `toml:"client_id"`
	CreateTopics     bool      `toml:"create_topics"`
	DeadLetterFile   string    `toml:"dead_letter_file"`
	WhenFull         string    `toml:"when_full"` // spool policy; defaults to the sink's when_full
	TLS              KafkaTLS  `toml:"tls"`
	SASL             KafkaSASL `toml:"sasl"`
	Spool            Spool     `toml:"spool"`
}

// KafkaTLS is `[sinks.kafka.tls]`.
type KafkaTLS struct {
	Enabled            bool   `toml:"enabled"`
	CAFile             string `toml:"ca_file"`
	CertFile           string `toml:"cert_file"`
	KeyFile            string `toml:"key_file"`
	ServerName         string `toml:"server_name"`
	InsecureSkipVerify bool   `toml:"insecure_skip_verify"`
}

// KafkaSASL is `[sinks.kafka.sasl]`. The password comes from a file or
// an environment variable, never from the config file; see Password.
type KafkaSASL struct {
	Mechanism    string `toml:"mechanism"` // "", plain, scram-sha-256 or scram-sha-512
	Username     string `toml:"username"`
	PasswordFile string `toml:"password_file"`
	PasswordEnv  string `toml:"password_env"`
}

// Spool is `[sinks.kafka.spool]`; an empty Dir turns the spool off.
type Spool struct {
	Dir           string   `toml:"dir"`
	MaxBytes      int64    `toml:"max_bytes"`
	SegmentBytes  int64    `toml:"segment_bytes"`
	Fsync         string   `toml:"fsync"`
	FsyncInterval Duration `toml:"fsync_interval"`
}

// DefaultPriorityBoost leaves the agent's priority alone. auditd boosts by
// 4; measured side by side on 2 cores (docs/operations.md, "Scheduling
// priority"), a boost of 4 cost 13-30 % more agent CPU and a 15 % slower
// workload in every burst, and halved, but did not end, the bursts whose
// kernel queue overflowed with a local broker beside it. That trade is
// the operator's to make.
const DefaultPriorityBoost = 0

// Default returns the configuration used for every key a file leaves out.
func Default() Config {
	return Config{
		Paths:           []string{"/etc"},
		Include:         []string{},
		Exclude:         []string{},
		Events:          []string{},
		ShutdownTimeout: Duration{10 * time.Second},
		StatsInterval:   Duration{60 * time.Second},
		PriorityBoost:   DefaultPriorityBoost,
		StateDir:        DefaultStateDir,
		Capture: Capture{
			ExecPaths:      DefaultExecPaths(),
			ReadBuffer:     32 << 10,
			ReadAhead:      DefaultReadAhead,
			Scope:          ScopeFilesystem,
			SubtreeMaxDirs: 8192,
			// audit.DefaultOutOfScopeMarks; config imports no stage.
			OutOfScopeMarks: 4096,
		},
		Pipeline: Pipeline{CaptureChannel: 1, EnrichChannel: 1},
		Enrich: Enrich{
			ProcRoot:      "/proc",
			EtcRoot:       "/etc",
			ProcConnector: true,
			CacheSize:     16384,
			CacheTTL:      Duration{time.Second},
			CmdlineMax:    4096,
			Hash: Hash{
				MaxSize:        64 << 20,
				BytesPerSecond: 64 << 20,
				Workers:        2,
			},
		},
		Metrics: Metrics{Listen: "127.0.0.1:9464"},
		Health:  Health{SinkFailingAfter: Duration{60 * time.Second}},
		Logging: Logging{Level: "info", Format: "auto"},
		Sinks:   []Sink{DefaultSink("stdout", SinkStdout)},
	}
}

// DefaultSink returns a sink entry of the given type with every default
// filled in, including its type-specific table.
func DefaultSink(name, typ string) Sink {
	s := Sink{
		Name:         name,
		Type:         typ,
		WhenFull:     "block",
		QueueSize:    8192,
		Format:       FormatECS,
		SealInterval: Duration{10 * time.Second},
	}
	switch typ {
	case SinkFile:
		f := DefaultFileSink()
		s.File = &f
	case SinkKafka:
		k := DefaultKafkaSink()
		s.Kafka = &k
	}
	return s
}

// DefaultFileSink returns the defaults of `[sinks.file]`.
func DefaultFileSink() FileSink {
	return FileSink{
		Path:          "/var/log/fanaudit/events.json",
		FileMode:      0o600,
		DirMode:       0o750,
		MaxSizeMB:     100,
		MaxBackups:    5,
		Fsync:         "interval",
		FsyncInterval: Duration{time.Second},
	}
}

// DefaultKafkaSink returns the defaults of `[sinks.kafka]`. batch_timeout
// is short because kafka-go's own 1 s default adds a second of latency to
// every quiet-period event. The spool's dir defaults to
// state_dir/spool/<sink name>, and when_full to the sink's; Parse fills
// both in.
func DefaultKafkaSink() KafkaSink {
	return KafkaSink{
		Brokers:          []string{},
		Key:              "host_id",
		RequiredAcks:     "all",
		Compression:      "zstd",
		BatchSize:        1000,
		BatchBytes:       1 << 20,
		BatchTimeout:     Duration{20 * time.Millisecond},
		MaxInFlightBytes: 16 << 20,
		MaxMessageBytes:  1000000,
		WriteTimeout:     Duration{10 * time.Second},
		ClientID:         "fanaudit",
		CreateTopics:     true,
		WhenFull:         "block",
		Spool: Spool{
			MaxBytes:      1 << 30,
			SegmentBytes:  16 << 20,
			Fsync:         "interval",
			FsyncInterval: Duration{time.Second},
		},
	}
}
