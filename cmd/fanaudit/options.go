package main

// The mapping from the config's plain data to each stage's options. The
// config package knows no stage; this file is the one place that knows
// both, so a key a stage rejects is still reported as a config error
// naming the key and its line.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/enrich"
	"github.com/fanaudit/fanaudit/internal/config"
	"github.com/fanaudit/fanaudit/internal/record"
	"github.com/fanaudit/fanaudit/sinks"
	"github.com/fanaudit/fanaudit/sinks/kafka"
)

// sinkOptions is one configured sink mapped to its stage's options.
type sinkOptions struct {
	Name      string
	Type      string
	Policy    sinks.Policy
	QueueSize int
	Format    record.Format
	File      sinks.FileOptions // Type file
	Kafka     kafka.Config      // Type kafka
}

// checkOptions maps the whole config to the stages' options and has each
// stage validate its own, so that check-config and run reject the same
// configs. Its errors are config errors naming the key and line.
func checkOptions(cfg *config.Config, source string) error {
	_, err := sinkOptionsOf(cfg, source)
	return err
}

// sinkOptionsOf maps every configured sink, validated by its package.
func sinkOptionsOf(cfg *config.Config, source string) ([]sinkOptions, error) {
	out := make([]sinkOptions, 0, len(cfg.Sinks))
	for i := range cfg.Sinks {
		s := &cfg.Sinks[i]
		key := "sinks." + strconv.Itoa(i)
		so := sinkOptions{Name: s.Name, Type: s.Type, QueueSize: s.QueueSize}
		p, err := sinks.ParsePolicy(s.WhenFull)
		if err != nil {
			return nil, cfg.KeyError(source, key+".when_full", err)
		}
		so.Policy = p
		if s.Format != "" {
			// config allows ecs and ocsf; text is watch's (--format text).
			f, ok := record.ParseFormat(s.Format)
			if !ok {
				return nil, cfg.KeyError(source, key+".format", fmt.Errorf("unknown format %q (want ecs or ocsf)", s.Format))
			}
			so.Format = f
		}
		switch s.Type {
		case config.SinkFile:
			so.File = fileOptions(s.File)
			if err := so.File.Validate(); err != nil {
				return nil, stageError(cfg, source, key+".file", err)
			}
		case config.SinkKafka:
			so.Kafka = kafkaConfig(s.Kafka)
			if err := so.Kafka.Validate(); err != nil {
				// kafka's own checks beyond the config's (a spool segment
				// must hold one message plus its framing).
				return nil, stageError(cfg, source, key+".kafka", err)
			}
		}
		out = append(out, so)
	}
	return out, nil
}

// stageError names the key a sink package rejected (its
// *sinks.OptionError says which, relative to the sink's table), else the
// table itself.
func stageError(cfg *config.Config, source, table string, err error) error {
	var oe *sinks.OptionError
	if errors.As(err, &oe) {
		return cfg.KeyError(source, table+"."+oe.Key, oe.Err)
	}
	return cfg.KeyError(source, table, err)
}

func fileOptions(f *config.FileSink) sinks.FileOptions {
	return sinks.FileOptions{
		Path:          f.Path,
		FileMode:      sinks.Perm(f.FileMode),
		DirMode:       sinks.Perm(f.DirMode),
		MaxSizeMB:     f.MaxSizeMB,
		MaxAge:        f.MaxAge.Duration,
		MaxBackups:    f.MaxBackups,
		Compress:      f.Compress,
		Fsync:         sinks.FsyncMode(f.Fsync),
		FsyncInterval: f.FsyncInterval.Duration,
	}
}

// kafkaConfig maps [sinks.kafka].
func kafkaConfig(k *config.KafkaSink) kafka.Config {
	return kafka.Config{
		Brokers:         append([]string(nil), k.Brokers...),
		Topic:           k.Topic,
		CreateTopics:    k.CreateTopics,
		Key:             k.Key,
		RequiredAcks:    k.RequiredAcks,
		AllowLossy:      k.AllowLossy,
		Compression:     k.Compression,
		BatchSize:       k.BatchSize,
		BatchBytes:      k.BatchBytes,
		BatchTimeout:    kafka.Duration{Duration: k.BatchTimeout.Duration},
		MaxInFlightByte: k.MaxInFlightBytes,
		MaxMessageBytes: k.MaxMessageBytes,
		WriteTimeout:    kafka.Duration{Duration: k.WriteTimeout.Duration},
		ClientID:        k.ClientID,
		TLS: kafka.TLS{
			Enabled:            k.TLS.Enabled,
			CAFile:             k.TLS.CAFile,
			CertFile:           k.TLS.CertFile,
			KeyFile:            k.TLS.KeyFile,
			ServerName:         k.TLS.ServerName,
			InsecureSkipVerify: k.TLS.InsecureSkipVerify,
		},
		SASL: kafka.SASL{
			Mechanism:    k.SASL.Mechanism,
			Username:     k.SASL.Username,
			PasswordFile: k.SASL.PasswordFile,
			PasswordEnv:  k.SASL.PasswordEnv,
		},
		Spool: kafka.Spool{
			Dir:           k.Spool.Dir,
			MaxBytes:      k.Spool.MaxBytes,
			SegmentBytes:  k.Spool.SegmentBytes,
			Fsync:         sinks.FsyncMode(k.Spool.Fsync),
			FsyncInterval: kafka.Duration{Duration: k.Spool.FsyncInterval.Duration},
		},
		DeadLetterFile: k.DeadLetterFile,
		WhenFull:       k.WhenFull,
	}
}

