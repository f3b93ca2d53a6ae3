package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// fullConfig sets every key of every section, and of every sink type, to
// a valid value that differs from its default, so that a decoder that
// drops or misplaces any key is caught.
func fullConfig() Config {
	c := Config{
		Paths:           []string{"/srv", "/home"},
		Include:         []string{"/srv/*"},
		Exclude:         []string{"/srv/tmp"},
		Events:          []string{"open", "rename"},
		ShutdownTimeout: Duration{3 * time.Second},
		StatsInterval:   Duration{0},
		MemoryLimitMB:   256,
		PriorityBoost:   7,
		StateDir:        "/var/lib/fa",
		Capture: Capture{
			UnlimitedQueue: true,
			ReadBuffer:     8192,
			BatchDelay:     Duration{5 * time.Millisecond},
			ExecPaths:      []string{"/usr"},
			Scope:          ScopeSubtree,
			SubtreeMaxDirs: 77,
		},
		Pipeline: Pipeline{CaptureChannel: 2, EnrichChannel: 3},
		Enrich: Enrich{
			ProcRoot: "/host/proc", EtcRoot: "/host/etc", CacheSize: 5, CacheTTL: Duration{2 * time.Second},
			CmdlineMax: 99, FileStat: true, PidFD: true, ProcConnector: false,
			Hash: Hash{Enabled: true, MaxSize: 1000, BytesPerSecond: 2000, Workers: 3},
		},
		Metrics: Metrics{Enabled: true, Listen: ":9999"},
		Health:  Health{SinkFailingAfter: Duration{time.Minute + time.Second}},
		Logging: Logging{Level: "debug", Format: "json"},
	}
	so := DefaultSink("out", SinkStdout)
	so.WhenFull, so.QueueSize, so.Format, so.SealState, so.SealInterval = "drop_oldest", 10, FormatOCSF, "/var/lib/fa/out.seal", Duration{time.Second}
	f := DefaultSink("f", SinkFile)
	f.WhenFull, f.QueueSize, f.Format, f.SealState, f.SealInterval = "drop_newest", 11, FormatOCSF, "/var/lib/fa/f.seal", Duration{time.Hour}
	f.File = &FileSink{
		Path: "/var/log/x/e.json", FileMode: 0o640, DirMode: 0o700, MaxSizeMB: 7, MaxAge: Duration{time.Hour},
		MaxBackups: 2, Compress: true, Fsync: "always", FsyncInterval: Duration{3 * time.Second},
	}
	k := DefaultSink("k", SinkKafka)
	k.QueueSize, k.SealInterval, k.Format, k.SealState, k.WhenFull = 12, Duration{time.Minute}, FormatOCSF, "/var/lib/fa/k.seal", "drop_oldest"
	k.Kafka = &KafkaSink{
		Brokers: []string{"b1:9092", "[::1]:9093"}, Topic: "t", Key: "path", RequiredAcks: "one", AllowLossy: true,
		Compression: "lz4", BatchSize: 10, BatchBytes: 2 << 20, BatchTimeout: Duration{time.Millisecond},
		MaxInFlightBytes: 32 << 20, MaxMessageBytes: 4096, WriteTimeout: Duration{time.Second}, ClientID: "c",
		CreateTopics: false, DeadLetterFile: "/var/log/x/dead", WhenFull: "drop_newest",
		TLS:   KafkaTLS{Enabled: true, CAFile: "/etc/ca.pem", CertFile: "/etc/c.pem", KeyFile: "/etc/k.pem", ServerName: "kafka", InsecureSkipVerify: true},
		SASL:  KafkaSASL{Mechanism: "scram-sha-256", Username: "u", PasswordFile: "/etc/pw"},
		Spool: Spool{Dir: "", MaxBytes: 40 << 20, SegmentBytes: 2 << 20, Fsync: "never", FsyncInterval: Duration{2 * time.Second}},
	}
	// A second Kafka sink keeps a spool, with non-default spool keys.
	k2 := DefaultSink("k2", SinkKafka)
	k2.Kafka.Brokers, k2.Kafka.Topic = []string{"b:1"}, "t2"
	k2.Kafka.Spool = Spool{Dir: "/var/spool/k2", MaxBytes: 40 << 20, SegmentBytes: 2 << 20, Fsync: "always", FsyncInterval: Duration{2 * time.Second}}
	k2.Kafka.SASL = KafkaSASL{Mechanism: "plain", Username: "u", PasswordEnv: "PW"}
	c.Sinks = []Sink{so, f, k, k2}
	return c
}

