package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

func TestEmbeddedDefault(t *testing.T) {
	c, err := Parse(EmbeddedName, Embedded())
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	var a, b bytes.Buffer
	if err := c.WriteTOML(&a, "x"); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteTOML(&b, "x"); err != nil {
		t.Fatal(err)
	}
	if a.String() != b.String() {
		t.Errorf("embedded default differs from Default():\n%s\nvs\n%s", a.String(), b.String())
	}
}

func TestParseFillsSinkDefaults(t *testing.T) {
	src := `
paths = ["/srv"]
shutdown_timeout = "3s"

[[sinks]]
name = "a"
type = "stdout"
when_full = "drop_newest"

[[sinks]]
name = "b"
type = "file"
queue_size = 10
[sinks.file]
path = "/var/log/x.json"
`
	c, err := Parse("t.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if c.ShutdownTimeout.Duration != 3*time.Second || c.StatsInterval != Default().StatsInterval {
		t.Errorf("top-level defaults: %+v", c)
	}
	if len(c.Sinks) != 2 {
		t.Fatalf("sinks: %+v", c.Sinks)
	}
	if s := c.Sinks[0]; s.WhenFull != "drop_newest" || s.QueueSize != 8192 || s.File != nil {
		t.Errorf("sink a: %+v", s)
	}
	want := DefaultFileSink()
	want.Path = "/var/log/x.json"
	if s := c.Sinks[1]; s.QueueSize != 10 || s.File == nil || *s.File != want {
		t.Errorf("sink b: %+v %+v", s, s.File)
	}
	if got := c.OutputPaths(); len(got) != 1 || got[0] != "/var/log/x.json" {
		t.Errorf("OutputPaths = %v", got)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name     string
		src      string
		wantKey  string
		wantLine int
	}{
		{"unknown top key", "paths = [\"/a\"]\nbogus = 1\n", "bogus", 2},
		{"unknown nested key", "[capture]\nread_buffer = 65536\nreadbuffer = 1\n", "capture.readbuffer", 3},
		{"unknown sink key", "[[sinks]]\nname = \"a\"\ntype = \"stdout\"\n[[sinks]]\nname = \"b\"\ntype = \"stdout\"\nqueue = 3\n", "sinks[1].queue", 7},
		{"unknown sink file key", "[[sinks]]\nname = \"a\"\ntype = \"file\"\n[sinks.file]\npath = \"/x\"\npth = \"/y\"\n", "sinks[0].file.pth", 6},
		{"relative path", "paths = [\"rel\"]\n", "paths", 1},
		{"empty paths", "paths = []\n", "paths", 1},
		{"bad event", "\n\nevents = [\"open\", \"opne\"]\n", "events", 3},
		{"bad glob", "exclude = [\"[\"]\n", "exclude", 1},
		{"bad duration", "shutdown_timeout = \"ten\"\n", "shutdown_timeout", 1},
		{"wrong type", "stats_interval = true\n", "stats_interval", 1},
		{"zero shutdown", "shutdown_timeout = \"0s\"\n", "shutdown_timeout", 1},
		{"read buffer", "[capture]\n\nread_buffer = 12\n", "capture.read_buffer", 3},
		{"scope", "[capture]\nscope = \"tree\"\n", "capture.scope", 2},
		{"subtree max dirs", "[capture]\nsubtree_max_dirs = 0\n", "capture.subtree_max_dirs", 2},
		{"hash workers", "[enrich.hash]\nworkers = 0\n", "enrich.hash.workers", 2},
		{"log level", "[logging]\nlevel = \"loud\"\n", "logging.level", 2},
		{"log format", "[logging]\nformat = \"xml\"\n", "logging.format", 2},
		{"listen", "[metrics]\nlisten = \"9464\"\n", "metrics.listen", 2},
		{"policy second sink", "[[sinks]]\nname = \"a\"\ntype = \"stdout\"\n\n[[sinks]]\nname = \"b\"\ntype = \"file\"\nwhen_full = \"drop_all\"\n[sinks.file]\npath = \"/x\"\n", "sinks[1].when_full", 8},
		{"sink type", "[[sinks]]\nname = \"a\"\ntype = \"syslog\"\n", "sinks[0].type", 3},
		{"dup sink", "[[sinks]]\nname = \"a\"\ntype = \"stdout\"\n[[sinks]]\nname = \"a\"\ntype = \"file\"\n[sinks.file]\npath = \"/x\"\n", "sinks[1].name", 5},
		{"queue size", "[[sinks]]\nname = \"a\"\ntype = \"stdout\"\nqueue_size = 0\n", "sinks[0].queue_size", 4},
		{"file path", "[[sinks]]\nname = \"a\"\ntype = \"file\"\n[sinks.file]\npath = \"rel\"\n", "sinks[0].file.path", 5},
		{"stray sub-table", "[[sinks]]\nname = \"a\"\ntype = \"stdout\"\n[sinks.file]\npath = \"/x\"\n", "sinks[0].file", 4},
		{"syntax", "paths = [\"/a\"\n", "", 0},
	}
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
			if !strings.HasPrefix(msg, "config t.toml") {
				t.Errorf("message does not name the file: %q", msg)
			}
			if tc.wantKey != "" && !strings.Contains(ce.Key, tc.wantKey) {
				t.Errorf("key = %q, want %q (%s)", ce.Key, tc.wantKey, msg)
			}
			if tc.wantLine != 0 && ce.Line != tc.wantLine {
				t.Errorf("line = %d, want %d (%s)", ce.Line, tc.wantLine, msg)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	var ce *Error
	if !errors.As(err, &ce) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("got %v", err)
	}
}

