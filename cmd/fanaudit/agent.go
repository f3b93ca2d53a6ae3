package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/audit"
	"github.com/fanaudit/fanaudit/enrich"
	"github.com/fanaudit/fanaudit/internal/config"
	"github.com/fanaudit/fanaudit/internal/kernel"
	"github.com/fanaudit/fanaudit/internal/metrics"
	"github.com/fanaudit/fanaudit/internal/pipeline"
	"github.com/fanaudit/fanaudit/internal/record"
	"github.com/fanaudit/fanaudit/internal/runstate"
	"github.com/fanaudit/fanaudit/internal/safefile"
	"github.com/fanaudit/fanaudit/sinks"
	"github.com/fanaudit/fanaudit/sinks/kafka"
)

// taskDir lists the agent's threads; autogroup is its session's
// scheduling group.
const (
	taskDir   = "/proc/self/task"
	autogroup = "/proc/self/autogroup"
)

// boostPriority raises every thread's scheduling priority by boost nice
// steps, as auditd's priority_boost does. In a burst the workload, the
// agent and (for a Kafka sink) a local broker compete for the cores; at
// the same priority the capture can fall far enough behind for the
// kernel's event queue to overflow. A boost that is not permitted costs a
// warning, not the run.
func boostPriority(boost int, log zerolog.Logger) {
	if boost == 0 {
		return
	}
	warn := func(err error) {
		log.Warn().Err(err).Int("priority_boost", boost).Msg("running at normal priority: a burst that fills every core may overflow the kernel's event queue sooner")
	}
	nice, err := kernel.BoostThreads(taskDir, boost)
	if err != nil {
		warn(err)
		return
	}
	// With autogroups (most distributions' kernels) a session is one
	// scheduling group, and the other sessions' tasks compete with it as a
	// whole: thread nice values only weigh inside it. A service (systemd
	// calls setsid) is alone in its session, so it raises the group too.
	// Started from a shell, the group is the shell's, workload included:
	// left alone.
	ev := log.Debug().Int("nice", nice)
	if kernel.SessionLeader() {
		group, err := kernel.AutogroupNice(autogroup)
		if err == nil {
			group = max(group-boost, -20)
			err = kernel.SetAutogroupNice(autogroup, group)
		}
		switch {
		case errors.Is(err, kernel.ErrNoAutogroup):
			// Nothing to raise: the session's tasks compete with
			// everything else one by one, or by cgroup.
		case err != nil:
			warn(err)
			return
		default:
			ev = ev.Int("autogroup_nice", group)
		}
	}
	ev.Msg("scheduling priority raised")
}