// TestFullConfigSetsEveryKey keeps fullConfig complete: each leaf key
// differs from its default (the defaults of the same sink type).
func TestFullConfigSetsEveryKey(t *testing.T) {
	full := fullConfig()
	def := Default()
	def.Sinks = nil
	for _, s := range full.Sinks {
		def.Sinks = append(def.Sinks, DefaultSink(s.Name, s.Type))
	}
	got, want := leaves(t, &full), leaves(t, &def)
	// A sink key is covered when it differs in any sink of its type.
	covered := map[string]bool{}
	all := map[string]bool{}
	for k, dv := range want {
		gk := k
		if rest, ok := strings.CutPrefix(k, "sinks."); ok {
			i, sub, _ := strings.Cut(rest, ".")
			n, _ := strconv.Atoi(i)
			if sub == "name" || sub == "type" {
				continue
			}
			gk = "sinks." + full.Sinks[n].Type + "." + sub
		}
		all[gk] = true
		if v, ok := got[k]; ok && v != dv {
			covered[gk] = true
		}
	}
	for k := range all {
		if !covered[k] {
			t.Errorf("fullConfig leaves %s at its default", k)
		}
	}
}

// leaves flattens a config's TOML into key -> printed value.
func leaves(t *testing.T, c *Config) map[string]string {
	t.Helper()
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(c); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if _, err := toml.Decode(buf.String(), &m); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				walk(join(prefix, k), c)
			}
		case []map[string]any:
			for i, e := range v {
				walk(prefix+"."+strconv.Itoa(i), e)
			}
		default:
			out[prefix] = fmt.Sprint(v)
		}
	}
	walk("", m)
	return out
}

// Styles of writing one config: the same keys and values, in TOML's
// different table syntaxes.
const (
	styleTables      = iota // [capture], [[sinks]], [sinks.kafka.spool]
	styleInline             // capture = {...}, sinks = [{...}, {...}]
	styleSubInline          // [[sinks]] with kafka = { ..., spool = { ... } }
	styleDotted             // capture.read_buffer = 1, kafka.spool.dir = ""
	styleMixedHeader        // [sinks.kafka] header, then spool = { ... } inline
)

// render writes tree (a decoded config) in one style.
func render(t *testing.T, tree map[string]any, style int) string {
	t.Helper()
	var b strings.Builder
	keys := sortedKeys(tree)
	// Scalars and arrays of scalars first: they belong to the root table.
	for _, k := range keys {
		if !isTable(tree[k]) && !isTableArray(tree[k]) {
			fmt.Fprintf(&b, "%s = %s\n", k, value(tree[k]))
		}
	}
	for _, k := range keys {
		v := tree[k]
		switch {
		case isTable(v):
			m := v.(map[string]any)
			switch style {
			case styleInline:
				fmt.Fprintf(&b, "%s = %s\n", k, inline(m))
			case styleDotted:
				dotted(&b, k, m)
			default:
				tables(&b, k, m, "[%s]")
			}
		case isTableArray(v):
			elems := v.([]map[string]any)
			if style == styleInline {
				parts := make([]string, len(elems))
				for i, e := range elems {
					parts[i] = inline(e)
				}
				fmt.Fprintf(&b, "%s = [\n  %s,\n]\n", k, strings.Join(parts, ",\n  "))
				continue
			}
			for _, e := range elems {
				fmt.Fprintf(&b, "\n[[%s]]\n", k)
				for _, ek := range sortedKeys(e) {
					ev := e[ek]
					if !isTable(ev) {
						fmt.Fprintf(&b, "%s = %s\n", ek, value(ev))
					}
				}
				for _, ek := range sortedKeys(e) {
					sub, ok := e[ek].(map[string]any)
					if !ok {
						continue
					}
					switch style {
					case styleSubInline:
						fmt.Fprintf(&b, "%s = %s\n", ek, inline(sub))
					case styleDotted:
						dotted(&b, ek, sub)
					case styleMixedHeader:
						fmt.Fprintf(&b, "[%s.%s]\n", k, ek)
						for _, sk := range sortedKeys(sub) {
							fmt.Fprintf(&b, "%s = %s\n", sk, value(sub[sk]))
						}
					default:
						tables(&b, k+"."+ek, sub, "[%s]")
					}
				}
			}
		}
	}
	return b.String()
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func isTable(v any) bool      { _, ok := v.(map[string]any); return ok }
func isTableArray(v any) bool { _, ok := v.([]map[string]any); return ok }

// tables writes m under a [name] header and its sub-tables under theirs.
func tables(b *strings.Builder, name string, m map[string]any, header string) {
	fmt.Fprintf(b, "\n"+header+"\n", name)
	for _, k := range sortedKeys(m) {
		if !isTable(m[k]) {
			fmt.Fprintf(b, "%s = %s\n", k, value(m[k]))
		}
	}
	for _, k := range sortedKeys(m) {
		if sub, ok := m[k].(map[string]any); ok {
			tables(b, name+"."+k, sub, header)
		}
	}
}

func dotted(b *strings.Builder, prefix string, m map[string]any) {
	for _, k := range sortedKeys(m) {
		if sub, ok := m[k].(map[string]any); ok {
			dotted(b, prefix+"."+k, sub)
			continue
		}
		fmt.Fprintf(b, "%s.%s = %s\n", prefix, k, value(m[k]))
	}
}

func inline(m map[string]any) string {
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		if sub, ok := m[k].(map[string]any); ok {
			parts = append(parts, k+" = "+inline(sub))
			continue
		}
		parts = append(parts, k+" = "+value(m[k]))
	}
	return "{ " + strings.Join(parts, ", ") + " }"
}

