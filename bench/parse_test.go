package bench

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseWL(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    WLResult
		wantErr bool
	}{
		{"report", "wl n=10 ops=45 elapsed=0.500000 create=.1 rename=.1 unlink=.3 ops_per_s=90 wl_utime=0.010 wl_stime=0.200\n",
			WLResult{N: 10, Ops: 45, Elapsed: 0.5, UTime: 0.01, STime: 0.2}, false},
		{"no line", "oops\n", WLResult{}, true},
		{"bad number", "wl n=x ops=1 elapsed=1 wl_utime=0 wl_stime=0\n", WLResult{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseWL(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestCounts(t *testing.T) {
	fanread := `{"mode":"dfid_name","events":7,"overflow":1,"b_open":3,"b_modify":3,"b_close_write":3,"b_close_nowrite":0,"b_access":0,"b_create":3,"b_delete":3,"b_moved_from":2,"b_moved_to":1,"utime":0.1,"stime":0.2,"maxrss_kb":10,"drain_s":0.5,"drain_rate":14}`
	fatrace := strings.Join([]string{
		"wl(1): O   /m",
		"wl(1): CWO /m/f0",
		"wl(1): +D<> /m",
		"wl(1): W /m/f1",
		"wl(1): C /m/f1",
		"garbage",
		"sh(2): CWO /m/" + sentinelName,
	}, "\n")
	fanaudit := strings.Join([]string{
		`{"@timestamp":"x","event":{"action":"create","sequence":1},"file":{"path":"/m/f0"}}`,
		`{"@timestamp":"x","event":{"action":"close_write","sequence":2},"file":{"path":"/m/f0"}}`,
		`{"@timestamp":"x","event":{"action":"rename","sequence":3},"file":{"path":"/m/r0","Ext":{"original":{"path":"/m/f0"}}}}`,
		`{"@timestamp":"x","event":{"action":"events_lost","sequence":4},"fanaudit":{"lost":{"count":17,"reason":"queue_full"}}}`,
		`{"@timestamp":"x","event":{"action":"events_lost","sequence":5},"fanaudit":{"lost":{"reason":"kernel_queue_overflow"}}}`,
		`{"@timestamp":"x","event":{"action":"attrib","sequence":6},"file":{"path":"/m/` + sentinelName + `"}}`,
		`not json`,
	}, "\n")
	tests := []struct {
		name  string
		parse func() (Counts, error)
		ops   map[Op]uint64
		want  Counts // Ops ignored
	}{
		{"fanread", func() (Counts, error) {
			s, err := ParseFanread("noise\n" + fanread + "\n")
			return s.Counts(), err
		}, map[Op]uint64{OpOpen: 3, OpModify: 3, OpCloseWrite: 3, OpCreate: 3, OpDelete: 3, OpRename: 1},
			Counts{Events: 7, LossReports: 1, Overflows: 1}},
		{"fatrace", func() (Counts, error) { return ParseFatrace(strings.NewReader(fatrace), sentinelName) },
			map[Op]uint64{OpOpen: 2, OpCloseWrite: 1, OpModify: 2, OpCloseNowrite: 1, OpCreate: 1, OpDelete: 1, OpRename: 1},
			Counts{Events: 5, SentinelSeen: true}},
		{"fanaudit", func() (Counts, error) { return ParseFanaudit(strings.NewReader(fanaudit), sentinelName) },
			map[Op]uint64{OpCreate: 1, OpCloseWrite: 1, OpRename: 1, OpOther: 1},
			Counts{Events: 6, Lost: 17, LossReports: 2, Overflows: 1, SentinelSeen: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.parse()
			if err != nil {
				t.Fatal(err)
			}
			for op, n := range tt.ops {
				if got.Ops[op] != n {
					t.Errorf("%s = %d, want %d (all: %v)", op, got.Ops[op], n, got.Ops)
				}
			}
			for op, n := range got.Ops {
				if _, ok := tt.ops[op]; !ok && n != 0 {
					t.Errorf("unexpected %s = %d", op, n)
				}
			}
			got.Ops, tt.want.Ops = nil, nil
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseGoBench(t *testing.T) {
	out := `goos: linux
pkg: github.com/fanaudit/fanaudit/internal/record
BenchmarkEncode-2   	 1000000	      1043 ns/op	     512 B/op	       2 allocs/op
BenchmarkSink-2     	     100	  10000000 ns/op	   120000 records/s	       0 B/op	       0 allocs/op
BenchmarkBroken-2   	 --- FAIL
PASS
`
	got := ParseGoBench(out)
	if len(got) != 2 {
		t.Fatalf("got %d benchmarks, want 2: %+v", len(got), got)
	}
	tests := []struct {
		i     int
		name  string
		units []string
	}{
		{0, "BenchmarkEncode-2", []string{"ns/op", "B/op", "allocs/op"}},
		{1, "BenchmarkSink-2", []string{"ns/op", "records/s", "B/op", "allocs/op"}},
	}
	for _, tt := range tests {
		b := got[tt.i]
		if b.Name != tt.name || b.Pkg != "github.com/fanaudit/fanaudit/internal/record" || len(b.Metrics) != len(tt.units) {
			t.Fatalf("benchmark %d: %+v", tt.i, b)
		}
		for k, u := range tt.units {
			if b.Metrics[k].Unit != u {
				t.Errorf("benchmark %d metric %d unit %q, want %q", tt.i, k, b.Metrics[k].Unit, u)
			}
		}
	}
}

func TestSummarize(t *testing.T) {
	tests := []struct {
		in   []float64
		want Stat
	}{
		{nil, Stat{}},
		{[]float64{3}, Stat{3, 3, 3, 1}},
		{[]float64{3, 1, 2}, Stat{2, 1, 3, 3}},
		{[]float64{4, 1, 2, 3}, Stat{2.5, 1, 4, 4}},
	}
	for _, tt := range tests {
		if got := Summarize(tt.in); got != tt.want {
			t.Errorf("Summarize(%v) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestMissing(t *testing.T) {
	c := newCounts()
	c.Ops[OpOpen], c.Ops[OpCloseWrite], c.Ops[OpRename] = 10, 7, 9
	tests := []struct {
		ops  []Op
		want uint64
	}{
		{[]Op{OpOpen}, 0},
		{[]Op{OpOpen, OpCloseWrite}, 3},
		{[]Op{OpRename}, 0}, // 10 files rename 5; extra counts are not negative misses
		{allOps, 3 + 10 + 10 + 10},
	}
	for _, tt := range tests {
		if got := Missing(c, tt.ops, 10, 1); got != tt.want {
			t.Errorf("Missing(%v) = %d, want %d", tt.ops, got, tt.want)
		}
	}
}

func TestParsePerfReport(t *testing.T) {
	out := `# Samples: 10K
#
    96.45%     0.00%  [.] runtime.goexit.abi0                                       -      -
    34.99%     0.00%  [.] github.com/fanaudit/fanaudit/enrich.(*Enricher).Run      -      -
    34.99%     0.00%  [.] github.com/fanaudit/fanaudit/enrich.(*Enricher).Run-fm   -      -
    30.00%     1.00%  [.] github.com/fanaudit/fanaudit/internal/pipeline.(*Stages[go.shape.struct { A int; B [2]int }]).Run.func4  -      -
    22.52%     1.57%  [k] do_syscall_64
     6.44%     0.27%  [k] fanotify_read
`
	tests := []struct {
		name      string
		inclusive bool
		top       int
		want      []ProfileLine
	}{
		{"inclusive skips wrappers", true, 3, []ProfileLine{
			{34.99, "github.com/fanaudit/fanaudit/enrich.(*Enricher).Run"},
			{30.00, "github.com/fanaudit/fanaudit/internal/pipeline.(*Stages[…]).Run.func4"},
			{6.44, "fanotify_read"},
		}},
		{"self keeps everything", false, 2, []ProfileLine{
			{96.45, "runtime.goexit.abi0"},
			{34.99, "github.com/fanaudit/fanaudit/enrich.(*Enricher).Run"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParsePerfReport(out, tt.inclusive, tt.top); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestFanauditKernelEvents(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{`{"level":"info","capture":{"Reads":72,"KernelEvents":200002,"Emitted":400002},"message":"stopped"}`, 200002, true},
		{"{\"KernelEvents\":1}\n{\"KernelEvents\":7}\n", 7, true},
		{`{"message":"running"}`, 0, false},
	}
	for _, tt := range tests {
		got, ok := FanauditKernelEvents([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("FanauditKernelEvents(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseFanauditLosses(t *testing.T) {
	in := strings.Join([]string{
		`{"event":{"action":"create","sequence":1},"file":{"path":"/m/f0"}}`,
		`{"event":{"action":"events_lost","sequence":2},"fanaudit":{"lost":{"reason":"kernel_queue_overflow"}}}`,
		`{"event":{"action":"events_lost","sequence":3},"fanaudit":{"lost":{"reason":"queue_full","count":5,"sink":"bench"}}}`,
		`{"event":{"action":"events_lost","sequence":4},"fanaudit":{"lost":{"count":9,"reason":"agent_restart","previous_run_id":"x"}}}`,
		`{"event":{"action":"seal"},"fanaudit":{"seal":{"head":"ab"}}}`,
	}, "\n")
	got, err := ParseFanaudit(strings.NewReader(in), "")
	if err != nil {
		t.Fatal(err)
	}
	want := Counts{Events: 5, Lost: 5, LossReports: 3, Overflows: 1, Restarts: 1}
	if got.Ops[OpCreate] != 1 || got.Ops[OpOther] != 1 {
		t.Errorf("ops %v", got.Ops)
	}
	got.Ops = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestParseFanauditUnder(t *testing.T) {
	rec := func(action, path string) string {
		return `{"event":{"action":"` + action + `"},"file":{"path":"` + path + `","name":"x"},"process":{"executable":"/m/w/new/bin"}}`
	}
	in := strings.Join([]string{
		rec("create", "/m/w/new"),    // the directory itself: under root, in no dir
		rec("create", "/m/w/new/f0"), // new
		rec("rename", "/m/w/new/r0"), // new
		rec("open", "/m/w/old/f1"),   // old
		rec("open", "/m/w/older/f1"), // under root, not in old/
		rec("open", "/m/w"),          // root itself
		rec("open", "/m/other/f1"),   // outside
		rec("open", "/m/wx/f1"),      // outside: a sibling sharing the prefix
		`{"event":{"action":"events_lost"},"fanaudit":{"lost":{"reason":"kernel_queue_overflow"}}}`,
		// unwatched_window names a directory: counted for it, not as a file record
		`{"event":{"action":"events_lost"},"file":{"path":"/m/w/new","name":"new","type":"dir"},"fanaudit":{"lost":{"reason":"unwatched_window"}}}`,
		`{"event":{"action":"events_lost"},"file":{"path":"/m/w/newer","name":"newer","type":"dir"},"fanaudit":{"lost":{"reason":"unwatched_window"}}}`,
	}, "\n")
	all, under, outside, err := ParseFanauditUnder(strings.NewReader(in), "/m/w", "/m/w/new", "/m/w/old/")
	if err != nil {
		t.Fatal(err)
	}
	if all.Events != 11 || all.Overflows != 1 || all.Windows != 2 || all.LossReports != 3 {
		t.Errorf("all = %+v", all)
	}
	if under[0].Windows != 1 || under[1].Windows != 0 {
		t.Errorf("unwatched_window per dir: new %d, old %d; want 1, 0", under[0].Windows, under[1].Windows)
	}
	if len(under) != 2 {
		t.Fatalf("%d tallies, want 2", len(under))
	}
	if under[0].Events != 2 || under[0].Ops[OpCreate] != 1 || under[0].Ops[OpRename] != 1 {
		t.Errorf("new: %+v", under[0])
	}
	if under[1].Events != 1 || under[1].Ops[OpOpen] != 1 {
		t.Errorf("old: %+v", under[1])
	}
	if outside != 2 {
		t.Errorf("outside = %d, want 2", outside)
	}
}

func TestGCShare(t *testing.T) {
	out := `# Samples: 10K
    96.45%     0.00%  [.] runtime.goexit.abi0
     6.40%     0.10%  [.] runtime.gcBgMarkWorker
     5.00%     0.20%  [.] runtime.scanObject
     1.50%     0.50%  [.] runtime.gcAssistAlloc
     0.60%     0.60%  [.] runtime.bgsweep
`
	if got := GCShare(out); got < 8.49 || got > 8.51 {
		t.Errorf("GCShare = %v, want 8.5", got)
	}
}
