package pipeline

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/internal/record"
	"github.com/fanaudit/fanaudit/sinks"
)

// TestRealSinksWriteEveryLineIntact runs records through the real sinks
// that write from the fan-out's slabs, at different speeds and with every
// when_full policy: a file sink rotating by size and gzipping (block), a
// stdout sink on a pipe read in small pieces (drop_oldest, a tiny queue)
// and a file sink that fsyncs every batch (drop_newest). Every line each
// one wrote must be byte for byte the encoding of its record (a slab
// reused while a sink still read it would tear or duplicate lines), in
// increasing sequence, and each sink's lines plus the losses announced
// for it must add up to every record produced. Some records are much
// longer than the rest, so that lines outgrow a slab's buffer.
func TestRealSinksWriteEveryLineIntact(t *testing.T) {
	const n = 30000
	src := &fakeSource{sent: make(chan struct{})}
	ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var recs []*record.Record
	for j := 0; len(recs) < n; j++ {
		var b []*record.Record
		for range 1 + j%61 {
			i := len(recs)
			path := "/m/f" + strings.Repeat("x", i%7)
			if i%997 == 0 {
				path += strings.Repeat("y", 4000)
			}
			r := &record.Record{Timestamp: ts, Action: record.ActionCloseWrite, File: record.File{Path: path}, Process: record.Process{Pid: int32(i + 1)}}
			recs = append(recs, r)
			b = append(b, r)
			if len(recs) == n {
				break
			}
		}
		src.batches = append(src.batches, b)
	}

	dir := t.TempDir()
	fileOpts := func(name string, fsync sinks.FsyncMode) sinks.FileOptions {
		o := sinks.DefaultFileOptions()
		o.Path = filepath.Join(dir, name, "events.json")
		o.Fsync = fsync
		return o
	}
	ao := fileOpts("a", sinks.FsyncNever)
	ao.MaxSizeMB, ao.MaxBackups, ao.Compress = 1, 0, true
	a, err := sinks.NewFile(ao, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	co := fileOpts("c", sinks.FsyncAlways)
	c, err := sinks.NewFile(co, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	read := make(chan []byte, 1)
	go func() {
		var out []byte
		small := make([]byte, 512)
		for {
			k, err := pr.Read(small)
			out = append(out, small[:k]...)
			if err != nil {
				read <- out
				return
			}
		}
	}()
	b := sinks.NewStdout(pw, zerolog.Nop())

	p, err := New(Options{Source: src, Sinks: []SinkSpec{
		{Name: "a", Sink: a, QueueSize: 4096, Policy: sinks.Block},
		{Name: "b", Sink: b, QueueSize: 8, Policy: sinks.DropOldest},
		{Name: "c", Sink: c, QueueSize: 4096, Policy: sinks.DropNewest},
	}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range p.queues {
		if !q.InOrder() {
			t.Fatalf("sink %s does not settle in order: its lines are not in slabs", q.Name())
		}
	}
	cancel, done := runPipeline(t, p)
	<-src.sent
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	pw.Close()
	bOut := <-read

	// The fan-out numbered the records: each one's line is its encoding.
	enc := record.NewFormatEncoder(p.opts.Sinks[0].Format, p.opts.Encoding)
	want := make(map[uint64][]byte, n)
	for _, r := range recs {
		want[r.Sequence] = append(enc.Append(nil, r), '\n')
	}
	produced := p.Stats().Produced

	check := func(name string, data []byte) {
		t.Helper()
		var lines, lost, last uint64
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := append(sc.Bytes(), '\n')
			var l lossLine
			if err := json.Unmarshal(line, &l); err != nil {
				t.Fatalf("sink %s: line %d is not JSON (%v): %.200q", name, lines+1, err, line)
			}
			seq := l.Event.Sequence
			if seq <= last {
				t.Fatalf("sink %s: sequence %d after %d", name, seq, last)
			}
			last = seq
			lines++
			if l.Fanaudit.Lost.Reason != "" {
				if l.Fanaudit.Lost.Sink == name {
					lost += l.Fanaudit.Lost.Count
				}
				continue
			}
			if w, ok := want[seq]; !ok || !bytes.Equal(line, w) {
				t.Fatalf("sink %s: line of sequence %d is not its record's:\n got %.300q\nwant %.300q", name, seq, line, w)
			}
		}
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		if lines+lost != produced {
			t.Errorf("sink %s: %d lines + %d announced lost = %d, want %d produced", name, lines, lost, lines+lost, produced)
		}
		t.Logf("sink %s: %d lines, %d lost", name, lines, lost)
	}
	check("a", readAll(t, ao.Path))
	check("b", bOut)
	check("c", readAll(t, co.Path))
}

// readAll returns a file sink's output: its rotated files (gzipped or
// not) in the order they were written, then the current file.
func readAll(t *testing.T, path string) []byte {
	t.Helper()
	backups, err := filepath.Glob(path + ".*")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(backups)
	var out []byte
	for _, f := range append(backups, path) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(f, ".gz") {
			zr, err := gzip.NewReader(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if data, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, data...)
	}
	return out
}
