package record

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"testing"
	"time"
	"unicode/utf8"
)

var update = flag.Bool("update", false, "rewrite golden files")

var (
	ts    = time.Date(2026, 11, 22, 1, 2, 3, 4000, time.UTC)
	start = time.Date(2026, 11, 21, 23, 0, 0, 500, time.FixedZone("CET", 3600))
	host  = &Host{Hostname: "vm1", ID: "0123456789abcdef0123456789abcdef", BootID: "b6f0a3a8-1c2d-4e5f-8a9b-0c1d2e3f4a5b", Kernel: "6.8.0-31-generic"}
	// testOpts are the per-run options of the golden records.
	testOpts = Options{RunID: "5f2c0a1b9d3e4f60"}
)

// encode encodes r alone with testOpts, as the agent's first record.
func encode(r *Record) []byte { return NewEncoder(testOpts).Append(nil, r) }

func fullRecord() Record {
	return Record{
		Timestamp: ts, Action: ActionCloseWrite, Sequence: 42,
		File: File{
			Path: "/srv/data/report.txt", Type: "file",
			HasStat: true, Inode: 1234567, Mode: 0o100644, Size: 4096, UID: 1000, GID: 1000,
			SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		},
		Process: Process{
			Pid: 4242, PPid: 1, Executable: "/usr/bin/vim", Name: "vim",
			CommandLine: "vim report.txt", Args: "vim\x00report.txt", Start: start, EntityID: "vm1-4242-123456789",
			ParentExecutable: "/usr/lib/systemd/systemd", ParentEntityID: "vm1-1-1",
			CgroupPath: "/user.slice/user-1000.slice/session-3.scope",
		},
		User: User{
			HasID: true, ID: 1000, Name: "alice", HasEID: true, EID: 0,
			HasGID: true, GID: 1000, Group: "alice",
			HasAUID: true, AUID: 1000, AName: "alice", HasSess: true, Session: 3,
		},
		Container: Container{ID: "3f4e5d6c7b8a", Runtime: "docker"},
		Host:      host,
		Fanaudit:  Meta{Enrichment: "full"},
	}
}

