package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/fanaudit/fanaudit/sinks"
	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// Config is the [[sinks]] type = "kafka" table. Durations are Go duration
// strings in TOML ("20ms"); BurntSushi/toml decodes them into Duration via
// encoding.TextUnmarshaler.
type Config struct {
	Brokers []string `toml:"brokers"`
	Topic   string   `toml:"topic"`
	// CreateTopics asks the broker to create a missing topic (a broker
	// with auto.create.topics.enable does). When the topic is missing and
	// not created, that is an outage: records are spooled and retried.
	CreateTopics bool `toml:"create_topics"`
	// Key selects the message key: "host_id" (one partition per host, so a
	// host's events stay ordered), "path" or "none".
	Key          string `toml:"key"`
	RequiredAcks string `toml:"required_acks"` // all | one | none
	// AllowLossy must be set to accept required_acks weaker than "all",
	// because those lose acknowledged events when a leader fails.
	AllowLossy      bool     `toml:"allow_lossy"`
	Compression     string   `toml:"compression"` // zstd | lz4 | snappy | gzip | none
	BatchSize       int      `toml:"batch_size"`
	BatchBytes      int64    `toml:"batch_bytes"`
	BatchTimeout    Duration `toml:"batch_timeout"`
	MaxInFlightByte int64    `toml:"max_in_flight_bytes"`
	// MaxMessageBytes is the largest single message sent; larger ones are
	// dead-lettered without asking the broker. Keep it at or below the
	// broker's message.max.bytes.
	MaxMessageBytes int64    `toml:"max_message_bytes"`
	WriteTimeout    Duration `toml:"write_timeout"`
	ClientID        string   `toml:"client_id"`
	TLS             TLS      `toml:"tls"`
	SASL            SASL     `toml:"sasl"`
	Spool           Spool    `toml:"spool"`
	DeadLetterFile  string   `toml:"dead_letter_file"`
	// WhenFull is the sink's when_full policy, applied when the spool
	// reaches spool.max_bytes: block, drop_newest or drop_oldest.
	WhenFull string `toml:"when_full"`
}

// TLS configures the client side of TLS.
type TLS struct {
	Enabled            bool   `toml:"enabled"`
	CAFile             string `toml:"ca_file"`
	CertFile           string `toml:"cert_file"`
	KeyFile            string `toml:"key_file"`
	ServerName         string `toml:"server_name"`
	InsecureSkipVerify bool   `toml:"insecure_skip_verify"`
}

// SASL configures authentication. The password comes from a file or an
// environment variable so that it never sits in the config file.
type SASL struct {
	Mechanism    string `toml:"mechanism"` // "" | plain | scram-sha-256 | scram-sha-512
	Username     string `toml:"username"`
	PasswordFile string `toml:"password_file"`
	PasswordEnv  string `toml:"password_env"`
}

// Spool configures the on-disk outage spool. An empty Dir disables it; the
// sink then keeps undeliverable batches in memory (bounded by
// max_in_flight_bytes) and retries them.
type Spool struct {
	Dir           string          `toml:"dir"`
	MaxBytes      int64           `toml:"max_bytes"`
	SegmentBytes  int64           `toml:"segment_bytes"`
	Fsync         sinks.FsyncMode `toml:"fsync"` // never | interval | always, as the file sink's
	FsyncInterval Duration        `toml:"fsync_interval"`
}

// Duration is a time.Duration that reads and prints as "20ms".
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("parse duration %q: %w", b, err)
	}
	d.Duration = v
	return nil
}

