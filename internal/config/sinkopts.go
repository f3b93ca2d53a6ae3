package config

import (
	"strings"

	"github.com/fanaudit/fanaudit/sinks"
	"github.com/fanaudit/fanaudit/sinks/kafka"
)

// The type-specific sink options belong to the sink packages, which own
// their keys, defaults and validation; the config embeds them as
// `[sinks.file]` and `[sinks.kafka]`.
type (
	// FileOptions is `[sinks.file]`.
	FileOptions = sinks.FileOptions
	// KafkaOptions is `[sinks.kafka]`.
	KafkaOptions = kafka.Config
)

func defaultFileOptions() *FileOptions {
	o := sinks.DefaultFileOptions()
	return &o
}

func defaultKafkaOptions() *KafkaOptions {
	o := kafka.Defaults()
	return &o
}

// sinkOutputPaths lists the files and directories a sink writes, so the
// capture can ignore them and the agent never audits its own output.
func sinkOutputPaths(s *Sink) []string {
	var out []string
	if s.File != nil && s.File.Path != "" {
		out = append(out, s.File.Path)
	}
	if s.Kafka != nil {
		if s.Kafka.Spool.Dir != "" {
			out = append(out, s.Kafka.Spool.Dir)
		}
		if s.Kafka.DeadLetterFile != "" {
			out = append(out, s.Kafka.DeadLetterFile)
		}
	}
	return out
}

// sinkOutputGlobs covers the files a sink derives from its output file
// (the file sink's rotated Path.TIMESTAMP[.gz] and their temporaries), as
// exclude globs: IgnorePaths only covers a path and what is below it.
func sinkOutputGlobs(s *Sink) []string {
	var out []string
	if s.File != nil && s.File.Path != "" {
		out = append(out, escapeGlob(s.File.Path)+".*")
	}
	if s.Kafka != nil && s.Kafka.DeadLetterFile != "" {
		out = append(out, escapeGlob(s.Kafka.DeadLetterFile)+".*")
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
