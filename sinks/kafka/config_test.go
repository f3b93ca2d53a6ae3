package kafka

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/rs/zerolog"
)

func TestValidate(t *testing.T) {
	base := func() Config {
		c := Defaults()
		c.Brokers = []string{"127.0.0.1:9092"}
		c.Topic = "audit"
		return c
	}
	tests := []struct {
		name    string
		mod     func(c *Config)
		wantKey string // "" = valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"no brokers", func(c *Config) { c.Brokers = nil }, "brokers"},
		{"broker without port", func(c *Config) { c.Brokers = []string{"kafka"} }, "brokers"},
		{"no topic", func(c *Config) { c.Topic = "" }, "topic"},
		{"bad key", func(c *Config) { c.Key = "pid" }, "key"},
		{"acks one without allow_lossy", func(c *Config) { c.RequiredAcks = "one" }, "required_acks"},
		{"acks none with allow_lossy", func(c *Config) { c.RequiredAcks = "none"; c.AllowLossy = true }, ""},
		{"bad acks", func(c *Config) { c.RequiredAcks = "2" }, "required_acks"},
		{"bad compression", func(c *Config) { c.Compression = "brotli" }, "compression"},
		{"zero batch", func(c *Config) { c.BatchSize = 0 }, "batch_size"},
		{"zero timeout", func(c *Config) { c.BatchTimeout = Duration{} }, "batch_timeout"},
		{"window below batch", func(c *Config) { c.MaxInFlightByte = 1 }, "max_in_flight_bytes"},
		{"batch below message", func(c *Config) { c.BatchBytes = 10000 }, "batch_bytes"},
		{"bad when_full", func(c *Config) { c.WhenFull = "panic" }, "when_full"},
		{"tls files while disabled", func(c *Config) { c.TLS.CAFile = "/ca.pem" }, "tls.enabled"},
		{"cert without key", func(c *Config) { c.TLS = TLS{Enabled: true, CertFile: "/c.pem"} }, "tls.cert_file"},
		{"bad mechanism", func(c *Config) { c.SASL = SASL{Mechanism: "gssapi", Username: "u", PasswordEnv: "P"} }, "sasl.mechanism"},
		{"sasl no user", func(c *Config) { c.SASL = SASL{Mechanism: "plain", PasswordEnv: "P"} }, "sasl.username"},
		{"sasl two passwords", func(c *Config) {
			c.SASL = SASL{Mechanism: "plain", Username: "u", PasswordEnv: "P", PasswordFile: "/p"}
		}, "sasl.password_file"},
		{"sasl no password", func(c *Config) { c.SASL = SASL{Mechanism: "scram-sha-256", Username: "u"} }, "sasl.password_file"},
		{"spool tiny segment", func(c *Config) { c.Spool.Dir = "/s"; c.Spool.SegmentBytes = 100 }, "spool.segment_bytes"},
		{"spool tiny cap", func(c *Config) { c.Spool.Dir = "/s"; c.Spool.MaxBytes = c.Spool.SegmentBytes }, "spool.max_bytes"},
		{"spool bad fsync", func(c *Config) { c.Spool.Dir = "/s"; c.Spool.Fsync = "sometimes" }, "spool.fsync"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.mod(&c)
			err := c.Validate()
			switch {
			case tt.wantKey == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantKey != "" && err == nil:
				t.Fatalf("no error, want one naming %s", tt.wantKey)
			case tt.wantKey != "" && !strings.HasPrefix(err.Error(), tt.wantKey+":"):
				t.Fatalf("error %q does not start with the key %q", err, tt.wantKey)
			}
		})
	}
}

func TestDecodeTOML(t *testing.T) {
	const doc = `
brokers = ["127.0.0.1:9092", "127.0.0.1:9093"]
topic = "fanaudit"
key = "path"
compression = "lz4"
batch_timeout = "5ms"
write_timeout = "3s"
[tls]
enabled = true
server_name = "kafka.internal"
[sasl]
mechanism = "scram-sha-512"
username = "agent"
password_env = "KAFKA_PASSWORD"
[spool]
dir = "/var/lib/fanaudit/spool"
fsync = "always"
`
	c := Defaults()
	md, err := toml.Decode(doc, &c)
	if err != nil {
		t.Fatal(err)
	}
	if u := md.Undecoded(); len(u) != 0 {
		t.Fatalf("undecoded keys %v", u)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.BatchTimeout.Duration != 5*time.Millisecond || c.WriteTimeout.Duration != 3*time.Second || c.Key != "path" ||
		c.SASL.PasswordEnv != "KAFKA_PASSWORD" || c.Spool.Fsync != "always" || c.Spool.MaxBytes != Defaults().Spool.MaxBytes {
		t.Fatalf("decoded %+v", c)
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		mod     func(c *Config)
		wantKey string
	}{
		{"missing ca file", func(c *Config) { c.TLS = TLS{Enabled: true, CAFile: filepath.Join(dir, "nope.pem")} }, "tls.ca_file"},
		{"ca file without pem", func(c *Config) { c.TLS = TLS{Enabled: true, CAFile: empty} }, "tls.ca_file"},
		{"missing password env", func(c *Config) {
			c.SASL = SASL{Mechanism: "plain", Username: "u", PasswordEnv: "FANAUDIT_TEST_UNSET_VARIABLE"}
		}, "sasl.password_env"},
		{"empty password file", func(c *Config) { c.SASL = SASL{Mechanism: "plain", Username: "u", PasswordFile: empty} }, "sasl.password_file"},
		// A missing directory is created (0700); one that is a file is an error.
		{"dead letter dir not a dir", func(c *Config) { c.DeadLetterFile = filepath.Join(empty, "dead.jsonl") }, "dead_letter_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Defaults()
			c.Brokers, c.Topic = []string{"127.0.0.1:1"}, "t"
			tt.mod(&c)
			_, err := New(c, testHost, "r", zerolog.Nop())
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantKey+":") {
				t.Fatalf("New: %v, want an error naming %s", err, tt.wantKey)
			}
		})
	}
}
