package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Op names the operation types the harness counts. The kernel merges queued
// events on the same object, so raw event counts are not comparable between
// monitors; operations are.
type Op string

// The operation vocabulary follows fanaudit's event.action names.
const (
	OpOpen         Op = "open"
	OpCreate       Op = "create"
	OpModify       Op = "modify"
	OpCloseWrite   Op = "close_write"
	OpCloseNowrite Op = "close_nowrite"
	OpAccess       Op = "access"
	OpRename       Op = "rename"
	OpDelete       Op = "delete"
	OpOther        Op = "other"
)

// countedOps is the column order of the results table.
var countedOps = []Op{OpOpen, OpCreate, OpModify, OpCloseWrite, OpRename, OpDelete}

// Counts is what one monitor run captured.
type Counts struct {
	Ops map[Op]uint64
	// Events is the monitor's own unit: kernel events for fanread, output
	// lines for fatrace, records for fanaudit.
	Events uint64
	// Lost is the number of lost records the monitor announced, where it
	// says how many; LossReports counts the announcements (fanread
	// overflow events, fanaudit events_lost records).
	Lost        uint64
	LossReports uint64
	// Overflows counts the kernel queue overflows among LossReports
	// (fanread: overflow events; fanaudit: events_lost records with reason
	// kernel_queue_overflow).
	Overflows uint64
	// Windows counts fanaudit's unwatched_window loss records: directories
	// that appeared under inode marks and may have seen work before their
	// mark (no count; in LossReports). Per directory in ParseFanauditUnder.
	Windows uint64
	// Restarts counts fanaudit's agent_restart loss records: they announce
	// an earlier run's unclean stop, not a loss of this run, so they are in
	// LossReports but not in Lost.
	Restarts uint64
	// SentinelSeen says the end marker file showed up in the output.
	SentinelSeen bool
}

func newCounts() Counts { return Counts{Ops: map[Op]uint64{}} }

// WLResult is wl's one-line report.
type WLResult struct {
	N       int64
	Ops     int64
	Elapsed float64
	UTime   float64
	STime   float64
}

// ParseWL reads wl's "wl n=… ops=… elapsed=…" line.
func ParseWL(out string) (WLResult, error) {
	var r WLResult
	line := ""
	for l := range strings.SplitSeq(out, "\n") {
		if strings.HasPrefix(l, "wl ") {
			line = l
		}
	}
	if line == "" {
		return r, fmt.Errorf("no wl report line in %q", out)
	}
	kv := map[string]string{}
	for f := range strings.FieldsSeq(line[3:]) {
		k, v, ok := strings.Cut(f, "=")
		if ok {
			kv[k] = v
		}
	}
	var err error
	parseF := func(k string) float64 {
		v, e := strconv.ParseFloat(kv[k], 64)
		if e != nil && err == nil {
			err = fmt.Errorf("wl field %s=%q: %w", k, kv[k], e)
		}
		return v
	}
	r.N = int64(parseF("n"))
	r.Ops = int64(parseF("ops"))
	r.Elapsed = parseF("elapsed")
	r.UTime = parseF("wl_utime")
	r.STime = parseF("wl_stime")
	return r, err
}

// FanreadSummary is the subset of fanread's exit JSON the harness uses.
type FanreadSummary struct {
	Events       uint64  `json:"events"`
	Overflow     uint64  `json:"overflow"`
	Open         uint64  `json:"b_open"`
	Modify       uint64  `json:"b_modify"`
	CloseWrite   uint64  `json:"b_close_write"`
	CloseNowrite uint64  `json:"b_close_nowrite"`
	Access       uint64  `json:"b_access"`
	Create       uint64  `json:"b_create"`
	Delete       uint64  `json:"b_delete"`
	MovedFrom    uint64  `json:"b_moved_from"`
	MovedTo      uint64  `json:"b_moved_to"`
	UTime        float64 `json:"utime"`
	STime        float64 `json:"stime"`
	MaxRSSKB     int64   `json:"maxrss_kb"`
	DrainS       float64 `json:"drain_s"`
	DrainRate    float64 `json:"drain_rate"`
}

// ParseFanread decodes the last JSON object fanread printed.
func ParseFanread(out string) (FanreadSummary, error) {
	var s FanreadSummary
	i := strings.LastIndex(out, "{\"mode\"")
	if i < 0 {
		return s, fmt.Errorf("no fanread summary in %q", out)
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(out[i:])), &s); err != nil {
		return s, fmt.Errorf("fanread summary: %w", err)
	}
	return s, nil
}