// runAgent builds every stage from cfg and runs them until ctx ends (a
// clean stop: nil) or one of them fails. source names the config in
// errors about its keys.
func runAgent(ctx context.Context, cfg *config.Config, log zerolog.Logger, stdout io.Writer, source string, setupDone func()) error {
	warnConfig(cfg, log)
	// Before any stage starts its goroutines: threads made later inherit
	// the nice value of the thread that makes them.
	boostPriority(cfg.PriorityBoost, log)
	if cfg.MemoryLimitMB > 0 {
		debug.SetMemoryLimit(int64(cfg.MemoryLimitMB) << 20)
	}
	enr, err := enrich.New(enrichOptions(cfg), log)
	if err != nil {
		if errors.Is(err, enrich.ErrOptions) {
			return wrapConfig(cfg.KeyError(source, "enrich", err))
		}
		return fmt.Errorf("enrich: %w", err)
	}
	// For a setup that fails below; after a run it is a no-op.
	defer enr.Close()
	capt, err := audit.New(audit.Options{
		Paths:          cfg.Paths,
		Include:        cfg.Include,
		Exclude:        cfg.Exclude,
		IgnorePaths:    cfg.OutputPaths(),
		IgnoreNames:    outputGlobs(cfg),
		Actions:        enrich.CaptureActions(eventActions(cfg)),
		UnlimitedQueue: cfg.Capture.UnlimitedQueue,
		ReadBuffer:     cfg.Capture.ReadBuffer,
		ReadAhead:      cfg.Capture.ReadAhead,
		BatchDelay:     cfg.Capture.BatchDelay.Duration,
		PidFD:          cfg.Enrich.PidFD,
		OpenForHash:    cfg.Enrich.Hash.Enabled,
		Observer:       enr,
		ExecPaths:      cfg.Capture.ExecPaths,
		Scope:          cfg.Capture.Scope,
		SubtreeMaxDirs: cfg.Capture.SubtreeMaxDirs,
		// 0 in the config turns them off; 0 in audit.Options is its default.
		OutOfScopeMarks: cmp.Or(cfg.Capture.OutOfScopeMarks, -1),
	}, log)
	if err != nil {
		if errors.Is(err, audit.ErrOptions) {
			if source == "watch" {
				return usagef("watch: PATH: %v", err)
			}
			return wrapConfig(cfg.KeyError(source, "paths", err))
		}
		return err // already says "capture: …"
	}
	defer capt.Close()
	// The capture reuses its Event slices once enrichment is done with them.
	enr.RecycleTo(capt.Recycle)

	runID, err := newRunID()
	if err != nil {
		return err
	}
	// watch writes to stdout only: when its reader goes away (`| head`), it
	// stops cleanly, like any filter. run goes on with its other sinks.
	var stopWatch func()
	if source == "watch" {
		ctx, stopWatch = context.WithCancel(ctx)
		defer stopWatch()
	}
	specs, sinkMetrics, closeSinks, err := buildSinks(cfg, source, enr.Host(), runID, stdout, stopWatch, log)
	if err != nil {
		return err
	}
	// The pipeline closes every sink after its Run; this is for a setup
	// that fails below (Close is idempotent).
	defer closeSinks()

	// The run marker: only the config-driven agent keeps one (watch is a
	// terminal tool and may run beside it).
	var marker *runstate.Marker
	var restart *record.Record
	if source != "watch" {
		var prev *runstate.Previous
		marker, prev, err = runstate.Begin(cfg.StateDir, "state_dir", runID, time.Now())
		var se *safefile.Error
		switch {
		case errors.As(err, &se):
			return wrapConfig(cfg.KeyError(source, "state_dir", fmt.Errorf("%s: %s", se.Path, se.Reason)))
		case err != nil:
			// A read-only or busy state directory costs the restart
			// record, not the audit trail.
			log.Error().Err(err).Msg("no run marker: an unclean stop of this run will not be announced by the next")
			marker, prev = nil, nil
		default:
			defer marker.Close()
		}
		if prev != nil {
			restart = restartRecord(prev, enr.Host())
			log.Warn().Str("previous_run_id", prev.RunID).Msg("the previous run did not stop cleanly; announced as events_lost (agent_restart)")
		}
	}
	// A marker is only left behind by a run that did not stop cleanly: a
	// setup that fails, or a run that ends well, removes it.
	clean := true
	defer func() {
		if marker != nil && clean {
			if err := marker.Clean(); err != nil {
				log.Error().Err(err).Msg("removing the run marker")
			}
		}
	}()

	var checkpoint func(uint64)
	if marker != nil {
		checkpoint = func(seq uint64) {
			if err := marker.Update(seq); err != nil {
				log.Warn().Err(err).Msg("updating the run marker")
			}
		}
	}

	stages := &pipeline.Stages[audit.Event]{
		Capture: capt.Run,
		Enrich:  enr.Run,
		Channel: cfg.Pipeline.CaptureChannel,
	}
	p, err := pipeline.New(pipeline.Options{
		Source:           stages,
		Sinks:            specs,
		ShutdownTimeout:  cfg.ShutdownTimeout.Duration,
		StatsInterval:    cfg.StatsInterval.Duration,
		SinkFailingAfter: cfg.Health.SinkFailingAfter.Duration,
		Host:             enr.Host(),
		// Colour is for watch --format text on a terminal.
		Encoding:   record.Options{RunID: runID, Version: version, Color: isTerminal(stdout)},
		Start:      restart,
		Checkpoint: checkpoint,
		StatsHook: func(e *zerolog.Event) {
			e.Uint64("captured", capt.Stats().Emitted).Interface("capture", capt.Stats()).Interface("enrich", enr.Stats())
		},
	}, log)
	if err != nil {
		return err
	}

	var m *metrics.Metrics
	var ln net.Listener
	if cfg.Metrics.Enabled {
		comps := []metrics.Component{metrics.Capture(capt.Stats), metrics.Enrich(enr.Stats)}
		comps = append(comps, sinkMetrics...)
		m, err = metrics.New(metrics.Source{Stats: p.Stats, Health: func() (bool, string) {
			// An unmounted watched filesystem makes the agent unhealthy.
			if ok, why := capt.Health(); !ok {
				return false, why
			}
			return p.Health()
		}, Captured: func() uint64 { return capt.Stats().Emitted }, Components: comps}, log)
		if err != nil {
			return err
		}
		if ln, err = net.Listen("tcp", cfg.Metrics.Listen); err != nil {
			return fmt.Errorf("metrics.listen %s: %w", cfg.Metrics.Listen, err)
		}
	}

	// SIGHUP reopens the outputs from now on: registered before "running"
	// is logged, so that a logrotate that waits for it is never ignored.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	setupDone()
	log.Info().Str("config", source).Str("version", version).Strs("paths", cfg.Paths).Int("sinks", len(specs)).Bool("fid_mode", !capt.FDMode()).Msg("running")

	// Everything below lives exactly as long as the pipeline.
	aux, stopAux := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAux()
	var wg sync.WaitGroup
	var metricsErr error
	if m != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			metricsErr = m.Serve(aux, ln)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		reopenOnHUP(aux, hup, p, log)
	}()

	err = p.Run(benchRunContext(ctx, log))
	stopAux()
	wg.Wait()
	// Not every record was flushed (a failure, the shutdown timeout): the
	// marker stays, and the next run says so.
	clean = err == nil

	if err != nil {
		return err
	}
	return metricsErr
}

