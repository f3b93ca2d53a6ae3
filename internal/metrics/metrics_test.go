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
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/internal/pipeline"
	"github.com/fanaudit/fanaudit/internal/pipeline/queue"
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

func TestComponentMetrics(t *testing.T) {
	type stageStats struct {
		KernelEvents uint64
		CacheEntries int
		AckP99       time.Duration
	}
	src := Source{
		Stats:  func() pipeline.Stats { return pipeline.Stats{} },
		Health: func() (bool, string) { return true, "" },
		Components: []Component{{Name: "capture", Labels: map[string]string{"sink": "k"},
			Stats: func() any { return stageStats{KernelEvents: 7, CacheEntries: 3, AckP99: 1500 * time.Millisecond} }}},
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
			switch {
			case mm.GetCounter() != nil:
				got[mf.GetName()] = mm.GetCounter().GetValue()
			case mm.GetGauge() != nil:
				got[mf.GetName()] = mm.GetGauge().GetValue()
			}
		}
	}
	want := map[string]float64{
		"fanaudit_capture_kernel_events_total": 7,
		"fanaudit_capture_cache_entries":       3,
		"fanaudit_capture_ack_p99_seconds":     1.5,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}