func value(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case map[string]any:
		return inline(v)
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			parts[i] = value(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	default:
		return fmt.Sprint(v)
	}
}

// TestTableVersusInline: every section, written as [tables], as inline
// tables, as [[sinks]] with inline sub-tables, as dotted keys, and mixed,
// decodes to the same config, equal to the one written.
func TestTableVersusInline(t *testing.T) {
	want := fullConfig()
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(want); err != nil {
		t.Fatal(err)
	}
	var tree map[string]any
	if _, err := toml.Decode(buf.String(), &tree); err != nil {
		t.Fatal(err)
	}
	var wantText bytes.Buffer
	if err := want.WriteTOML(&wantText, "x"); err != nil {
		t.Fatal(err)
	}
	for name, style := range map[string]int{
		"tables": styleTables, "inline": styleInline, "sub-inline": styleSubInline,
		"dotted": styleDotted, "mixed header": styleMixedHeader,
	} {
		t.Run(name, func(t *testing.T) {
			src := render(t, tree, style)
			got, err := Parse("t.toml", []byte(src))
			if err != nil {
				t.Fatalf("%v\n%s", err, src)
			}
			var gotText bytes.Buffer
			if err := got.WriteTOML(&gotText, "x"); err != nil {
				t.Fatal(err)
			}
			if gotText.String() != wantText.String() {
				t.Errorf("decodes differently:\n%s\ngot:\n%s\nwant:\n%s", src, gotText.String(), wantText.String())
			}
			if !reflect.DeepEqual(got.Sinks, want.Sinks) {
				t.Errorf("sinks differ:\n%s", src)
			}
		})
	}
}

// TestInlineKeysWereSet is the case: keys inside inline tables
// count as set, as they do under [table] headers.
func TestInlineKeysWereSet(t *testing.T) {
	for _, src := range []string{
		"[[sinks]]\nname = \"k\"\ntype = \"kafka\"\nwhen_full = \"drop_oldest\"\nkafka = { brokers = [\"b:1\"], topic = \"t\", when_full = \"block\", spool = { dir = \"\" } }\n",
		"sinks = [{ name = \"k\", type = \"kafka\", when_full = \"drop_oldest\", kafka = { brokers = [\"b:1\"], topic = \"t\", when_full = \"block\", spool = { dir = \"\" } } }]\n",
		"[[sinks]]\nname = \"k\"\ntype = \"kafka\"\nwhen_full = \"drop_oldest\"\nkafka.brokers = [\"b:1\"]\nkafka.topic = \"t\"\nkafka.when_full = \"block\"\nkafka.spool.dir = \"\"\n",
		"[[sinks]]\nname = \"k\"\ntype = \"kafka\"\nwhen_full = \"drop_oldest\"\n[sinks.kafka]\nbrokers = [\"b:1\"]\ntopic = \"t\"\nwhen_full = \"block\"\n[sinks.kafka.spool]\ndir = \"\"\n",
	} {
		c, err := Parse("t.toml", []byte(src))
		if err != nil {
			t.Fatalf("%v\n%s", err, src)
		}
		if k := c.Sinks[0].Kafka; k.Spool.Dir != "" || k.WhenFull != "block" {
			t.Errorf("spool.dir %q, kafka.when_full %q; want \"\" and block:\n%s", k.Spool.Dir, k.WhenFull, src)
		}
	}
}

func TestKafkaDefaultsFollowSinkAndStateDir(t *testing.T) {
	src := "state_dir = \"/srv/state/\"\n[[sinks]]\nname = \"k\"\ntype = \"kafka\"\nwhen_full = \"drop_oldest\"\nkafka = { brokers = [\"b:1\"], topic = \"t\" }\n"
	c, err := Parse("t.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if k := c.Sinks[0].Kafka; k.Spool.Dir != "/srv/state/spool/k" || k.WhenFull != "drop_oldest" {
		t.Errorf("spool.dir %q, kafka.when_full %q", k.Spool.Dir, k.WhenFull)
	}
}