// goldenCases is the table the golden file pins; its names are the keys.
func goldenCases() []struct {
	name string
	rec  Record
} {
	partial := fullRecord()
	partial.Action = ActionOpen
	partial.File.SHA256 = ""
	partial.Process = Process{Pid: 77}
	partial.User = User{HasID: true, ID: 0, HasEID: true, EID: 0, HasGID: true, GID: 0, HasAUID: true, AUID: unsetID, HasSess: true, Session: unsetID}
	partial.Container = Container{}
	partial.Fanaudit = Meta{Enrichment: "partial", Missing: []string{"process", "user"}}

	rename := fullRecord()
	rename.Action = ActionRename
	rename.File = File{Path: "/m/new name", OriginalPath: "/m/old\\xffname", Type: "dir", HasStat: true, Mode: 0o40755 | 0o4000}

	del := Record{Timestamp: ts, Action: ActionDelete, Sequence: 9, File: File{Path: "/m/a/b"}, Host: host, Fanaudit: Meta{Enrichment: "partial", Missing: []string{"stat"}}}

	hashSkipped := fullRecord()
	hashSkipped.File.SHA256 = ""
	hashSkipped.File.HashStatus = "skipped_size"

	// An exec with quoted and empty arguments: argv keeps them apart.
	execArgs := fullRecord()
	execArgs.Action = ActionExec
	execArgs.File = File{Path: "/usr/local/bin/tool.sh", Type: "file"}
	execArgs.Process.CommandLine = "sh -c echo \"a b\"  'c'"
	execArgs.Process.Args = "sh\x00-c\x00echo \"a b\"\x00\x00'c'"

	// A device node: its type is not one ECS lists for file.type.
	dev := fullRecord()
	dev.Action = ActionAttrib
	dev.File = File{Path: "/dev/.hidden", Type: "char_device"}

	return []struct {
		name string
		rec  Record
	}{
		{"full_close_write", fullRecord()},
		{"partial_open_root_unset_audit", partial},
		{"rename_setuid_dir", rename},
		{"delete_minimal", del},
		{"hash_skipped", hashSkipped},
		{"exec_args", execArgs},
		{"char_device_dotfile", dev},
		{"kernel_overflow", Record{Timestamp: ts, Action: ActionEventsLost, Sequence: 1, Host: host,
			Fanaudit: Meta{Lost: Lost{Reason: ReasonKernelOverflow}}}},
		{"queue_full", Record{Timestamp: ts, Action: ActionEventsLost, Sequence: 100, Host: host,
			Fanaudit: Meta{Lost: Lost{HasCount: true, Count: 17, Reason: ReasonQueueFull, Sink: "archive"}}}},
		{"previous_run_loss", Record{Timestamp: ts, Action: ActionEventsLost, Sequence: 5, Host: host,
			Fanaudit: Meta{Lost: Lost{HasCount: true, Count: 3, Reason: "dead_letter", Sink: "kafka", PreviousRunID: "0011223344556677"}}}},
		{"agent_restart", Record{Timestamp: ts, Action: ActionEventsLost, Sequence: 1, Host: host,
			Fanaudit: Meta{Lost: Lost{Reason: ReasonAgentRestart, PreviousRunID: "8899aabbccddeeff", HasLastSequence: true, LastSequence: 12345}}}},
		{"unwatched_window", Record{Timestamp: ts, Action: ActionEventsLost, Sequence: 7, Host: host,
			File: File{Path: "/srv/data/new", Type: "dir"}, Fanaudit: Meta{Lost: Lost{Reason: ReasonUnwatchedWindow}}}},
		{"zero_count_lost", Record{Timestamp: ts, Action: ActionEventsLost, Sequence: 2,
			Fanaudit: Meta{Lost: Lost{HasCount: true, Count: 0, Reason: ReasonQueueFull, Sink: "out"}}}},
		{"escaping", Record{Timestamp: ts, Action: ActionCreate, Sequence: 3,
			File:    File{Path: "/m/q\"b\\s\x01\x1f\n\r\t\b\f\x7f\u2028\u2029é😀\xff\xc3"},
			Process: Process{Pid: 1, CommandLine: "sh -c 'echo \"<&>\"'"}}},
	}
}

func TestAppendJSONGolden(t *testing.T) {
	var buf bytes.Buffer
	for _, tc := range goldenCases() {
		line := encode(&tc.rec)
		if !json.Valid(line) {
			t.Errorf("%s: invalid JSON: %s", tc.name, line)
		}
		fmt.Fprintf(&buf, "# %s\n%s\n", tc.name, line)
	}
	golden := filepath.Join("testdata", "records.golden")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("encoding drifted from %s (go test ./internal/record -update if intended)\ngot:\n%s\nwant:\n%s", golden, buf.Bytes(), want)
	}
}

func TestAppendJSONAppends(t *testing.T) {
	r := fullRecord()
	prefix := []byte("xyz")
	got := r.AppendJSON(prefix)
	if !bytes.HasPrefix(got, prefix) || !json.Valid(got[3:]) {
		t.Fatalf("AppendJSON must append after dst: %s", got)
	}
}

func TestAppendJSONRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"ascii", "/tmp/a b"},
		{"quotes", `a"b\c`},
		{"controls", "\x00\x01\x1f\x7f"},
		{"separators", "a\u2028b\u2029c"},
		{"utf8", "héllo wörld 日本 😀"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Record{Timestamp: ts, Action: ActionOpen, Sequence: 1, File: File{Path: tc.in}}
			var got struct {
				File struct{ Path string } `json:"file"`
			}
			if err := json.Unmarshal(r.AppendJSON(nil), &got); err != nil {
				t.Fatal(err)
			}
			if got.File.Path != tc.in {
				t.Errorf("round trip: got %q want %q", got.File.Path, tc.in)
			}
		})
	}
	r := Record{Action: ActionOpen, File: File{Path: "a\xffb\xc3"}}
	var got map[string]map[string]any
	if err := json.Unmarshal(r.AppendJSON(nil), &got); err != nil {
		t.Fatal(err)
	}
	if p := got["file"]["path"]; p != "a\ufffdb\ufffd" {
		t.Errorf("invalid UTF-8: got %q", p)
	}
}