// reopenOnHUP reopens every sink's output on SIGHUP (logrotate), from
// hup, which the caller registered before the agent said it runs.
func reopenOnHUP(ctx context.Context, hup <-chan os.Signal, p *pipeline.Pipeline, log zerolog.Logger) {
	// Back to ignoring, not to the default action (which kills): a SIGHUP
	// while the agent drains is as harmless as one during start-up.
	defer signal.Ignore(syscall.SIGHUP)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := p.Reopen(); err != nil {
				log.Error().Err(err).Msg("SIGHUP: reopen failed")
			} else {
				log.Info().Msg("SIGHUP: outputs reopened")
			}
		}
	}
}

// buildSinks creates every configured sink, with the metrics of those
// that count more than their queue does. The returned func closes them
// all (the pipeline does after a run; Close is idempotent).
func buildSinks(cfg *config.Config, source string, host *record.Host, runID string, stdout io.Writer, stopWatch func(), log zerolog.Logger) ([]pipeline.SinkSpec, []metrics.Component, func(), error) {
	opts, err := sinkOptionsOf(cfg, source)
	if err != nil {
		return nil, nil, nil, wrapConfig(err)
	}
	var specs []pipeline.SinkSpec
	var comps []metrics.Component
	closeAll := func() {
		for _, s := range specs {
			if err := s.Sink.Close(); err != nil {
				log.Warn().Err(err).Str("sink", s.Name).Msg("closing sink")
			}
		}
	}
	for i, s := range opts {
		slog := log.With().Str("sink", s.Name).Logger()
		var sink sinks.Sink
		switch s.Type {
		case config.SinkStdout:
			so := sinks.NewStdout(stdout, slog)
			if stopWatch != nil {
				so.StopWhenReaderGone(stopWatch)
			}
			sink = so
		case config.SinkFile:
			f, err := sinks.NewFile(s.File, slog)
			if err != nil {
				closeAll()
				return nil, nil, nil, sinkError(cfg, source, i, s.Name, s.Type, err)
			}
			comps = append(comps, metrics.FileSink(s.Name, f.Stats))
			sink = f
		case config.SinkKafka:
			k, err := kafka.New(s.Kafka, host, runID, slog)
			if err != nil {
				closeAll()
				return nil, nil, nil, sinkError(cfg, source, i, s.Name, s.Type, err)
			}
			comps = append(comps, metrics.KafkaSink(s.Name, k.Stats))
			sink = k
		default:
			closeAll()
			return nil, nil, nil, fmt.Errorf("sink %s: unknown type %q", s.Name, s.Type)
		}
		if err := setSealer(sink, cfg.Sinks[i].SealState, cfg.Sinks[i].SealInterval.Duration); err != nil {
			sink.Close()
			closeAll()
			if source == "watch" {
				return nil, nil, nil, usagef("watch: --seal-state: %v", err)
			}
			return nil, nil, nil, wrapConfig(cfg.KeyError(source, "sinks."+strconv.Itoa(i)+".seal_state", err))
		}
		specs = append(specs, pipeline.SinkSpec{Name: s.Name, Sink: sink, QueueSize: s.QueueSize, Policy: s.Policy, Format: s.Format})
	}
	return specs, comps, closeAll, nil
}

// restartRecord is the events_lost record that opens a run following one
// that did not stop cleanly: how much it lost is unknown (no count).
func restartRecord(prev *runstate.Previous, host *record.Host) *record.Record {
	return &record.Record{
		Timestamp: time.Now(),
		Action:    record.ActionEventsLost,
		Host:      host,
		Fanaudit: record.Meta{Lost: record.Lost{
			Reason:          record.ReasonAgentRestart,
			PreviousRunID:   prev.RunID,
			LastSequence:    prev.LastSequence,
			HasLastSequence: prev.HasLastSequence,
		}},
	}
}

// newRunID makes the run id: fanaudit.run_id and the per-run part of
// event.id (records and Kafka headers).
func newRunID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("run id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
