package sinks

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/internal/seal"
)

// newSealer makes a fresh seal state in a private directory and opens it.
func newSealer(t testing.TB) (*seal.Sealer, seal.Key) {
	t.Helper()
	state := filepath.Join(t.TempDir(), "seal.state")
	k0, err := seal.Keygen(state)
	if err != nil {
		t.Fatal(err)
	}
	sl, err := seal.Open(state, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return sl, k0
}

// sealSource reads files in order (gzip transparently) as a seal.Source.
func sealSource(t *testing.T, files []string, edit func(name string, no int, line []byte) []byte) seal.Source {
	t.Helper()
	type file struct {
		name  string
		lines [][]byte
	}
	var fs []file
	for _, name := range files {
		data := readFileGz(t, name)
		f := file{name: filepath.Base(name)}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			l := bytes.Clone(sc.Bytes())
			if edit != nil {
				l = edit(f.name, len(f.lines)+1, l)
			}
			f.lines = append(f.lines, l)
		}
		fs = append(fs, f)
	}
	return func(yield func(seal.Line) bool) error {
		for _, f := range fs {
			for i, l := range f.lines {
				if !yield(seal.Line{Name: f.name, No: i + 1, Data: l}) {
					return nil
				}
			}
		}
		return nil
	}
}

// A sealed file sink written in batches of many lines (AppendRun seals
// them in place), through size rotations with gzip: verify accepts every
// file in order, and names the file and block of a changed record.
func TestFileSealedBatches(t *testing.T) {
	o := testOpts(t.TempDir())
	o.MaxBackups = 0
	o.Compress = true
	s := newTestFile(t, o)
	s.maxSize = 20 << 10 // ~200 lines a file: rotations inside batches
	sl, k0 := newSealer(t)
	s.SetSealer(sl)
	const n = 3000
	q := NewQueue("file", 1024, Block)
	done := runSink(context.Background(), s, q)
	for seq := uint64(1); seq <= n; seq++ {
		if err := q.Push(context.Background(), padItem(seq)); err != nil {
			t.Fatal(err)
		}
	}
	q.Close()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	files := allFiles(t, o.Path)
	if len(files) < 5 {
		t.Fatalf("want several rotations, got %v", files)
	}
	rep, err := seal.VerifyReport(k0, sealSource(t, files, nil), seal.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) != 0 || rep.Records != n {
		t.Fatalf("intact sink: %d records, findings %v", rep.Records, rep.Findings)
	}

	// One byte of one record in the third file changed.
	target := filepath.Base(files[2])
	var at int
	edit := func(name string, no int, l []byte) []byte {
		if name == target && at == 0 && !seal.IsSeal(l) && no > 40 {
			at = no
			return bytes.Replace(l, []byte(`"pad":"x`), []byte(`"pad":"y`), 1)
		}
		return l
	}
	fs, err := seal.Verify(k0, sealSource(t, files, edit), seal.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 1 || fs[0].Name != target || fs[0].Line > at || at-fs[0].Line >= seal.BlockLines || !strings.Contains(fs[0].Msg, "record changed") {
		t.Fatalf("changed %s:%d, findings %v", target, at, fs)
	}
}

// BenchmarkFileSinkSealed is BenchmarkFileSink (fsync never) with and
// without sealing, side by side: the difference in cpu-ns/op (the
// process's CPU time per record, producer included, so that the sink's
// wake-ups count too) is what sealing costs per record. Run it on a
// tmpfs TMPDIR, or the disk's writeback decides the figures.
func BenchmarkFileSinkSealed(b *testing.B) {
	line := padItem(1).Line
	line = append(bytes.Repeat([]byte(" "), 1000-len(line)), line...) // ~1000-byte records, the agent's size
	for _, sealed := range []bool{false, true} {
		name := "unsealed"
		if sealed {
			name = "sealed"
		}
		b.Run(name, func(b *testing.B) {
			o := testOpts(b.TempDir())
			o.Fsync = FsyncNever
			o.MaxSizeMB = 0
			s, err := NewFile(o, zerolog.Nop())
			if err != nil {
				b.Fatal(err)
			}
			if sealed {
				sl, _ := newSealer(b)
				s.SetSealer(sl)
			}
			q := NewQueue("file", 8192, Block)
			ctx := context.Background()
			it := &Item{Seq: 1, Line: line}
			b.SetBytes(int64(len(line)))
			b.ReportAllocs()
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx, q) }()
			cpu0 := processCPU()
			for b.Loop() {
				if err := q.Push(ctx, it); err != nil {
					b.Fatal(err)
				}
			}
			q.Close()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// processCPU is the CPU time the test process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// On a quiet stream the waiting sink seals when the interval is up, and
// the wait it keeps across batches re-arms for the next seal.
func TestFileSealedQuiet(t *testing.T) {
	o := testOpts(t.TempDir())
	s := newTestFile(t, o)
	state := filepath.Join(t.TempDir(), "seal.state")
	k0, err := seal.Keygen(state)
	if err != nil {
		t.Fatal(err)
	}
	sl, err := seal.Open(state, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	s.SetSealer(sl)
	q := NewQueue("file", 64, Block)
	done := runSink(context.Background(), s, q)
	seals := func() int {
		b, _ := os.ReadFile(o.Path)
		return bytes.Count(b, []byte(`"kind":"interval"`))
	}
	for i := range 3 {
		if err := q.Push(context.Background(), padItem(uint64(i+1))); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for seals() < i+1 {
			if time.Now().After(deadline) {
				t.Fatalf("no interval seal %d on a quiet stream", i+1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	q.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := seals(); n != 3 {
		t.Fatalf("%d interval seals for 3 quiet records", n)
	}
	fs, err := seal.Verify(k0, sealSource(t, []string{o.Path}, nil), seal.VerifyOptions{})
	if err != nil || len(fs) != 0 {
		t.Fatalf("findings %v, %v", fs, err)
	}
}