func TestAppendJSONTimestampWidth(t *testing.T) {
	for _, ns := range []int{0, 1, 100, 999999999} {
		r := Record{Timestamp: time.Date(2026, 1, 2, 3, 4, 5, ns, time.FixedZone("X", -7200)), Action: ActionOpen, Sequence: 1}
		var got struct {
			TS string `json:"@timestamp"`
		}
		if err := json.Unmarshal(r.AppendJSON(nil), &got); err != nil {
			t.Fatal(err)
		}
		if len(got.TS) != len("2026-01-02T05:04:05.000000000Z") || got.TS[len(got.TS)-1] != 'Z' {
			t.Errorf("ns=%d: @timestamp %q is not fixed-width UTC", ns, got.TS)
		}
	}
}

// TestAppendJSONSchema checks every golden record, and every action, against
// docs/fanaudit.schema.json, so the published schema and the encoder can't
// drift apart.
func TestAppendJSONSchema(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", "fanaudit.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatalf("schema: %v", err)
	}
	recs := goldenCases()
	for _, a := range FileActions() {
		r := fullRecord()
		r.Action = a
		recs = append(recs, struct {
			name string
			rec  Record
		}{a.String(), r})
	}
	seen := map[string]bool{}
	for _, tc := range recs {
		line := encode(&tc.rec)
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		for _, e := range validate(schema, v, "") {
			t.Errorf("%s: %s", tc.name, e)
		}
		walkPaths(v, "", seen)
	}
	// Every schema property must be exercised by the table, so a field
	// the encoder stopped writing is noticed.
	var missing []string
	walkSchema(schema, "", func(p string) {
		if !seen[p] {
			missing = append(missing, p)
		}
	})
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("schema fields no test record produces: %v", missing)
	}
}

func walkPaths(v any, prefix string, seen map[string]bool) {
	m, ok := v.(map[string]any)
	if !ok {
		return
	}
	for k, c := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		seen[p] = true
		walkPaths(c, p, seen)
	}
}

func walkSchema(s map[string]any, prefix string, f func(string)) {
	props, _ := s["properties"].(map[string]any)
	for k, c := range props {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		f(p)
		if cs, ok := c.(map[string]any); ok {
			walkSchema(cs, p, f)
		}
	}
}

// validate implements the subset of JSON Schema the record schema uses:
// type, properties, additionalProperties:false, required, items, enum,
// pattern and minimum. A string may be empty only where minLength is 0
// (an argv element).
func validate(s map[string]any, v any, at string) []string {
	var errs []string
	fail := func(f string, a ...any) { errs = append(errs, fmt.Sprintf("%s: %s", at, fmt.Sprintf(f, a...))) }
	switch s["type"] {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			fail("want object, got %T", v)
			return errs
		}
		props, _ := s["properties"].(map[string]any)
		for k, c := range m {
			ps, ok := props[k].(map[string]any)
			if !ok {
				if s["additionalProperties"] == false {
					fail("unexpected property %q", k)
				}
				continue
			}
			errs = append(errs, validate(ps, c, at+"/"+k)...)
		}
		req, _ := s["required"].([]any)
		for _, r := range req {
			if _, ok := m[r.(string)]; !ok {
				fail("missing required %q", r)
			}
		}
		if len(m) == 0 {
			fail("empty object should have been omitted")
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			fail("want array, got %T", v)
			return errs
		}
		items, _ := s["items"].(map[string]any)
		for i, c := range a {
			errs = append(errs, validate(items, c, fmt.Sprintf("%s/%d", at, i))...)
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			fail("want string, got %T", v)
			return errs
		}
		if str == "" && s["minLength"] != 0.0 {
			fail("empty string should have been omitted")
		}
		if p, ok := s["pattern"].(string); ok && !regexp.MustCompile(p).MatchString(str) {
			fail("%q does not match %s", str, p)
		}
	case "integer":
		n, ok := v.(json.Number)
		if !ok {
			fail("want integer, got %T", v)
			return errs
		}
		i, err := n.Int64()
		if err != nil {
			fail("want integer, got %s", n)
		}
		if m, ok := s["minimum"].(float64); ok && float64(i) < m {
			fail("%d below minimum %v", i, m)
		}
	default:
		fail("schema type %v not supported by this validator", s["type"])
	}
	if enum, ok := s["enum"].([]any); ok {
		found := false
		for _, e := range enum {
			if e == v {
				found = true
			}
		}
		if !found {
			fail("%v not in enum %v", v, enum)
		}
	}
	return errs
}