// badCase is a config that must fail naming key on line.
type badCase struct {
	name string
	src  string
	key  string
	line int
	msg  string // a part of the message, optional
}

func checkBad(t *testing.T, tests []badCase) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("t.toml", []byte(tc.src))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("want *Error, got %v", err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("message is not one line: %q", msg)
			}
			if ce.Key != tc.key {
				t.Errorf("key = %q, want %q (%s)", ce.Key, tc.key, msg)
			}
			if ce.Line != tc.line {
				t.Errorf("line = %d, want %d (%s)", ce.Line, tc.line, msg)
			}
			if !strings.Contains(msg, tc.msg) {
				t.Errorf("message %q lacks %q", msg, tc.msg)
			}
		})
	}
}

const kafkaHead = "[[sinks]]\nname = \"k\"\ntype = \"kafka\"\n[sinks.kafka]\nbrokers = [\"b:9092\"]\ntopic = \"t\"\n" // 6 lines

func TestDurationsAreStrings(t *testing.T) {
	checkBad(t, []badCase{
		{"top", "paths = [\"/a\"]\nstats_interval = 5\n", "stats_interval", 2, `like "5s"`},
		{"shutdown", "shutdown_timeout = 10\n", "shutdown_timeout", 1, "bare number 10"},
		{"section", "[enrich]\ncache_ttl = 1\n", "enrich.cache_ttl", 2, "duration"},
		{"inline section", "health = { sink_failing_after = 60 }\n", "health.sink_failing_after", 1, "duration"},
		{"sink", "[[sinks]]\nname = \"a\"\ntype = \"stdout\"\n[[sinks]]\nname = \"f\"\ntype = \"file\"\nseal_interval = 10\n", "sinks[1].seal_interval", 7, "duration"},
		{"file table", "[[sinks]]\nname = \"f\"\ntype = \"file\"\n[sinks.file]\npath = \"/x\"\nmax_age = 3600\n", "sinks[0].file.max_age", 6, "duration"},
		{"kafka inline", "[[sinks]]\nname = \"k\"\ntype = \"kafka\"\nkafka = { brokers = [\"b:1\"], topic = \"t\",\n  spool = { fsync_interval = 1 } }\n", "sinks[0].kafka.spool.fsync_interval", 5, "duration"},
		{"bad string", "batch_delay = \"soon\"\n", "batch_delay", 1, "unknown key"},
		{"float", "[capture]\nbatch_delay = 1.5\n", "capture.batch_delay", 2, "a float"},
	})
}

func TestWrongTypesAreLocated(t *testing.T) {
	checkBad(t, []badCase{
		{"string for array", "paths = \"/tmp\"\n", "paths", 1, "must be an array, not a string"},
		{"int in array", "paths = [\"/a\",\n  5]\n", "paths[1]", 2, "must be a string"},
		{"string for int", "[capture]\nread_buffer = \"big\"\n", "capture.read_buffer", 2, "an integer"},
		{"second sink", "[[sinks]]\nname = \"a\"\ntype = \"stdout\"\n[[sinks]]\nname = \"b\"\ntype = \"stdout\"\nqueue_size = \"x\"\n", "sinks[1].queue_size", 7, "an integer"},
		{"inline sink", "sinks = [\n  { name = \"a\", type = \"stdout\" },\n  { name = \"b\", type = \"stdout\", queue_size = true },\n]\n", "sinks[1].queue_size", 3, "a boolean"},
		{"sink type", "[[sinks]]\nname = \"a\"\ntype = 5\n", "sinks[0].type", 3, "a string"},
		{"table for scalar", "[logging.level]\nx = 1\n", "logging.level", 1, "a table"},
		{"scalar for table", "capture = 5\n", "capture", 1, "must be a table"},
		{"kafka scalar", "[[sinks]]\nname = \"k\"\ntype = \"kafka\"\nkafka = \"x\"\n", "sinks[0].kafka", 4, "must be a table"},
		{"sinks not array", "sinks = 5\n", "sinks", 1, "array"},
		{"mode", "[[sinks]]\nname = \"f\"\ntype = \"file\"\nfile = { path = \"/x\", file_mode = \"rw\" }\n", "sinks[0].file.file_mode", 4, "octal"},
		{"mode range", "[[sinks]]\nname = \"f\"\ntype = \"file\"\nfile = { path = \"/x\", dir_mode = 600 }\n", "sinks[0].file.dir_mode", 4, "0o600"},
		{"int overflow", "memory_limit_mb = 99999999999999999999\n", "memory_limit_mb", 1, "out of range"},
	})
}

