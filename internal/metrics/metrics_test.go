package metrics

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/audit"
	"github.com/fanaudit/fanaudit/enrich"
	"github.com/fanaudit/fanaudit/internal/pipeline"
	"github.com/fanaudit/fanaudit/internal/pipeline/queue"
	"github.com/fanaudit/fanaudit/sinks"
	"github.com/fanaudit/fanaudit/sinks/kafka"
)

func fakeSource(healthy bool) Source {
	return Source{
		Stats: func() pipeline.Stats {
			return pipeline.Stats{Received: 10, Produced: 12, LossRecords: 2, KernelOverflows: 5, Sinks: []queue.Stats{
				{Sink: "out", Received: 12, Delivered: 10, Dropped: 1, InFlight: 1, Depth: 1, Capacity: 100},
				{Sink: "kafka-1", Received: 12, Delivered: 12, Capacity: 50},
			}}
		},
		Health: func() (bool, string) {
			if healthy {
				return true, ""
			}
			return false, "sink out has delivered nothing for 1m0s"
		},
		Captured: func() uint64 { return 9 },
	}
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestMetricsExposition(t *testing.T) {
	m, err := New(fakeSource(true), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	code, body := get(t, m.Handler(), "/metrics")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	for _, want := range []string{
		"fanaudit_captured_events_total 9",
		"fanaudit_records_enriched_total 10",
		"fanaudit_records_produced_total 12",
		"fanaudit_loss_records_total 2",
		"fanaudit_kernel_overflows_total 5",
		"fanaudit_reader_running 1",
		"fanaudit_healthy 1",
		`fanaudit_sink_received_total{sink="out"} 12`,
		`fanaudit_sink_delivered_total{sink="out"} 10`,
		`fanaudit_sink_dropped_total{sink="out"} 1`,
		`fanaudit_sink_in_flight{sink="out"} 1`,
		`fanaudit_sink_queue_depth{sink="out"} 1`,
		`fanaudit_sink_queue_capacity{sink="kafka-1"} 50`,
		"go_goroutines",
	} {
		if !strings.Contains(body, want+"\n") && !strings.Contains(body, want) {
			t.Errorf("missing %q", want)
		}
	}
	promtool(t, body)
}

// promtool lints the exposition with Prometheus's own checker.
func promtool(t *testing.T, body string) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not installed (Debian package prometheus); CI=true turns the skip into a failure")
		}
		t.Skip("promtool not installed")
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

func TestHealthz(t *testing.T) {
	tests := []struct {
		name     string
		healthy  bool
		code     int
		status   string
		inReason string
	}{
		{"ok", true, 200, "ok", ""},
		{"failing sink", false, 503, "unhealthy", "sink out"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(fakeSource(tc.healthy), zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			code, body := get(t, m.Handler(), "/healthz")
			var got struct{ Status, Reason string }
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("%v: %q", err, body)
			}
			if code != tc.code || got.Status != tc.status || !strings.Contains(got.Reason, tc.inReason) {
				t.Errorf("got %d %+v", code, got)
			}
		})
	}
}

func TestServeStopsWithContext(t *testing.T) {
	m, err := New(fakeSource(true), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(b, []byte("fanaudit_records_produced_total")) {
		t.Errorf("scrape over TCP: %s", b)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestNewRequiresFuncs(t *testing.T) {
	if _, err := New(Source{}, zerolog.Nop()); err == nil || errors.Is(err, nil) {
		t.Fatal("New accepted an empty source")
	}
}

// TestComponentsExportEveryField: each stage's Stats, every field set to
// its own value, shows every one of those values in a scrape: a counter
// added to a stage cannot go unexported. (Reflection only here, to fill
// the structs; the names are written out in components.go.)
func TestComponentsExportEveryField(t *testing.T) {
	var (
		cs audit.Stats
		es enrich.Stats
		fs sinks.FileStats
		ks kafka.Stats
	)
	want := map[float64]string{}
	next := 1.0
	fill := func(v any) {
		rv := reflect.ValueOf(v).Elem()
		for i := 0; i < rv.NumField(); i++ {
			f := rv.Field(i)
			name := rv.Type().Name() + "." + rv.Type().Field(i).Name
			switch f.Kind() {
			case reflect.Uint64:
				f.SetUint(uint64(next))
				want[next] = name
			case reflect.Int, reflect.Int64:
				if f.Type() == reflect.TypeOf(time.Duration(0)) {
					f.SetInt(int64(time.Duration(next) * time.Second))
				} else {
					f.SetInt(int64(next))
				}
				want[next] = name
			default:
				t.Fatalf("%s: a field of kind %s; export it in components.go and teach this test", name, f.Kind())
			}
			next++
		}
	}
	fill(&cs)
	fill(&es)
	fill(&fs)
	fill(&ks)
	src := Source{
		Stats:  func() pipeline.Stats { return pipeline.Stats{} },
		Health: func() (bool, string) { return true, "" },
		Components: []Component{
			Capture(func() audit.Stats { return cs }),
			Enrich(func() enrich.Stats { return es }),
			FileSink("f", func() sinks.FileStats { return fs }),
			KafkaSink("k", func() kafka.Stats { return ks }),
		},
	}
	m, err := New(src, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "fanaudit_") || mf.GetHelp() == "" {
			continue
		}
		for _, mm := range mf.GetMetric() {
			v := mm.GetCounter().GetValue() + mm.GetGauge().GetValue()
			delete(want, v)
		}
	}
	for _, name := range want {
		t.Errorf("%s is not exported", name)
	}
}

// TestComponentNames: the names dashboards and the alert rules use.
func TestComponentNames(t *testing.T) {
	src := Source{
		Stats:  func() pipeline.Stats { return pipeline.Stats{} },
		Health: func() (bool, string) { return true, "" },
		Components: []Component{
			Capture(func() audit.Stats { return audit.Stats{DecodeErrors: 7} }),
			FileSink("out", func() sinks.FileStats { return sinks.FileStats{Rotations: 2, WriteErrors: 3, SyncErrors: 4} }),
			KafkaSink("k", func() kafka.Stats {
				return kafka.Stats{SpoolPending: 5, DeadLettered: 6, AckP99: 1500 * time.Millisecond}
			}),
		},
	}
	m, err := New(src, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mm := range mf.GetMetric() {
			got[mf.GetName()] = mm.GetCounter().GetValue() + mm.GetGauge().GetValue()
		}
	}
	want := map[string]float64{
		"fanaudit_capture_decode_errors_total": 7,
		"fanaudit_file_rotations_total":        2,
		"fanaudit_file_write_errors_total":     3,
		"fanaudit_file_sync_errors_total":      4,
		"fanaudit_kafka_spool_pending":         5,
		"fanaudit_kafka_dead_lettered_total":   6,
		"fanaudit_kafka_ack_p99_seconds":       1.5,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}