func BenchmarkAppendJSON(b *testing.B) {
	r := fullRecord()
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = r.AppendJSON(buf[:0])
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkAppendJSONMinimal(b *testing.B) {
	r := Record{Timestamp: ts, Action: ActionDelete, Sequence: 9, File: File{Path: "/m/a/b"}}
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = r.AppendJSON(buf[:0])
	}
}

func TestAppendJSONNoAlloc(t *testing.T) {
	r := fullRecord()
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() { buf = r.AppendJSON(buf[:0]) }); n != 0 {
		t.Errorf("AppendJSON allocates %v times per record", n)
	}
}

// wantString is what a JSON decoder must get back from appendString: s,
// with each byte of invalid UTF-8 replaced by U+FFFD.
func wantString(s string) string {
	var b []rune
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		b = append(b, r)
		i += n
	}
	return string(b)
}

func checkString(t *testing.T, s string) {
	t.Helper()
	enc := appendString(nil, s)
	var got string
	if err := json.Unmarshal(enc, &got); err != nil {
		t.Fatalf("%q encodes to invalid JSON %s: %v", s, enc, err)
	}
	if want := wantString(s); got != want {
		t.Fatalf("%q: decoded %q, want %q (encoded %s)", s, got, want, enc)
	}
	if bytes.ContainsAny(enc, "\u2028\u2029") {
		t.Fatalf("%q: raw line separator in %s", s, enc)
	}
}

// TestAppendStringEveryByte puts every byte value at every offset of a
// 17-byte string, so both the 8-byte fast path and the tail see it.
func TestAppendStringEveryByte(t *testing.T) {
	base := []byte("abcdefghijklmnopq")
	for pos := range base {
		for c := 0; c < 256; c++ {
			s := append([]byte(nil), base...)
			s[pos] = byte(c)
			checkString(t, string(s))
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "/tmp/a", "a\"b\\c", "\x00\x1f\x7f\x80\xff", "é\u2028😀", "aaaaaaaa\"aaaaaaaa\\"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkString(t, s) })
}

// TestEncoderMatchesAppendJSON runs the golden records through one Encoder
// in an order where the cached actor members stay, change and come back,
// and requires the same bytes as AppendJSON every time.
func TestEncoderMatchesAppendJSON(t *testing.T) {
	var recs []Record
	for _, c := range goldenCases() {
		recs = append(recs, c.rec, c.rec)
	}
	for i := len(recs) - 1; i >= 0; i-- {
		recs = append(recs, recs[i])
	}
	// Same actor, other file: the cached members must be reused.
	a, b := fullRecord(), fullRecord()
	b.File.Path, b.Sequence = "/other", 99
	// Same file, other actor: the cache must not be.
	c := fullRecord()
	c.Process.Pid++
	c.User.Name = "someone-else"
	// Another read: another timestamp, which must not be reused.
	d := fullRecord()
	d.Timestamp = d.Timestamp.Add(1500 * time.Millisecond)
	// fanaudit members: another Missing slice of the same length, another
	// hash status, and back.
	p1, p2 := fullRecord(), fullRecord()
	p1.Fanaudit = Meta{Enrichment: "partial", Missing: []string{"process.executable"}}
	p2.Fanaudit = Meta{Enrichment: "partial", Missing: []string{"user.id"}}
	h := p1
	h.File.HashStatus = "skipped_size"
	recs = append(recs, a, b, c, a, d, a, p1, p1, p2, h, p1, a)
	var enc Encoder
	for i := range recs {
		got := enc.Append(nil, &recs[i])
		want := recs[i].AppendJSON(nil)
		if string(got) != string(want) {
			t.Fatalf("record %d:\nencoder    %s\nAppendJSON %s", i, got, want)
		}
	}
}

