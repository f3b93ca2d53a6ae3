package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fanaudit/fanaudit/audit"
	"github.com/fanaudit/fanaudit/enrich"
	"github.com/fanaudit/fanaudit/sinks"
	"github.com/fanaudit/fanaudit/sinks/kafka"
)

// The stages' own counters are named here, one descriptor per metric with
// its help text, node_exporter style: the public name is written out, never
// derived from a Go field name, so renaming a field cannot rename (and
// silently break) a metric that dashboards and alert rules use. A test
// checks that every field of each stage's Stats is exported.

// Component is one stage's own counters (capture, enrichment, a file or
// Kafka sink), exported next to the pipeline's.
type Component struct {
	c prometheus.Collector
}

// field is one metric of a stage's Stats S.
type field[S any] struct {
	name, help string
	typ        prometheus.ValueType
	get        func(*S) float64
}

func counter[S any](name, help string, get func(*S) uint64) field[S] {
	return field[S]{name: name, help: help, typ: prometheus.CounterValue, get: func(s *S) float64 { return float64(get(s)) }}
}

func gauge[S any](name, help string, get func(*S) float64) field[S] {
	return field[S]{name: name, help: help, typ: prometheus.GaugeValue, get: get}
}

func seconds(d time.Duration) float64 { return d.Seconds() }

// statsCollector reads one Stats snapshot per scrape.
type statsCollector[S any] struct {
	stats  func() S
	fields []field[S]
	descs  []*prometheus.Desc
}

func newComponent[S any](stats func() S, labels prometheus.Labels, fields []field[S]) Component {
	c := &statsCollector[S]{stats: stats, fields: fields}
	for _, f := range fields {
		c.descs = append(c.descs, prometheus.NewDesc(f.name, f.help, nil, labels))
	}
	return Component{c: c}
}

func (c *statsCollector[S]) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *statsCollector[S]) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	for i, f := range c.fields {
		ch <- prometheus.MustNewConstMetric(c.descs[i], f.typ, f.get(&s))
	}
}

// Capture exports the capture stage's counters.
func Capture(stats func() audit.Stats) Component {
	type S = audit.Stats
	return newComponent(stats, nil, []field[S]{
		counter("fanaudit_capture_reads_total", "read(2) calls on the fanotify group that returned events.", func(s *S) uint64 { return s.Reads }),
		counter("fanaudit_capture_bytes_total", "Bytes read from the fanotify group.", func(s *S) uint64 { return s.Bytes }),
		counter("fanaudit_capture_kernel_events_total", "Kernel events decoded (a merged mask counts once).", func(s *S) uint64 { return s.KernelEvents }),
		counter("fanaudit_capture_emitted_total", "Events the capture handed on, events_lost included.", func(s *S) uint64 { return s.Emitted }),
		counter("fanaudit_capture_filtered_total", "Actions dropped by the capture: unwanted bookkeeping bits, out of scope, ignored paths.", func(s *S) uint64 { return s.Filtered }),
		counter("fanaudit_capture_self_total", "Actions dropped because the agent itself caused them.", func(s *S) uint64 { return s.Self }),
		counter("fanaudit_capture_overflows_total", "FAN_Q_OVERFLOW events: the kernel queue overflowed.", func(s *S) uint64 { return s.Overflows }),
		counter("fanaudit_capture_decode_errors_total", "Malformed kernel events or buffers: records lost, report a bug.", func(s *S) uint64 { return s.DecodeErrors }),
		counter("fanaudit_capture_resolve_failures_total", "Paths the capture could not resolve.", func(s *S) uint64 { return s.ResolveFailures }),
		counter("fanaudit_capture_inode_marks_total", "Directories put under inode marks (subtree scope).", func(s *S) uint64 { return s.InodeMarks }),
		counter("fanaudit_capture_mark_failures_total", "Inode marks the kernel refused.", func(s *S) uint64 { return s.MarkFailures }),
		counter("fanaudit_capture_scope_drops_total", "Kernel events dropped by their directory's cached out-of-scope verdict (also counted as filtered).", func(s *S) uint64 { return s.ScopeDrops }),
		counter("fanaudit_capture_unnamed_total", "File events handed on without a path (fanaudit.missing names file.path).", func(s *S) uint64 { return s.Unnamed }),
		counter("fanaudit_capture_unwatched_windows_total", "Directories that may have seen work before their inode mark or before their move into scope from an ignored directory was read (events_lost records with reason unwatched_window).", func(s *S) uint64 { return s.UnwatchedWindows }),
		gauge("fanaudit_capture_read_ahead_bytes", "Bytes of kernel events read ahead and waiting for the capture to process them ([capture] read_ahead).", func(s *S) float64 { return float64(s.ReadAhead) }),
		gauge("fanaudit_capture_read_ahead_peak_bytes", "The most bytes of kernel events that waited read ahead at once since the start: near read_ahead, a longer burst would overflow the kernel queue.", func(s *S) float64 { return float64(s.ReadAheadPeak) }),
		gauge("fanaudit_capture_ignore_marks", "Out-of-scope directories whose events the kernel drops now (in-kernel ignore marks under a filesystem mark).", func(s *S) float64 { return float64(s.IgnoreMarks) }),
	})
}

