package record

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// allCases is the golden table plus one full record per action.
func allCases() []struct {
	name string
	rec  Record
} {
	recs := goldenCases()
	for _, a := range append(FileActions(), ActionEventsLost) {
		r := fullRecord()
		r.Action = a
		if a == ActionRename {
			r.File.OriginalPath = "/srv/data/old.txt"
		}
		recs = append(recs, struct {
			name string
			rec  Record
		}{"action_" + a.String(), r})
	}
	return recs
}

// checkGolden compares got with testdata/name, or rewrites it with -update.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	golden := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("encoding drifted from %s (go test ./internal/record -update if intended)\ngot:\n%s\nwant:\n%s", golden, got, want)
	}
}

func TestOCSFGolden(t *testing.T) {
	var buf bytes.Buffer
	for _, tc := range goldenCases() {
		line := NewOCSFEncoder(Options{RunID: testOpts.RunID, Version: "1.2.3"}).Append(nil, &tc.rec)
		if !json.Valid(line) {
			t.Errorf("%s: invalid JSON: %s", tc.name, line)
		}
		fmt.Fprintf(&buf, "# %s\n%s\n", tc.name, line)
	}
	checkGolden(t, "ocsf.golden", buf.Bytes())
}

// TestOCSFSchema validates every golden record and every action against
// the OCSF 1.8.0 JSON Schema of file_activity (host, container profiles).
func TestOCSFSchema(t *testing.T) {
	enc := NewOCSFEncoder(Options{RunID: testOpts.RunID, Version: "1.2.3"})
	var buf []byte
	for _, tc := range allCases() {
		buf = enc.Append(buf, &tc.rec)
		buf = append(buf, '\n')
	}
	testutil.ValidateOCSF(t, buf)
}

func TestOCSFMapping(t *testing.T) {
	want := map[Action]int{
		ActionCreate: 1, ActionAccess: 2, ActionModify: 3, ActionCloseWrite: 3, ActionDelete: 4,
		ActionRename: 5, ActionAttrib: 6, ActionOpen: 14, ActionExec: 99, ActionCloseNowrite: 99,
		ActionDeleteSelf: 4, ActionMoveSelf: 5, ActionEventsLost: 99,
	}
	for _, tc := range allCases() {
		if !strings.HasPrefix(tc.name, "action_") {
			continue
		}
		var got struct {
			ActivityID int `json:"activity_id"`
			TypeUID    int `json:"type_uid"`
			ClassUID   int `json:"class_uid"`
			Metadata   struct {
				UID      string `json:"uid"`
				Sequence uint64 `json:"sequence"`
			} `json:"metadata"`
			File       struct{ Path string }  `json:"file"`
			FileResult *struct{ Path string } `json:"file_result"`
			Unmapped   struct {
				Fanaudit struct {
					Action string `json:"action"`
				} `json:"fanaudit"`
			} `json:"unmapped"`
		}
		line := NewOCSFEncoder(testOpts).Append(nil, &tc.rec)
		if err := json.Unmarshal(line, &got); err != nil {
			t.Fatal(err)
		}
		a := tc.rec.Action
		if got.ActivityID != want[a] || got.TypeUID != 100100+want[a] || got.ClassUID != 1001 || got.Unmapped.Fanaudit.Action != a.String() {
			t.Errorf("%s: %s", a, line)
		}
		if wantID := string(AppendEventID(nil, EventIDPrefix(host, testOpts.RunID), tc.rec.Sequence)); got.Metadata.UID != wantID || got.Metadata.Sequence != tc.rec.Sequence {
			t.Errorf("%s: metadata %+v, want uid %s", a, got.Metadata, wantID)
		}
		if a == ActionRename && (got.File.Path != "/srv/data/old.txt" || got.FileResult == nil || got.FileResult.Path != tc.rec.File.Path) {
			t.Errorf("rename: old path must be in file, new in file_result: %s", line)
		}
	}
}