func TestUnknownKeysAreLocated(t *testing.T) {
	checkBad(t, []badCase{
		{"inline second sink", "sinks = [\n  { name = \"a\", type = \"stdout\" },\n  { name = \"b\", type = \"stdout\", bogus = 1 },\n]\n", "sinks[1].bogus", 3, "unknown key"},
		{"inline spool", kafkaHead + "spool = { dir = \"\",\n  q = 1 }\n", "sinks[0].kafka.spool.q", 8, "unknown key"},
		{"dotted", "capture.readbuffer = 1\n", "capture.readbuffer", 1, "unknown key"},
		{"header", "[bogus]\nx = 1\n", "bogus", 1, "unknown key"},
		{"second element header", "[[sinks]]\nname = \"a\"\ntype = \"stdout\"\n" + kafkaHead + "[sinks.kafka.spool]\nwhat = 1\n", "sinks[1].kafka.spool.what", 11, "unknown key"},
	})
}

func TestSizesAndCounts(t *testing.T) {
	checkBad(t, []badCase{
		{"memory 2^44", "memory_limit_mb = 17592186044416\n", "memory_limit_mb", 1, "out of range"},
		{"memory negative", "memory_limit_mb = -1\n", "memory_limit_mb", 1, "out of range"},
		{"boost negative", "priority_boost = -1\n", "priority_boost", 1, "out of range"},
		{"boost past nice's span", "\npriority_boost = 40\n", "priority_boost", 2, "out of range"},
		{"channel", "[pipeline]\nenrich_channel = 1000000000\n", "pipeline.enrich_channel", 2, "out of range"},
		{"cache", "[enrich]\ncache_size = 1000000000000\n", "enrich.cache_size", 2, "out of range"},
		{"hash size", "[enrich.hash]\nmax_size = 9223372036854775807\n", "enrich.hash.max_size", 2, "out of range"},
		{"rate", "[enrich.hash]\nbytes_per_second = 0\n", "enrich.hash.bytes_per_second", 2, "out of range"},
		{"subtree dirs", "[capture]\nsubtree_max_dirs = 0\n", "capture.subtree_max_dirs", 2, "out of range"},
		{"queue", "[[sinks]]\nname = \"a\"\ntype = \"stdout\"\nqueue_size = 4294967296\n", "sinks[0].queue_size", 4, "out of range"},
		{"file size", "[[sinks]]\nname = \"f\"\ntype = \"file\"\n[sinks.file]\npath = \"/x\"\nmax_size_mb = 17592186044416\n", "sinks[0].file.max_size_mb", 6, "out of range"},
		{"backups", "[[sinks]]\nname = \"f\"\ntype = \"file\"\n[sinks.file]\npath = \"/x\"\nmax_backups = -1\n", "sinks[0].file.max_backups", 6, "out of range"},
		{"batch size", kafkaHead + "batch_size = 100000000000\n", "sinks[0].kafka.batch_size", 7, "out of range"},
		{"batch bytes", kafkaHead + "batch_bytes = 9223372036854775807\n", "sinks[0].kafka.batch_bytes", 7, "at most"},
		{"in flight", kafkaHead + "max_in_flight_bytes = 9223372036854775807\n", "sinks[0].kafka.max_in_flight_bytes", 7, "at most"},
		{"message", kafkaHead + "max_message_bytes = 100\n", "sinks[0].kafka.max_message_bytes", 7, "out of range"},
		{"segment", kafkaHead + "[sinks.kafka.spool]\nsegment_bytes = 9223372036854775807\n", "sinks[0].kafka.spool.segment_bytes", 8, "out of range"},
		{"spool max", kafkaHead + "[sinks.kafka.spool]\nmax_bytes = 9223372036854775807\n", "sinks[0].kafka.spool.max_bytes", 8, "at most"},
	})
}