// MarshalText prints the duration in Go syntax.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Defaults returns the configuration used for keys the user leaves out.
// batch_timeout is short because kafka-go's own 1 s default adds a second
// of latency to every quiet-period event.
func Defaults() Config {
	return Config{
		CreateTopics:    true,
		Key:             "host_id",
		RequiredAcks:    "all",
		Compression:     "zstd",
		BatchSize:       1000,
		BatchBytes:      1 << 20,
		BatchTimeout:    Duration{20 * time.Millisecond},
		MaxInFlightByte: 16 << 20,
		MaxMessageBytes: 1000000,
		WriteTimeout:    Duration{10 * time.Second},
		ClientID:        "fanaudit",
		Spool: Spool{
			MaxBytes:      1 << 30,
			SegmentBytes:  16 << 20,
			Fsync:         sinks.FsyncInterval,
			FsyncInterval: Duration{time.Second},
		},
		WhenFull: "block",
	}
}

// Validate checks every key and names the offending one in the error.
func (c Config) Validate() error {
	if len(c.Brokers) == 0 {
		return keyErr("brokers", "at least one broker address is required")
	}
	for _, b := range c.Brokers {
		if b == "" || !strings.Contains(b, ":") {
			return keyErr("brokers", "%q is not host:port", b)
		}
	}
	if c.Topic == "" {
		return keyErr("topic", "required")
	}
	switch c.Key {
	case "host_id", "path", "none":
	default:
		return keyErr("key", "%q is not one of host_id, path, none", c.Key)
	}
	switch c.RequiredAcks {
	case "all":
	case "one", "none":
		if !c.AllowLossy {
			return keyErr("required_acks", "%q can lose acknowledged events; set allow_lossy = true to accept that", c.RequiredAcks)
		}
	default:
		return keyErr("required_acks", "%q is not one of all, one, none", c.RequiredAcks)
	}
	if _, err := compressionCodec(c.Compression); err != nil {
		return err
	}
	if c.BatchSize < 1 {
		return keyErr("batch_size", "%d must be at least 1", c.BatchSize)
	}
	if c.MaxMessageBytes < 1024 {
		return keyErr("max_message_bytes", "%d must be at least 1024", c.MaxMessageBytes)
	}
	if c.BatchBytes < c.MaxMessageBytes {
		return keyErr("batch_bytes", "%d must be at least max_message_bytes (%d)", c.BatchBytes, c.MaxMessageBytes)
	}
	if c.BatchTimeout.Duration <= 0 {
		return keyErr("batch_timeout", "%s must be positive", c.BatchTimeout.Duration)
	}
	if c.MaxInFlightByte < c.BatchBytes {
		return keyErr("max_in_flight_bytes", "%d must be at least batch_bytes (%d)", c.MaxInFlightByte, c.BatchBytes)
	}
	if c.WriteTimeout.Duration <= 0 {
		return keyErr("write_timeout", "%s must be positive", c.WriteTimeout.Duration)
	}
	if _, err := sinks.ParsePolicy(c.WhenFull); err != nil {
		return keyErr("when_full", "%w", err)
	}
	if err := c.TLS.validate(); err != nil {
		return err
	}
	if err := c.SASL.validate(); err != nil {
		return err
	}
	return c.Spool.validate(c.MaxMessageBytes)
}

func (t TLS) validate() error {
	if !t.Enabled {
		if t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" {
			return keyErr("tls.enabled", "files are set but tls.enabled is false")
		}
		return nil
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return keyErr("tls.cert_file", "cert_file and key_file must be set together")
	}
	return nil
}

func (s SASL) validate() error {
	switch s.Mechanism {
	case "":
		return nil
	case "plain", "scram-sha-256", "scram-sha-512":
	default:
		return keyErr("sasl.mechanism", "%q is not one of plain, scram-sha-256, scram-sha-512", s.Mechanism)
	}
	if s.Username == "" {
		return keyErr("sasl.username", "required with sasl.mechanism")
	}
	if (s.PasswordFile == "") == (s.PasswordEnv == "") {
		return keyErr("sasl.password_file", "set exactly one of password_file and password_env")
	}
	return nil
}