// Counts turns fanread's mask bit counters into operations. A rename is
// one moved_from plus one moved_to; the smaller of the two is the number
// of renames seen whole.
func (s FanreadSummary) Counts() Counts {
	c := newCounts()
	c.Events = s.Events
	c.LossReports = s.Overflow
	c.Overflows = s.Overflow
	c.Ops[OpOpen] = s.Open
	c.Ops[OpCreate] = s.Create
	c.Ops[OpModify] = s.Modify
	c.Ops[OpCloseWrite] = s.CloseWrite
	c.Ops[OpCloseNowrite] = s.CloseNowrite
	c.Ops[OpAccess] = s.Access
	c.Ops[OpDelete] = s.Delete
	c.Ops[OpRename] = min(s.MovedFrom, s.MovedTo)
	return c
}

// ParseFatrace counts fatrace's text lines ("comm(pid): LETTERS path").
// fatrace prints C for either close and W for modify or close_write, so
// "CW" is counted as a close_write and a lone W as a modify; it cannot tell
// a close_write from a modify followed by close_nowrite.
func ParseFatrace(r io.Reader, sentinel string) (Counts, error) {
	c := newCounts()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		i := bytes.Index(line, []byte("): "))
		if i < 0 {
			continue
		}
		rest := line[i+3:]
		j := bytes.IndexByte(rest, ' ')
		if j < 0 {
			continue
		}
		letters, path := rest[:j], bytes.TrimSpace(rest[j:])
		if sentinel != "" && bytes.HasSuffix(path, []byte("/"+sentinel)) {
			// The harness's end marker, not part of the workload.
			c.SentinelSeen = true
			continue
		}
		c.Events++
		hasC := bytes.IndexByte(letters, 'C') >= 0
		hasW := bytes.IndexByte(letters, 'W') >= 0
		for _, l := range letters {
			switch l {
			case 'O':
				c.Ops[OpOpen]++
			case 'R':
				c.Ops[OpAccess]++
			case '+':
				c.Ops[OpCreate]++
			case 'D':
				c.Ops[OpDelete]++
			case '<':
				c.Ops[OpRename]++ // counted on the moved_from side only
			}
		}
		switch {
		case hasC && hasW:
			c.Ops[OpCloseWrite]++
			c.Ops[OpModify]++
		case hasC:
			c.Ops[OpCloseNowrite]++
		case hasW:
			c.Ops[OpModify]++
		}
	}
	if err := sc.Err(); err != nil {
		return c, fmt.Errorf("read fatrace output: %w", err)
	}
	return c, nil
}

var (
	keyAction     = []byte(`"action":"`)
	keyLost       = []byte(`"lost":{`)
	keyCount      = []byte(`"count":`)
	keyReason     = []byte(`"reason":"`)
	keyPath       = []byte(`"path":"`)
	keyFilePath   = []byte(`"file":{"path":"`)
	reasonOverrun = []byte("kernel_queue_overflow")
	reasonRestart = []byte("agent_restart")
	reasonWindow  = []byte("unwatched_window")
)

// ParseFanaudit counts fanaudit JSON lines by event.action and sums the
// events_lost counts. It scans bytes instead of decoding JSON: a run writes
// about a million records, and the harness must not be the bottleneck.
func ParseFanaudit(r io.Reader, sentinel string) (Counts, error) {
	c, _, err := parseFanaudit(r, sentinel, nil)
	return c, err
}

// ParseFanauditUnder counts like ParseFanaudit and, besides, the file
// records whose file.path lies under each of dirs (the directory's own
// records are not counted there), and the file records that are neither
// root nor under it (outside).
func ParseFanauditUnder(r io.Reader, root string, dirs ...string) (all Counts, under []Counts, outside uint64, err error) {
	var ps [][]byte
	for _, p := range dirs {
		ps = append(ps, []byte(strings.TrimSuffix(p, "/")+"/"))
	}
	all, st, err := parseFanaudit(r, "", &scopeTally{root: []byte(strings.TrimSuffix(root, "/")), dirs: ps})
	return all, st.under, st.outside, err
}

// scopeTally counts file records by where their path lies.
type scopeTally struct {
	root    []byte   // scope root, no trailing slash
	dirs    [][]byte // directories under root, each with a trailing slash
	under   []Counts // per dir
	outside uint64   // file records neither root nor under it
}