func TestTextGolden(t *testing.T) {
	var buf bytes.Buffer
	for _, color := range []bool{false, true} {
		enc := NewTextEncoder(Options{Color: color})
		enc.loc = time.UTC // the golden file must not depend on the zone
		for _, tc := range allCases() {
			buf.Write(enc.Append(nil, &tc.rec))
			buf.WriteByte('\n')
		}
	}
	checkGolden(t, "text.golden", buf.Bytes())
}

func TestTextLine(t *testing.T) {
	enc := NewTextEncoder(Options{})
	enc.loc = time.UTC
	r := fullRecord()
	r.User.HasEID = false
	if got, want := string(enc.Append(nil, &r)), "01:02:03.000 close_write   /srv/data/report.txt  vim[4242] alice"; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	r.Action, r.File.OriginalPath = ActionRename, "/srv/a\nb"
	if got := string(enc.Append(nil, &r)); !strings.Contains(got, `/srv/a\x0ab -> /srv/data/report.txt`) {
		t.Errorf("rename: %q", got)
	}
	if got := string(enc.Append(nil, &Record{Timestamp: ts, Action: ActionEventsLost, Fanaudit: Meta{Lost: Lost{HasCount: true, Count: 17, Reason: ReasonQueueFull, Sink: "stdout"}}})); got != "01:02:03.000 events_lost   17 records lost: queue_full (sink stdout)" {
		t.Errorf("loss: %q", got)
	}
	if got := enc.Append(nil, &r); bytes.Contains(got, []byte("\x1b")) {
		t.Errorf("colour without Color: %q", got)
	}
	if got := NewTextEncoder(Options{Color: true}).Append(nil, &r); !bytes.Contains(got, []byte("\x1b[36mrename\x1b[0m")) {
		t.Errorf("no colour with Color: %q", got)
	}
}

func TestFormatEncodersNoAlloc(t *testing.T) {
	for f := FormatECS; f < NumFormats; f++ {
		enc := NewFormatEncoder(f, Options{RunID: "r", Version: "v"})
		recs := allCases()
		buf := make([]byte, 0, 8192)
		for i := range recs {
			buf = enc.Append(buf[:0], &recs[i].rec) // grow internal buffers
		}
		if n := testing.AllocsPerRun(20, func() {
			for i := range recs {
				buf = enc.Append(buf[:0], &recs[i].rec)
			}
		}); n != 0 {
			t.Errorf("%s: %v allocations per %d records", f, n, len(recs))
		}
	}
}

func TestParseFormat(t *testing.T) {
	for f := FormatECS; f < NumFormats; f++ {
		if g, ok := ParseFormat(f.String()); !ok || g != f {
			t.Errorf("%s does not round-trip", f)
		}
	}
	if _, ok := ParseFormat("json"); ok {
		t.Error("json accepted")
	}
}

func benchFormat(b *testing.B, f Format) {
	r := fullRecord()
	enc := NewFormatEncoder(f, Options{RunID: "5f2c0a1b9d3e4f60", Version: "v1"})
	buf := make([]byte, 0, 8192)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r.Sequence = uint64(i + 1)
		buf = enc.Append(buf[:0], &r)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkFormatECS(b *testing.B)  { benchFormat(b, FormatECS) }
func BenchmarkFormatOCSF(b *testing.B) { benchFormat(b, FormatOCSF) }
func BenchmarkFormatText(b *testing.B) { benchFormat(b, FormatText) }

// TestOCSFCacheMatchesFresh: the OCSF encoder's reused members give the
// same bytes as a fresh encoder for every record, in an order where the
// actor stays, changes and comes back.
func TestOCSFCacheMatchesFresh(t *testing.T) {
	var recs []Record
	for _, c := range allCases() {
		recs = append(recs, c.rec, c.rec)
	}
	for i := len(recs) - 1; i >= 0; i-- {
		recs = append(recs, recs[i])
	}
	enc := NewOCSFEncoder(testOpts)
	for i := range recs {
		got := enc.Append(nil, &recs[i])
		want := NewOCSFEncoder(testOpts).Append(nil, &recs[i])
		if !bytes.Equal(got, want) {
			t.Fatalf("record %d:\ncached %s\nfresh  %s", i, got, want)
		}
	}
}
