package metrics

import (
	"fmt"
	"reflect"
	"strings"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
)

// Component exposes one stage's own counters (capture, enrichment, a Kafka
// sink) next to the pipeline's. Stats returns a struct; its uint64 fields
// become counters fanaudit_<Name>_<field>_total, its int and int64 fields
// gauges fanaudit_<Name>_<field>, and its time.Duration fields gauges
// fanaudit_<Name>_<field>_seconds. Reflecting over the struct means a
// counter added to a stage shows up here without more wiring.
type Component struct {
	Name   string
	Labels prometheus.Labels // constant labels, e.g. {"sink": "main"}
	Stats  func() any
}

type componentField struct {
	index int
	kind  reflect.Kind
	dur   bool
	desc  *prometheus.Desc
}

type componentCollector struct {
	c      Component
	fields []componentField
}

func newComponentCollector(c Component) (*componentCollector, error) {
	if c.Stats == nil {
		return nil, fmt.Errorf("metrics: component %q has no Stats", c.Name)
	}
	t := reflect.TypeOf(c.Stats())
	if t == nil || t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("metrics: component %q: Stats returns %v, want a struct", c.Name, t)
	}
	cc := &componentCollector{c: c}
	durType := reflect.TypeOf(time.Duration(0))
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name := "fanaudit_" + c.Name + "_" + snake(f.Name)
		help := fmt.Sprintf("%s stage counter %s.", c.Name, f.Name)
		fld := componentField{index: i, kind: f.Type.Kind()}
		switch {
		case f.Type == durType:
			fld.dur = true
			name += "_seconds"
		case f.Type.Kind() == reflect.Uint64:
			name += "_total"
		case f.Type.Kind() == reflect.Int, f.Type.Kind() == reflect.Int64:
		default:
			continue
		}
		fld.desc = prometheus.NewDesc(name, help, nil, c.Labels)
		cc.fields = append(cc.fields, fld)
	}
	return cc, nil
}

func (cc *componentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, f := range cc.fields {
		ch <- f.desc
	}
}

func (cc *componentCollector) Collect(ch chan<- prometheus.Metric) {
	v := reflect.ValueOf(cc.c.Stats())
	for _, f := range cc.fields {
		fv := v.Field(f.index)
		switch {
		case f.dur:
			ch <- prometheus.MustNewConstMetric(f.desc, prometheus.GaugeValue, time.Duration(fv.Int()).Seconds())
		case f.kind == reflect.Uint64:
			ch <- prometheus.MustNewConstMetric(f.desc, prometheus.CounterValue, float64(fv.Uint()))
		default:
			ch <- prometheus.MustNewConstMetric(f.desc, prometheus.GaugeValue, float64(fv.Int()))
		}
	}
}

// snake turns a Go field name into a metric name part: KernelEvents →
// kernel_events, AckP99 → ack_p99, HashSkippedSize → hash_skipped_size.
func snake(s string) string {
	var b strings.Builder
	rs := []rune(s)
	for i, r := range rs {
		if unicode.IsUpper(r) {
			if i > 0 && (unicode.IsLower(rs[i-1]) || (i+1 < len(rs) && unicode.IsLower(rs[i+1]) && unicode.IsUpper(rs[i-1]))) {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}