func parseFanaudit(r io.Reader, sentinel string, st *scopeTally) (Counts, *scopeTally, error) {
	c := newCounts()
	if st == nil {
		st = &scopeTally{}
	}
	for range st.dirs {
		st.under = append(st.under, newCounts())
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 256<<10), 16<<20)
	sentinelKey := []byte("/" + sentinel + `"`)
	for sc.Scan() {
		line := sc.Bytes()
		i := bytes.Index(line, keyAction)
		if i < 0 {
			continue
		}
		rest := line[i+len(keyAction):]
		j := bytes.IndexByte(rest, '"')
		if j < 0 {
			continue
		}
		action := Op(rest[:j])
		c.Events++
		if action == "events_lost" {
			c.LossReports++
			lost := line
			if k := bytes.Index(line, keyLost); k >= 0 {
				lost = line[k+len(keyLost):]
				if e := bytes.IndexByte(lost, '}'); e >= 0 {
					lost = lost[:e]
				}
			}
			var reason []byte
			if k := bytes.Index(lost, keyReason); k >= 0 {
				reason = lost[k+len(keyReason):]
				if e := bytes.IndexByte(reason, '"'); e >= 0 {
					reason = reason[:e]
				}
			}
			switch {
			case bytes.Equal(reason, reasonOverrun):
				c.Overflows++
			case bytes.Equal(reason, reasonRestart):
				c.Restarts++
				continue // an earlier run's loss, not this run's
			case bytes.Equal(reason, reasonWindow):
				c.Windows++
				if k := bytes.Index(line, keyFilePath); k >= 0 && st.root != nil {
					st.window(line[k+len(keyFilePath):])
				}
			}
			if k := bytes.Index(lost, keyCount); k >= 0 {
				num := lost[k+len(keyCount):]
				e := 0
				for e < len(num) && num[e] >= '0' && num[e] <= '9' {
					e++
				}
				n, err := strconv.ParseUint(string(num[:e]), 10, 64)
				if err == nil {
					c.Lost += n
				}
			}
			continue
		}
		op := action
		switch action {
		case OpOpen, OpCreate, OpModify, OpCloseWrite, OpCloseNowrite, OpAccess, OpRename, OpDelete:
		default:
			op = OpOther
		}
		c.Ops[op]++
		if st.root != nil {
			if k := bytes.Index(line, keyFilePath); k >= 0 {
				st.add(line[k+len(keyFilePath):], op)
			}
		}
		if sentinel != "" && !c.SentinelSeen {
			if k := bytes.Index(line, keyPath); k >= 0 && bytes.HasPrefix(line[k+len(keyPath):], []byte("/")) {
				if bytes.Contains(line[k:], sentinelKey) {
					c.SentinelSeen = true
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return c, st, fmt.Errorf("read fanaudit output: %w", err)
	}
	return c, st, nil
}

// window counts an unwatched_window record for the directory it names
// (and for a directory it lies under); path is the rest of the line after
// the opening quote of file.path.
func (st *scopeTally) window(path []byte) {
	for n, d := range st.dirs {
		dir := d[:len(d)-1]
		if bytes.HasPrefix(path, d) || bytes.HasPrefix(path, dir) && len(path) > len(dir) && path[len(dir)] == '"' {
			st.under[n].Windows++
			return
		}
	}
}

// add counts one file record; path is the rest of the line after the
// opening quote of file.path.
func (st *scopeTally) add(path []byte, op Op) {
	for n, d := range st.dirs {
		if bytes.HasPrefix(path, d) {
			st.under[n].Events++
			st.under[n].Ops[op]++
			return
		}
	}
	rest, ok := bytes.CutPrefix(path, st.root)
	if !ok || len(rest) == 0 || (rest[0] != '/' && rest[0] != '"') {
		st.outside++
	}
}

// GoBench is one line of `go test -bench` output.
type GoBench struct {
	Pkg     string
	Name    string
	Iter    int64
	Metrics []Metric // ns/op, B/op, allocs/op and custom units, in printed order
}

// Metric is one value/unit pair of a benchmark line.
type Metric struct {
	Value float64
	Unit  string
}

// ParseGoBench reads `go test -bench` output; "pkg:" lines set the package
// for the benchmark lines that follow.
func ParseGoBench(out string) []GoBench {
	var res []GoBench
	pkg := ""
	for line := range strings.SplitSeq(out, "\n") {
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		if !strings.HasPrefix(line, "Benchmark") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || len(f)%2 != 0 {
			continue
		}
		iter, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		b := GoBench{Pkg: pkg, Name: f[0], Iter: iter}
		for k := 2; k+1 < len(f); k += 2 {
			v, err := strconv.ParseFloat(f[k], 64)
			if err != nil {
				break
			}
			b.Metrics = append(b.Metrics, Metric{Value: v, Unit: f[k+1]})
		}
		res = append(res, b)
	}
	return res
}

// FanauditKernelEvents finds the capture's KernelEvents counter in the
// agent's final stats log line; ok is false when it logged none.
func FanauditKernelEvents(stderr []byte) (n uint64, ok bool) {
	key := []byte(`"KernelEvents":`)
	i := bytes.LastIndex(stderr, key)
	if i < 0 {
		return 0, false
	}
	num := stderr[i+len(key):]
	e := 0
	for e < len(num) && num[e] >= '0' && num[e] <= '9' {
		e++
	}
	n, err := strconv.ParseUint(string(num[:e]), 10, 64)
	return n, err == nil
}