func BenchmarkEncoder(b *testing.B) {
	r := fullRecord()
	var enc Encoder
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r.Sequence = uint64(i + 1)
		buf = enc.Append(buf[:0], &r)
	}
	b.SetBytes(int64(len(buf)))
}

func TestSplitPath(t *testing.T) {
	tests := []struct{ path, dir, name, ext string }{
		{"/etc/passwd", "/etc", "passwd", ""},
		{"/a", "/", "a", ""},
		{"/", "", "", ""},
		{"/srv/x/archive.tar.gz", "/srv/x", "archive.tar.gz", "gz"},
		{"/home/u/.bashrc", "/home/u", ".bashrc", ""},
		{"/home/u/.config.bak", "/home/u", ".config.bak", "bak"},
		{"/m/trailing.", "/m", "trailing.", ""},
		{"/m/dir.d/file", "/m/dir.d", "file", ""},
		{"/m/sub/", "", "", ""},
	}
	for _, tc := range tests {
		dir, name, ext := SplitPath(tc.path)
		if dir != tc.dir || name != tc.name || ext != tc.ext {
			t.Errorf("SplitPath(%q) = %q, %q, %q; want %q, %q, %q", tc.path, dir, name, ext, tc.dir, tc.name, tc.ext)
		}
	}
}

func TestEventID(t *testing.T) {
	if got := string(AppendEventID(nil, EventIDPrefix(host, "r1"), 42)); got != host.ID+":"+host.BootID+":r1:42" {
		t.Errorf("event id %q", got)
	}
	noID := &Host{Hostname: "vm2", BootID: "b"}
	if got := EventIDPrefix(noID, "r1"); got != "vm2:b:r1:" {
		t.Errorf("without a machine id: %q", got)
	}
	for _, h := range []*Host{nil, {BootID: "b"}} {
		if got := EventIDPrefix(h, "r1"); got != "" {
			t.Errorf("EventIDPrefix(%v) = %q, want none", h, got)
		}
	}
	if got := EventIDPrefix(host, ""); got != "" {
		t.Errorf("no run id: %q", got)
	}
	// The encoder writes the same id.
	r := fullRecord()
	var got struct {
		Event struct {
			ID string `json:"id"`
		} `json:"event"`
		Fanaudit struct {
			RunID string `json:"run_id"`
		} `json:"fanaudit"`
	}
	if err := json.Unmarshal(encode(&r), &got); err != nil {
		t.Fatal(err)
	}
	if want := string(AppendEventID(nil, EventIDPrefix(host, testOpts.RunID), r.Sequence)); got.Event.ID != want || got.Fanaudit.RunID != testOpts.RunID {
		t.Errorf("event.id %q run_id %q; want %q %q", got.Event.ID, got.Fanaudit.RunID, want, testOpts.RunID)
	}
}

func TestEncoderNoAlloc(t *testing.T) {
	r := fullRecord()
	enc := NewEncoder(testOpts)
	buf := make([]byte, 0, 4096)
	// Alternate two processes so the cached members are rebuilt each time.
	r2 := fullRecord()
	r2.Process.Pid++
	if n := testing.AllocsPerRun(100, func() {
		r.Sequence++
		buf = enc.Append(buf[:0], &r)
		buf = enc.Append(buf[:0], &r2)
	}); n != 0 {
		t.Errorf("Encoder.Append allocates %v times per record", n)
	}
}