// maxCredentialFile bounds how much of a CA, certificate or key file is
// read while checking it.
const maxCredentialFile = 1 << 20

// checkFiles checks, before `run` sets anything up, the files the config
// only names: a missing password, CA, certificate or key file is a config
// error naming its key (exit 2), not a failure at sink start. check-config
// does not do this, because a config is often checked on another machine
// than the one it runs on (a build, a ConfigMap).
func checkFiles(cfg *config.Config, source string) error {
	for i := range cfg.Sinks {
		k := cfg.Sinks[i].Kafka
		if cfg.Sinks[i].Type != config.SinkKafka || k == nil {
			continue
		}
		key := "sinks." + strconv.Itoa(i) + "."
		if k.SASL.Mechanism != "" {
			if _, err := k.SASL.Password(os.LookupEnv); err != nil {
				return cfg.KeyError(source, key+k.SASL.PasswordKey(), err)
			}
		}
		if !k.TLS.Enabled {
			continue
		}
		if k.TLS.CAFile != "" {
			pem, err := readFile(k.TLS.CAFile)
			if err != nil {
				return cfg.KeyError(source, key+"kafka.tls.ca_file", err)
			}
			if !x509.NewCertPool().AppendCertsFromPEM(pem) {
				return cfg.KeyError(source, key+"kafka.tls.ca_file", fmt.Errorf("%s holds no PEM certificate", k.TLS.CAFile))
			}
		}
		if k.TLS.CertFile != "" {
			for _, f := range []struct{ key, path string }{{"cert_file", k.TLS.CertFile}, {"key_file", k.TLS.KeyFile}} {
				if _, err := readFile(f.path); err != nil {
					return cfg.KeyError(source, key+"kafka.tls."+f.key, err)
				}
			}
			if _, err := tls.LoadX509KeyPair(k.TLS.CertFile, k.TLS.KeyFile); err != nil {
				return cfg.KeyError(source, key+"kafka.tls.cert_file", fmt.Errorf("certificate and key do not load: %w", err))
			}
		}
	}
	return nil
}

// readFile reads a small credential file; its error names the file.
func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || st.Size() > maxCredentialFile {
		return nil, fmt.Errorf("%s is not a regular file of at most %d bytes", name, maxCredentialFile)
	}
	b := make([]byte, st.Size())
	_, err = f.ReadAt(b, 0)
	return b, err
}

// warnConfig logs, once at start, what the config allows but should not.
func warnConfig(cfg *config.Config, log zerolog.Logger) {
	for _, s := range cfg.Sinks {
		if k := s.Kafka; s.Type == config.SinkKafka && k != nil && k.SASL.Mechanism == "plain" && !k.TLS.Enabled {
			log.Warn().Str("sink", s.Name).Msg("kafka sink: SASL PLAIN without TLS sends the password in clear text; set [sinks.kafka.tls] enabled = true")
		}
	}
}

// eventActions maps `events` to record actions; config has checked them.
func eventActions(cfg *config.Config) []record.Action {
	out := make([]record.Action, 0, len(cfg.Events))
	for _, e := range cfg.Events {
		if a, ok := record.ParseAction(e); ok {
			out = append(out, a)
		}
	}
	return out
}

// outputGlobs covers the files sinks derive from their output files (a
// file sink's rotated PATH.TIMESTAMP[.gz] and their temporaries, a dead
// letter file's rotations) as the capture's IgnoreNames: IgnorePaths only
// covers a path and what is below it. They match those files alone, not
// what is below a directory someone else gave such a name.
func outputGlobs(cfg *config.Config) []string {
	var out []string
	for _, s := range cfg.Sinks {
		if s.Type == config.SinkFile && s.File != nil && s.File.Path != "" {
			out = append(out, escapeGlob(s.File.Path)+".*")
		}
		if s.Type == config.SinkKafka && s.Kafka != nil && s.Kafka.DeadLetterFile != "" {
			out = append(out, escapeGlob(s.Kafka.DeadLetterFile)+".*")
		}
		if s.SealState != "" {
			// The state is replaced through .NAME.tmp-* beside it (safefile).
			dir, name := filepath.Split(s.SealState)
			out = append(out, escapeGlob(filepath.Join(dir, "."+name+".tmp-"))+"*")
		}
	}
	return out
}

// escapeGlob quotes filepath.Match's special characters.
func escapeGlob(p string) string {
	var b strings.Builder
	for _, c := range p {
		switch c {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// enrichOptions maps [enrich] to the enricher's options.
func enrichOptions(cfg *config.Config) enrich.Options {
	o := enrich.Defaults()
	e := cfg.Enrich
	o.ProcRoot = e.ProcRoot
	o.EtcRoot = e.EtcRoot
	o.NoProcConnector = !e.ProcConnector
	o.CacheSize = e.CacheSize
	o.CacheTTL = e.CacheTTL.Duration
	o.CmdlineMax = e.CmdlineMax
	o.PidFD = e.PidFD
	o.FileStat = e.FileStat
	o.Hash = enrich.HashOptions{
		Enabled:        e.Hash.Enabled,
		MaxSize:        e.Hash.MaxSize,
		BytesPerSecond: e.Hash.BytesPerSecond,
		Workers:        e.Hash.Workers,
	}
	return o
}