func (s Spool) validate(maxMsg int64) error {
	if s.Dir == "" {
		return nil
	}
	if s.SegmentBytes < maxMsg+recordOverhead {
		return keyErr("spool.segment_bytes", "%d must hold one max_message_bytes record (%d)", s.SegmentBytes, maxMsg+recordOverhead)
	}
	if s.MaxBytes < 2*s.SegmentBytes {
		return keyErr("spool.max_bytes", "%d must be at least two segments (%d)", s.MaxBytes, 2*s.SegmentBytes)
	}
	switch s.Fsync {
	case sinks.FsyncNever, sinks.FsyncAlways:
	case sinks.FsyncInterval:
		if s.FsyncInterval.Duration <= 0 {
			return keyErr("spool.fsync_interval", "%s must be positive", s.FsyncInterval.Duration)
		}
	default:
		return keyErr("spool.fsync", "%q is not one of never, interval, always", s.Fsync)
	}
	return nil
}

func compressionCodec(name string) (kafkago.Compression, error) {
	switch name {
	case "zstd":
		return kafkago.Zstd, nil
	case "lz4":
		return kafkago.Lz4, nil
	case "snappy":
		return kafkago.Snappy, nil
	case "gzip":
		return kafkago.Gzip, nil
	case "none":
		return 0, nil
	}
	return 0, keyErr("compression", "%q is not one of zstd, lz4, snappy, gzip, none", name)
}

// keyErr is a validation error naming the key, relative to the sink's
// table, so that the command line can name the config key and its line.
func keyErr(key, format string, a ...any) error {
	return &sinks.OptionError{Key: key, Err: fmt.Errorf(format, a...)}
}

func requiredAcks(name string) kafkago.RequiredAcks {
	switch name {
	case "one":
		return kafkago.RequireOne
	case "none":
		return kafkago.RequireNone
	}
	return kafkago.RequireAll
}

// tlsConfig builds the client TLS configuration, nil when TLS is off.
func (t TLS) tlsConfig() (*tls.Config, error) {
	if !t.Enabled {
		return nil, nil
	}
	tc := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // explicit user choice, documented as unsafe
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file: %s holds no PEM certificate", t.CAFile)
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file: load key pair: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// transport is a kafka-go transport with the config's client id, TLS and
// SASL: what the sink writes with and `verify` reads a topic with. The
// caller sets the timeouts.
func (c Config) transport() (*kafkago.Transport, error) {
	tlsCfg, err := c.TLS.tlsConfig()
	if err != nil {
		return nil, err
	}
	mech, err := c.SASL.mechanism()
	if err != nil {
		return nil, err
	}
	return &kafkago.Transport{ClientID: c.ClientID, TLS: tlsCfg, SASL: mech}, nil
}

// mechanism builds the SASL mechanism, nil when SASL is off. The password
// is read here, once, and only ever handed to kafka-go.
func (s SASL) mechanism() (sasl.Mechanism, error) {
	if s.Mechanism == "" {
		return nil, nil
	}
	var pw string
	if s.PasswordFile != "" {
		b, err := os.ReadFile(s.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("sasl.password_file: %w", err)
		}
		pw = strings.TrimRight(string(b), "\r\n")
	} else {
		v, ok := os.LookupEnv(s.PasswordEnv)
		if !ok {
			return nil, fmt.Errorf("sasl.password_env: environment variable %s is not set", s.PasswordEnv)
		}
		pw = v
	}
	if pw == "" {
		return nil, errors.New("sasl.password_file: the password is empty")
	}
	switch s.Mechanism {
	case "plain":
		return plain.Mechanism{Username: s.Username, Password: pw}, nil
	case "scram-sha-256":
		m, err := scram.Mechanism(scram.SHA256, s.Username, pw)
		if err != nil {
			return nil, fmt.Errorf("sasl.mechanism: scram-sha-256: %w", err)
		}
		return m, nil
	default:
		m, err := scram.Mechanism(scram.SHA512, s.Username, pw)
		if err != nil {
			return nil, fmt.Errorf("sasl.mechanism: scram-sha-512: %w", err)
		}
		return m, nil
	}
}