func TestPathsAndPorts(t *testing.T) {
	checkBad(t, []badCase{
		{"relative spool", kafkaHead + "spool.dir = \"spool\"\n", "sinks[0].kafka.spool.dir", 7, "absolute"},
		{"relative dead letter", kafkaHead + "dead_letter_file = \"dead.json\"\n", "sinks[0].kafka.dead_letter_file", 7, "absolute"},
		{"relative state", "state_dir = \"state\"\n", "state_dir", 1, "absolute"},
		{"relative seal", "[[sinks]]\nname = \"a\"\ntype = \"stdout\"\nseal_state = \"s\"\n", "sinks[0].seal_state", 4, "absolute"},
		{"relative exec path", "[capture]\nexec_paths = [\"/usr\", \"bin\"]\n", "capture.exec_paths[1]", 2, "absolute"},
		{"relative proc", "[enrich]\nproc_root = \"proc\"\n", "enrich.proc_root", 2, "absolute"},
		{"relative etc", "[enrich]\netc_root = \"\"\n", "enrich.etc_root", 2, "directory"},
		{"relative password", kafkaHead + "sasl = { mechanism = \"plain\", username = \"u\", password_file = \"pw\" }\n", "sinks[0].kafka.sasl.password_file", 7, "absolute"},
		{"relative ca", kafkaHead + "tls = { enabled = true, ca_file = \"ca.pem\" }\n", "sinks[0].kafka.tls.ca_file", 7, "absolute"},
		{"relative watched, second line", "paths = [\n  \"/a\",\n  \"b\",\n]\n", "paths[1]", 3, "absolute"},
		{"port too big", "[[sinks]]\nname = \"k\"\ntype = \"kafka\"\n[sinks.kafka]\nbrokers = [\"a:9092\", \"b:99999\"]\ntopic = \"t\"\n", "sinks[0].kafka.brokers[1]", 5, "port"},
		{"port name", "[[sinks]]\nname = \"k\"\ntype = \"kafka\"\nkafka = { brokers = [\"b:kafka\"], topic = \"t\" }\n", "sinks[0].kafka.brokers[0]", 4, "port"},
		{"no port", "[[sinks]]\nname = \"k\"\ntype = \"kafka\"\nkafka = { brokers = [\"b\"], topic = \"t\" }\n", "sinks[0].kafka.brokers[0]", 4, "host:port"},
		{"no host", "[[sinks]]\nname = \"k\"\ntype = \"kafka\"\nkafka = { brokers = [\":9092\"], topic = \"t\" }\n", "sinks[0].kafka.brokers[0]", 4, "no host"},
		{"listen port", "[metrics]\nlisten = \"127.0.0.1:70000\"\n", "metrics.listen", 2, "port"},
		{"tls file without tls", kafkaHead + "tls.ca_file = \"/ca\"\n", "sinks[0].kafka.tls.ca_file", 7, "tls.enabled"},
		{"sasl without mechanism", kafkaHead + "sasl.password_env = \"PW\"\n", "sinks[0].kafka.sasl.mechanism", 7, "mechanism"},
	})
}

func TestDuplicateOutputs(t *testing.T) {
	file := func(name, path string) string {
		return fmt.Sprintf("[[sinks]]\nname = %q\ntype = \"file\"\nfile = { path = %q }\n", name, path)
	}
	kafka := func(name, extra string) string {
		return fmt.Sprintf("[[sinks]]\nname = %q\ntype = \"kafka\"\nkafka = { brokers = [\"b:1\"], topic = \"t\"%s }\n", name, extra)
	}
	checkBad(t, []badCase{
		{"two files", file("a", "/var/log/e.json") + file("b", "/var/log/e.json"), "sinks[1].file.path", 8, "sinks[0].file.path"},
		{"unclean equal", file("a", "/var/log/e.json") + file("b", "/var/log//./e.json"), "sinks[1].file.path", 8, "sinks[0].file.path"},
		{"file is dead letters", file("a", "/var/log/e.json") + kafka("k", ", dead_letter_file = \"/var/log/e.json\""), "sinks[1].kafka.dead_letter_file", 8, "sinks[0].file.path"},
		{"shared spool", kafka("k1", ", spool = { dir = \"/var/spool/k\" }") + kafka("k2", ", spool = { dir = \"/var/spool/k\" }"), "sinks[1].kafka.spool.dir", 8, "sinks[0].kafka.spool.dir"},
		{"spool is another's default", kafka("k1", "") + kafka("k2", ", spool = { dir = \"/var/lib/fanaudit/spool/k1\" }"), "sinks[1].kafka.spool.dir", 8, "sinks[0].kafka.spool.dir"},
		{"file inside spool", kafka("k1", "") + file("f", "/var/lib/fanaudit/spool/k1/x.json"), "sinks[1].file.path", 8, "inside"},
		{"spool holds file", file("f", "/srv/q/x.json") + kafka("k1", ", spool = { dir = \"/srv/q\" }"), "sinks[1].kafka.spool.dir", 8, "holds"},
		{"seal state is output", file("f", "/srv/x.json") + "[[sinks]]\nname = \"o\"\ntype = \"stdout\"\nseal_state = \"/srv/x.json\"\n", "sinks[1].seal_state", 8, "sinks[0].file.path"},
	})
	// A spool that is off ("") clashes with nothing.
	if _, err := Parse("t.toml", []byte(kafka("k1", ", spool = { dir = \"\" }")+kafka("k2", ", spool = { dir = \"\" }"))); err != nil {
		t.Errorf("two sinks without spool: %v", err)
	}
}

