// Package metrics owns the agent's Prometheus registry (never the global
// default one), the name and help text of every metric it exports (the
// pipeline's here, the stages' own in components.go), and its HTTP
// endpoints: /metrics and /healthz with the agent's health verdict.
package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/internal/pipeline"
)

// Source is what the endpoints read. Every scrape takes one Stats
// snapshot, so the per-sink numbers of one scrape are consistent.
type Source struct {
	Stats  func() pipeline.Stats
	Health func() (ok bool, reason string)
	// Captured counts events from the capture stage; nil when unknown.
	Captured func() uint64
	// Components are the stages' own counters (Capture, Enrich,
	// FileSink, KafkaSink).
	Components []Component
}

// Metrics is the registry and its HTTP handler.
type Metrics struct {
	reg *prometheus.Registry
	src Source
	log zerolog.Logger
}

// New builds a registry with the pipeline collector and the Go runtime and
// process collectors.
func New(src Source, log zerolog.Logger) (*Metrics, error) {
	if src.Stats == nil || src.Health == nil {
		return nil, errors.New("metrics: Stats and Health are required")
	}
	reg := prometheus.NewRegistry()
	cs := []prometheus.Collector{
		newCollector(src),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}
	for _, comp := range src.Components {
		if comp.c == nil {
			return nil, errors.New("metrics: empty component")
		}
		cs = append(cs, comp.c)
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	return &Metrics{reg: reg, src: src, log: log.With().Str("component", "metrics").Logger()}, nil
}

// Registry returns the registry, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves /metrics and /healthz.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("/healthz", m.healthz)
	return mux
}

func (m *Metrics) healthz(w http.ResponseWriter, _ *http.Request) {
	ok, reason := m.src.Health()
	w.Header().Set("Content-Type", "application/json")
	body := map[string]string{"status": "ok"}
	if !ok {
		body = map[string]string{"status": "unhealthy", "reason": reason}
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	if err := json.NewEncoder(w).Encode(body); err != nil {
		m.log.Debug().Err(err).Msg("healthz: write")
	}
}

// Serve serves the handler on ln until ctx ends, then shuts the server
// down. It returns nil after a shutdown caused by ctx.
func (m *Metrics) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           m.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          nil,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	m.log.Info().Str("listen", ln.Addr().String()).Msg("serving /metrics and /healthz")
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: serve: %w", err)
	}
	return nil
}

// collector reads one pipeline snapshot per scrape. Its descriptors live
// in the struct rather than in package variables, like all state here.
type collector struct {
	src Source

	captured, received, produced, lossRecs, kernelOverflows, readerUp, healthy *prometheus.Desc
	sinkRecv, sinkDeliv, sinkDrop, sinkInFlight, sinkDepth, sinkCap            *prometheus.Desc
}

func newCollector(src Source) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &collector{
		src:             src,
		captured:        d("fanaudit_captured_events_total", "Events handed on by the capture stage, events_lost included."),
		received:        d("fanaudit_records_enriched_total", "Records that came out of enrichment into the fan-out."),
		produced:        d("fanaudit_records_produced_total", "Records given an event.sequence (enriched records plus queue_full loss records); equals the last sequence."),
		lossRecs:        d("fanaudit_loss_records_total", "events_lost records produced, of any reason."),
		kernelOverflows: d("fanaudit_kernel_overflows_total", "Kernel fanotify queue overflows (events_lost records with reason kernel_queue_overflow)."),
		readerUp:        d("fanaudit_reader_running", "1 while the capture stage is reading, 0 once it stopped."),
		healthy:         d("fanaudit_healthy", "1 when /healthz reports ok."),
		sinkRecv:        d("fanaudit_sink_received_total", "Records pushed to the sink's queue (delivered + dropped + in flight).", "sink"),
		sinkDeliv:       d("fanaudit_sink_delivered_total", "Records the sink delivered.", "sink"),
		sinkDrop:        d("fanaudit_sink_dropped_total", "Records the sink's queue dropped (when_full) or the sink failed to deliver.", "sink"),
		sinkInFlight:    d("fanaudit_sink_in_flight", "Records queued or taken by the sink and not yet settled.", "sink"),
		sinkDepth:       d("fanaudit_sink_queue_depth", "Records waiting in the sink's queue.", "sink"),
		sinkCap:         d("fanaudit_sink_queue_capacity", "Capacity of the sink's queue, in records.", "sink"),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.captured, c.received, c.produced, c.lossRecs, c.kernelOverflows,
		c.readerUp, c.healthy, c.sinkRecv, c.sinkDeliv, c.sinkDrop, c.sinkInFlight, c.sinkDepth, c.sinkCap} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if c.src.Captured != nil {
		counter(c.captured, c.src.Captured())
	}
	counter(c.received, st.Received)
	counter(c.produced, st.Produced)
	counter(c.lossRecs, st.LossRecords)
	counter(c.kernelOverflows, st.KernelOverflows)
	gauge(c.readerUp, boolF(!st.SourceDone))
	ok, _ := c.src.Health()
	gauge(c.healthy, boolF(ok))
	for _, q := range st.Sinks {
		counter(c.sinkRecv, q.Received, q.Sink)
		counter(c.sinkDeliv, q.Delivered, q.Sink)
		counter(c.sinkDrop, q.Dropped, q.Sink)
		gauge(c.sinkInFlight, float64(q.InFlight), q.Sink)
		gauge(c.sinkDepth, float64(q.Depth), q.Sink)
		gauge(c.sinkCap, float64(q.Capacity), q.Sink)
	}
}

func boolF(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