// Enrich exports the enrichment stage's counters.
func Enrich(stats func() enrich.Stats) Component {
	type S = enrich.Stats
	return newComponent(stats, nil, []field[S]{
		counter("fanaudit_enrich_events_total", "Events turned into records.", func(s *S) uint64 { return s.Events }),
		counter("fanaudit_enrich_full_total", "Records with fanaudit.enrichment full.", func(s *S) uint64 { return s.Full }),
		counter("fanaudit_enrich_partial_total", "Records with fanaudit.enrichment partial.", func(s *S) uint64 { return s.Partial }),
		counter("fanaudit_enrich_lost_total", "events_lost records passed through enrichment.", func(s *S) uint64 { return s.Lost }),
		counter("fanaudit_enrich_cache_hits_total", "Process cache hits.", func(s *S) uint64 { return s.CacheHits }),
		counter("fanaudit_enrich_cache_misses_total", "Process cache misses.", func(s *S) uint64 { return s.CacheMisses }),
		counter("fanaudit_enrich_cache_evictions_total", "Process cache evictions.", func(s *S) uint64 { return s.CacheEvictions }),
		gauge("fanaudit_enrich_cache_entries", "Processes in the cache.", func(s *S) float64 { return float64(s.CacheEntries) }),
		counter("fanaudit_enrich_proc_gone_total", "Processes gone before /proc could be read, with nothing cached.", func(s *S) uint64 { return s.ProcGone }),
		counter("fanaudit_enrich_proc_gone_hits_total", "Processes gone from /proc whose cached identity was used.", func(s *S) uint64 { return s.ProcGoneHits }),
		counter("fanaudit_enrich_execs_total", "Exec events that set an executable.", func(s *S) uint64 { return s.Execs }),
		counter("fanaudit_enrich_late_reads_total", "/proc reads in enrichment because the capture did not see the pid early.", func(s *S) uint64 { return s.LateReads }),
		counter("fanaudit_enrich_lineage_hits_total", "Credentials taken from the proc connector for processes gone from /proc.", func(s *S) uint64 { return s.LineageHits }),
		counter("fanaudit_enrich_lineage_lost_total", "Proc connector overflows.", func(s *S) uint64 { return s.LineageLost }),
		counter("fanaudit_enrich_stat_errors_total", "File stats that failed.", func(s *S) uint64 { return s.StatErrors }),
		counter("fanaudit_enrich_hash_done_total", "Files hashed.", func(s *S) uint64 { return s.HashDone }),
		counter("fanaudit_enrich_hash_skipped_size_total", "Files not hashed: above enrich.hash.max_size.", func(s *S) uint64 { return s.HashSkippedSize }),
		counter("fanaudit_enrich_hash_skipped_budget_total", "Files not hashed: the I/O budget was spent.", func(s *S) uint64 { return s.HashSkippedBudget }),
		counter("fanaudit_enrich_hash_unavailable_total", "Files not hashed: no file to read.", func(s *S) uint64 { return s.HashUnavailable }),
		counter("fanaudit_enrich_hash_errors_total", "Files whose hashing failed.", func(s *S) uint64 { return s.HashErrors }),
	})
}