func TestNewKeys(t *testing.T) {
	checkBad(t, []badCase{
		{"format", "[[sinks]]\nname = \"a\"\ntype = \"stdout\"\nformat = \"cef\"\n", "sinks[0].format", 4, `"ecs", "ocsf"`},
		{"scope", "[capture]\nscope = \"tree\"\n", "capture.scope", 2, `"auto", "subtree", "filesystem"`},
		{"seal interval", "[[sinks]]\nname = \"a\"\ntype = \"stdout\"\nseal_interval = \"0s\"\n", "sinks[0].seal_interval", 4, "positive"},
		{"create_topics", kafkaHead + "create_topics = \"yes\"\n", "sinks[0].kafka.create_topics", 7, "boolean"},
	})
	c, err := Parse("t.toml", []byte(kafkaHead))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Sinks[0]
	if s.Format != FormatECS || s.SealState != "" || s.SealInterval.Duration != 10*time.Second || !s.Kafka.CreateTopics ||
		c.StateDir != DefaultStateDir || c.Capture.Scope != ScopeFilesystem || c.Capture.SubtreeMaxDirs != 8192 {
		t.Errorf("defaults: %+v %+v %+v", s, s.Kafka, c.Capture)
	}
}

func TestSizeLimit(t *testing.T) {
	big := append([]byte("paths = [\"/a\"]\n#"), bytes.Repeat([]byte("x"), MaxFileSize)...)
	_, err := Parse("big.toml", big)
	var ce *Error
	if !errors.As(err, &ce) || !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v", err)
	}
	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Skip("no /dev/zero")
	}
	start := time.Now()
	_, err = Load("/dev/zero")
	if !errors.As(err, &ce) || !errors.Is(err, ErrTooLarge) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("got %v", err)
	}
	if !strings.Contains(err.Error(), "/dev/zero") {
		t.Errorf("does not name the file: %v", err)
	}
	t.Logf("%v in %v", err, time.Since(start))
}

// TestNestingAndSinkLimits: documents the decoder would take minutes
// over, and more sinks than anyone runs, are refused quickly.
func TestNestingAndSinkLimits(t *testing.T) {
	for _, open := range []string{"[", "{a=", "[{a=["} {
		src := "paths = [\"/a\"]\n\nx = " + strings.Repeat(open, MaxFileSize/len(open)/2)
		start := time.Now()
		_, err := Parse("t.toml", []byte(src))
		var ce *Error
		if !errors.As(err, &ce) || ce.Line != 3 || !strings.Contains(err.Error(), "nested deeper") {
			t.Errorf("%q: %v", open, err)
		}
		t.Logf("%q: %v", open, time.Since(start))
	}
	ok := "x = " + strings.Repeat("[", MaxNesting-1) + strings.Repeat("]", MaxNesting-1) + "\n"
	if _, err := Parse("t.toml", []byte(ok)); err == nil || strings.Contains(err.Error(), "nested") {
		t.Errorf("%d levels: %v (want only the unknown key)", MaxNesting-1, err)
	}
	var b strings.Builder
	for i := range MaxSinks + 1 {
		fmt.Fprintf(&b, "[[sinks]]\nname = \"s%d\"\ntype = \"file\"\nfile.path = \"/var/log/%d\"\n", i, i)
	}
	checkBad(t, []badCase{{"sinks", b.String(), "sinks[64]", 4*MaxSinks + 1, "more than 64 sinks"}})
}

func TestSecretRedacts(t *testing.T) {
	s := NewSecret("hunter2")
	type holder struct {
		Password Secret `toml:"password" json:"password"`
	}
	h := holder{s}
	var outs []string
	for _, f := range []string{"%v", "%s", "%q", "%+v", "%#v", "%x", "%d", "%10s"} {
		outs = append(outs, fmt.Sprintf(f, s), fmt.Sprintf(f, h), fmt.Sprintf(f, &h))
	}
	outs = append(outs, s.String(), s.GoString())
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(h); err != nil {
		t.Fatal(err)
	}
	outs = append(outs, buf.String())
	txt, _ := s.MarshalText()
	outs = append(outs, string(txt))
	for _, o := range outs {
		if strings.Contains(o, "hunter2") {
			t.Errorf("secret printed: %q", o)
		}
	}
	if !strings.Contains(buf.String(), Redacted) {
		t.Errorf("toml: %q", buf.String())
	}
	if s.Reveal() != "hunter2" {
		t.Error("Reveal")
	}
}