// TestExampleDocumentsEveryKey keeps config.toml.example complete: it must
// decode cleanly, and every key of the effective config (for every sink
// type) must appear in it.
func TestExampleDocumentsEveryKey(t *testing.T) {
	name := filepath.Join("..", "..", "config.toml.example")
	src, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(name, src)
	if err != nil {
		t.Fatalf("example does not decode cleanly: %v", err)
	}
	types := map[string]bool{}
	for _, s := range c.Sinks {
		types[s.Type] = true
	}
	for _, typ := range []string{SinkStdout, SinkFile, SinkKafka} {
		if !types[typ] {
			t.Errorf("example has no %s sink, so its keys are undocumented", typ)
		}
	}
	full := Default()
	full.Sinks = []Sink{DefaultSink("s", SinkStdout), DefaultSink("f", SinkFile), DefaultSink("k", SinkKafka)}
	var eff bytes.Buffer
	if err := toml.NewEncoder(&eff).Encode(full); err != nil {
		t.Fatal(err)
	}
	want := flatKeys(t, eff.String())
	have := flatKeys(t, string(src))
	var missing []string
	for k := range want {
		if !have[k] {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("config.toml.example does not set these keys: %v", missing)
	}
}

func flatKeys(t *testing.T, src string) map[string]bool {
	t.Helper()
	var m map[string]any
	if _, err := toml.Decode(src, &m); err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				out[p] = true
				walk(p, c)
			}
		case []map[string]any:
			for _, e := range v {
				walk(prefix, e)
			}
		}
	}
	walk("", m)
	return out
}

func TestSinkErrorLineIsPerElement(t *testing.T) {
	src := "[[sinks]]\nname = \"a\"\ntype = \"stdout\"\nwhen_full = \"nope\"\n[[sinks]]\nname = \"b\"\ntype = \"file\"\nwhen_full = \"block\"\n[sinks.file]\npath = \"/x\"\n"
	_, err := Parse("t.toml", []byte(src))
	var ce *Error
	if !errors.As(err, &ce) || ce.Line != 4 || ce.Key != "sinks[0].when_full" {
		t.Fatalf("got %v", err)
	}
}

func TestKafkaSpoolPolicyFollowsSink(t *testing.T) {
	tests := []struct {
		name, extra, want string
	}{
		{"inherits", "", "drop_oldest"},
		{"own value", "when_full = \"block\"\n", "block"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := "[[sinks]]\nname = \"k\"\ntype = \"kafka\"\nwhen_full = \"drop_oldest\"\n[sinks.kafka]\nbrokers = [\"b:9092\"]\ntopic = \"t\"\n" + tc.extra
			c, err := Parse("t.toml", []byte(src))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Sinks[0].Kafka.WhenFull; got != tc.want {
				t.Errorf("kafka when_full = %q, want %q", got, tc.want)
			}
		})
	}
}
