package config

import (
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