func TestPassword(t *testing.T) {
	dir := t.TempDir()
	pw := dir + "/pw"
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(k string) (string, bool) { return map[string]string{"PW": "e"}[k], k == "PW" }
	s, err := KafkaSASL{Mechanism: "plain", PasswordFile: pw}.Password(env)
	if err != nil || s.Reveal() != "s3cret" {
		t.Errorf("file: %v %q", err, s.Reveal())
	}
	if s, err := (KafkaSASL{PasswordEnv: "PW"}).Password(env); err != nil || s.Reveal() != "e" {
		t.Errorf("env: %v", err)
	}
	for _, sasl := range []KafkaSASL{{PasswordFile: dir + "/missing"}, {PasswordEnv: "NOPE"}, {PasswordFile: "/dev/null"}} {
		if _, err := sasl.Password(env); !errors.Is(err, ErrSecret) {
			t.Errorf("%+v: %v", sasl, err)
		}
	}
}

func TestLocate(t *testing.T) {
	src := `# comment [x] = 1
paths = [
  "/a", # x = 1
  "/b",
]
s = """
y = 2 "" \"""
"""
l = '''
[z]
'''
[capture] # hdr
read_buffer = 1
"quoted.key" = 1
[[sinks]]
name = "a"
[sinks.file]
path = "/x"
[[sinks]]
"name" = "b"
kafka = { brokers = ["a:1"], spool = {
  dir = "" } }
[[sinks]]
kafka.tls.enabled = true
[ sinks . kafka ]
topic = 't'
other = [ { a = 1 }, { b = [ [1, 2], { c = 3 } ] } ]
`
	kl, deep := locate([]byte(src))
	if deep != 0 {
		t.Errorf("deepAt = %d", deep)
	}
	tests := []struct {
		key  string
		want int
	}{
		{"paths", 2}, {"paths.0", 3}, {"paths.1", 4}, {"s", 6}, {"y", 0}, {"x", 0}, {"l", 9}, {"z", 0},
		{"capture", 12}, {"capture.read_buffer", 13}, {"capture.quoted.key", 14},
		{"sinks.0", 15}, {"sinks.0.name", 16}, {"sinks.0.file.path", 18},
		{"sinks.1.name", 20}, {"sinks.1.kafka.brokers", 21}, {"sinks.1.kafka.brokers.0", 21}, {"sinks.1.kafka.spool.dir", 22},
		{"sinks.1.kafka.nope", 21}, {"sinks.2.kafka.tls.enabled", 24}, {"sinks.2.kafka.topic", 26},
		{"sinks.2.kafka.other.0.a", 27}, {"sinks.2.kafka.other.1.b.1.c", 27},
	}
	for _, tc := range tests {
		if got := kl.line(tc.key); got != tc.want {
			t.Errorf("line(%q) = %d, want %d", tc.key, got, tc.want)
		}
	}
}

// FuzzParse: no input makes the loader panic; every failure is one
// typed *Error on one line; what it accepts prints as a config that
// parses back to the same effective config.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile("../../config.toml.example")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add(Embedded())
	var buf bytes.Buffer
	full := fullConfig()
	if err := full.WriteTOML(&buf, "x"); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	for _, s := range []string{
		"sinks = [{ name = \"k\", type = \"kafka\", kafka = { brokers = [\"b:1\"], topic = \"t\", spool = { dir = \"\" } } }]\n",
		"[[sinks]]\nname = \"f\"\ntype = \"file\"\nfile.path = \"/x\"\nfile.max_age = \"1h\"\n",
		"stats_interval = 5\n",
		"paths = [\"/a\", 5]\n[capture]\nscope = \"subtree\"\n",
		"a = \"\"\"\nb\"\"\"\n[x.'y'.\"z\"]\n",
		"[[sinks]]\n[[sinks]]\nkafka = {spool={dir=1}}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		locate(src) // must not panic on anything, accepted or not
		c, err := Parse("f.toml", src)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("untyped error %T: %v", err, err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		var out bytes.Buffer
		if err := c.WriteTOML(&out, "f"); err != nil {
			t.Fatalf("print: %v", err)
		}
		c2, err := Parse("out.toml", out.Bytes())
		if err != nil {
			t.Fatalf("printed config does not parse: %v\n%s", err, out.String())
		}
		var out2 bytes.Buffer
		if err := c2.WriteTOML(&out2, "f"); err != nil {
			t.Fatal(err)
		}
		if out.String() != out2.String() {
			t.Fatalf("printed config changes on a round trip:\n%s\n%s", out.String(), out2.String())
		}
	})
}