// FileSink exports a file sink's counters, labelled with the sink's name.
func FileSink(sink string, stats func() sinks.FileStats) Component {
	type S = sinks.FileStats
	return newComponent(stats, prometheus.Labels{"sink": sink}, []field[S]{
		counter("fanaudit_file_lines_total", "Lines the file sink wrote (and synced, for fsync = always).", func(s *S) uint64 { return s.Lines }),
		counter("fanaudit_file_bytes_total", "Bytes the file sink wrote.", func(s *S) uint64 { return s.Bytes }),
		counter("fanaudit_file_rotations_total", "Rotations of the file sink's output.", func(s *S) uint64 { return s.Rotations }),
		counter("fanaudit_file_write_errors_total", "Failed write, open or rotate attempts of the file sink (it keeps the records and retries).", func(s *S) uint64 { return s.WriteErrors }),
		counter("fanaudit_file_sync_errors_total", "Failed fsyncs of the file sink's output.", func(s *S) uint64 { return s.SyncErrors }),
		counter("fanaudit_file_syncs_total", "Successful fsyncs of the file sink's output.", func(s *S) uint64 { return s.Syncs }),
	})
}

// KafkaSink exports a Kafka sink's counters, labelled with the sink's name.
func KafkaSink(sink string, stats func() kafka.Stats) Component {
	type S = kafka.Stats
	return newComponent(stats, prometheus.Labels{"sink": sink}, []field[S]{
		counter("fanaudit_kafka_acked_total", "Records the broker acknowledged on the direct path.", func(s *S) uint64 { return s.Acked }),
		counter("fanaudit_kafka_spooled_total", "Records written to the spool.", func(s *S) uint64 { return s.Spooled }),
		counter("fanaudit_kafka_replayed_total", "Spooled records the broker acknowledged.", func(s *S) uint64 { return s.Replayed }),
		counter("fanaudit_kafka_dead_lettered_total", "Records the broker can never take, written to the dead-letter file.", func(s *S) uint64 { return s.DeadLettered }),
		counter("fanaudit_kafka_replay_dead_total", "Of the dead-lettered records, those rejected on replay from the spool.", func(s *S) uint64 { return s.ReplayDead }),
		counter("fanaudit_kafka_retries_total", "Failed send attempts that were retried.", func(s *S) uint64 { return s.Retries }),
		counter("fanaudit_kafka_memory_retried_total", "Records of direct batches that failed after later batches were spooled, retried from memory ahead of them.", func(s *S) uint64 { return s.MemoryRetried }),
		counter("fanaudit_kafka_spool_rejected_total", "Records a full spool refused (when_full = drop_newest).", func(s *S) uint64 { return s.SpoolRejected }),
		counter("fanaudit_kafka_spool_dropped_total", "Spooled records discarded by when_full = drop_oldest.", func(s *S) uint64 { return s.SpoolDropped }),
		counter("fanaudit_kafka_spool_corrupt_total", "Spooled records unreadable on replay.", func(s *S) uint64 { return s.SpoolCorrupt }),
		gauge("fanaudit_kafka_spool_pending", "Spooled records not yet acknowledged.", func(s *S) float64 { return float64(s.SpoolPending) }),
		counter("fanaudit_kafka_handed_off_total", "Records handed on to a later run in the spool at a stop.", func(s *S) uint64 { return s.HandedOff }),
		counter("fanaudit_kafka_lost_earlier_total", "Records of earlier runs this sink lost in this run.", func(s *S) uint64 { return s.LostEarlier }),
		gauge("fanaudit_kafka_spool_bytes", "Bytes in the spool.", func(s *S) float64 { return float64(s.SpoolBytes) }),
		gauge("fanaudit_kafka_ack_p50_seconds", "Median time from taking a batch to the broker's ack, direct path, last 65536 batches.", func(s *S) float64 { return seconds(s.AckP50) }),
		gauge("fanaudit_kafka_ack_p99_seconds", "99th percentile time from taking a batch to the broker's ack, direct path, last 65536 batches.", func(s *S) float64 { return seconds(s.AckP99) }),
	})
}
