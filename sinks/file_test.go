package sinks

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// padItem is a ~100-byte line carrying seq.
func padItem(seq uint64) *Item {
	return &Item{Seq: seq, Line: fmt.Appendf(nil, "{\"event\":{\"sequence\":%d},\"pad\":\"%s\"}\n", seq, strings.Repeat("x", 64))}
}

// spanItems returns a maker of padItem lines that lie back to back in
// buffers of n lines, with Span set, the way the pipeline encodes them, so
// that the sink writes runs of them from there instead of copying.
func spanItems(n int) func(uint64) *Item {
	var buf []byte
	return func(seq uint64) *Item {
		if cap(buf)-len(buf) < 128 {
			buf = make([]byte, 0, n*128)
		}
		start := len(buf)
		buf = append(buf, padItem(seq).Line...)
		end := len(buf)
		return &Item{Seq: seq, Line: buf[start:end:end], Span: buf[start:end:cap(buf)]}
	}
}

// parseSeq returns the sequence of one whole line, or an error if the line
// is not one of ours.
func parseSeq(line string) (uint64, error) {
	var seq uint64
	if _, err := fmt.Sscanf(line, "{\"event\":{\"sequence\":%d}", &seq); err != nil {
		return 0, fmt.Errorf("line %q: %w", line, err)
	}
	if !strings.HasSuffix(line, "\"}") && !strings.HasSuffix(line, "}") {
		return 0, fmt.Errorf("line %q is cut", line)
	}
	return seq, nil
}

// readSeqs reads a (possibly gzipped) file and returns its sequences,
// failing on any partial or foreign line.
func readSeqs(t *testing.T, name string) []uint64 {
	t.Helper()
	data := readFileGz(t, name)
	if len(data) > 0 && data[len(data)-1] != '\n' {
		t.Fatalf("%s does not end with a whole line: ...%q", name, data[max(len(data)-40, 0):])
	}
	var out []uint64
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		seq, err := parseSeq(sc.Text())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out = append(out, seq)
	}
	return out
}

// readFileGz reads a file, gunzipped when its name ends in .gz.
func readFileGz(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(name, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if data, err = io.ReadAll(zr); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	return data
}

// allFiles lists path and its backups, oldest backup first, path last.
func allFiles(t *testing.T, path string) []string {
	t.Helper()
	names, err := filepath.Glob(path + ".*")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return append(names, path)
}

func wantRange(t *testing.T, got []uint64, from, to uint64) {
	t.Helper()
	if uint64(len(got)) != to-from+1 {
		t.Fatalf("got %d lines, want %d..%d", len(got), from, to)
	}
	for i, seq := range got {
		if seq != from+uint64(i) {
			t.Fatalf("line %d has seq %d, want %d", i, seq, from+uint64(i))
		}
	}
}

func newTestFile(t *testing.T, opts FileOptions) *File {
	t.Helper()
	s, err := NewFile(opts, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	s.retryMin, s.retryMax = time.Millisecond, 10*time.Millisecond
	return s
}

func testOpts(dir string) FileOptions {
	o := DefaultFileOptions()
	o.Path = filepath.Join(dir, "events.json")
	return o
}

// writeSync pushes and writes seqs from..to through s without Run, so
// tests can act between batches without waiting on anything.
func writeSync(t *testing.T, s *File, q *Queue, from, to uint64) {
	t.Helper()
	ctx := context.Background()
	for seq := from; seq <= to; seq++ {
		if err := q.Push(ctx, padItem(seq)); err != nil {
			t.Fatal(err)
		}
		items, err := q.Next(ctx, make([]*Item, 0, 1))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.write(ctx, q, items); err != nil {
			t.Fatal(err)
		}
	}
}

// runAll pushes seqs from..to, closes q and waits for Run.
func runAll(t *testing.T, s *File, q *Queue, from, to uint64) {
	t.Helper()
	runAllWith(t, s, q, from, to, padItem)
}

// runAllWith is runAll with items made by mk.
func runAllWith(t *testing.T, s *File, q *Queue, from, to uint64, mk func(uint64) *Item) {
	t.Helper()
	done := runSink(context.Background(), s, q)
	pushRange(t, context.Background(), q, from, to, mk)
	closeAndWait(t, q, done)
	st := q.Stats()
	checkInvariant(t, st)
	if st.InFlight != 0 || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFileOptionsValidate(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(o *FileOptions)
		wantKey string
	}{
		{"defaults with path", func(o *FileOptions) {}, ""},
		{"no path", func(o *FileOptions) { o.Path = "" }, "path"},
		{"relative path", func(o *FileOptions) { o.Path = "x.json" }, "path"},
		{"dir path", func(o *FileOptions) { o.Path = "/var/log/" }, "path"},
		{"file mode", func(o *FileOptions) { o.FileMode = 600 }, "file_mode"},
		{"dir mode", func(o *FileOptions) { o.DirMode = 0o4755 }, "dir_mode"},
		{"max size", func(o *FileOptions) { o.MaxSizeMB = -1 }, "max_size_mb"},
		{"max age", func(o *FileOptions) { o.MaxAge = -time.Second }, "max_age"},
		{"max backups", func(o *FileOptions) { o.MaxBackups = -1 }, "max_backups"},
		{"fsync", func(o *FileOptions) { o.Fsync = "sometimes" }, "fsync"},
		{"fsync interval", func(o *FileOptions) { o.FsyncInterval = 0 }, "fsync_interval"},
		{"fsync interval unused", func(o *FileOptions) { o.FsyncInterval = 0; o.Fsync = FsyncNever }, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var o FileOptions
			o.Defaults()
			tc.mod(&o)
			err := o.Validate()
			var oe *OptionError
			switch {
			case tc.wantKey == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.wantKey != "" && (!errors.As(err, &oe) || oe.Key != tc.wantKey):
				t.Fatalf("error %v, want one for key %s", err, tc.wantKey)
			case tc.wantKey != "" && (!strings.HasPrefix(err.Error(), tc.wantKey+": ") || strings.Contains(err.Error(), "\n")):
				t.Fatalf("error %q is not one line starting with the key", err)
			}
		})
	}
}

func TestPermUnmarshal(t *testing.T) {
	tests := []struct {
		in      any
		want    Perm
		wantErr bool
	}{
		{int64(0o600), 0o600, false},
		{"0600", 0o600, false},
		{"0o750", 0o750, false},
		{"640", 0o640, false},
		{"rw-", 0, true},
		{"0800", 0, true},
		{int64(-1), 0, true},
		{1.5, 0, true},
	}
	for _, tc := range tests {
		var p Perm
		err := p.UnmarshalTOML(tc.in)
		if (err != nil) != tc.wantErr || (err == nil && p != tc.want) {
			t.Fatalf("UnmarshalTOML(%v) = %v, %v", tc.in, p, err)
		}
	}
	if b, _ := Perm(0o600).MarshalText(); string(b) != "0600" {
		t.Fatalf("MarshalText = %s", b)
	}
}

// TestFileModes checks that the sink applies file_mode and dir_mode
// exactly even under a umask that would narrow them.
func TestFileModes(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	tests := []struct {
		name          string
		file, dirMode Perm
	}{
		{"defaults", 0o600, 0o750},
		{"wider", 0o644, 0o755},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			o := testOpts(filepath.Join(base, "a", "b"))
			o.FileMode, o.DirMode = tc.file, tc.dirMode
			s := newTestFile(t, o)
			defer s.Close()
			for _, c := range []struct {
				path string
				want Perm
			}{{o.Path, tc.file}, {filepath.Join(base, "a"), tc.dirMode}, {filepath.Join(base, "a", "b"), tc.dirMode}} {
				fi, err := os.Stat(c.path)
				if err != nil {
					t.Fatal(err)
				}
				if got := Perm(fi.Mode().Perm()); got != c.want {
					t.Fatalf("%s has mode %s, want %s", c.path, got, c.want)
				}
			}
		})
	}
}

// TestFileRepairsTail checks that a partial last line from a crash is cut
// at open, and whole lines are kept.
func TestFileRepairsTail(t *testing.T) {
	long := strings.Repeat("y", 3*tailChunk)
	tests := []struct {
		name, before, after string
	}{
		{"empty", "", ""},
		{"whole", "a\nb\n", "a\nb\n"},
		{"partial", "a\nb\n{\"cut", "a\nb\n"},
		{"only partial", "{\"cut", ""},
		{"long partial", "a\n" + long, "a\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := testOpts(t.TempDir())
			if err := os.WriteFile(o.Path, []byte(tc.before), 0o600); err != nil {
				t.Fatal(err)
			}
			s := newTestFile(t, o)
			q := NewQueue("file", 8, Block)
			writeSync(t, s, q, 1, 1)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(o.Path)
			if err != nil {
				t.Fatal(err)
			}
			if want := tc.after + string(padItem(1).Line); string(got) != want {
				t.Fatalf("file = %q, want %q", got, want)
			}
		})
	}
}

func TestFileRotateBySize(t *testing.T) {
	tests := []struct {
		name     string
		maxSize  int64
		compress bool
		spans    bool // lines back to back in one buffer: written from it
	}{
		{"plain", 1000, false, false},
		{"gzip", 1000, true, false},
		{"smaller than a line", 10, false, false},
		{"plain, back to back", 1000, false, true},
		{"smaller than a line, back to back", 10, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := testOpts(t.TempDir())
			o.MaxBackups = 0
			o.Compress = tc.compress
			s := newTestFile(t, o)
			s.maxSize = tc.maxSize
			const n = 500
			mk := padItem
			if tc.spans {
				mk = spanItems(n)
			}
			runAllWith(t, s, NewQueue("file", 64, Block), 1, n, mk)
			if tc.spans && cap(s.buf) != 0 {
				t.Fatalf("lines back to back were copied (%d bytes of buffer)", cap(s.buf))
			}
			var all []uint64
			files := allFiles(t, o.Path)
			if len(files) < 2 {
				t.Fatalf("no rotation: %v", files)
			}
			for _, name := range files {
				if tc.compress != strings.HasSuffix(name, ".gz") && name != o.Path {
					t.Fatalf("backup %s, compress = %v", name, tc.compress)
				}
				if !tc.compress || name == o.Path {
					fi, err := os.Stat(name)
					if err != nil {
						t.Fatal(err)
					}
					if fi.Size() > max(tc.maxSize, int64(len(padItem(n).Line))) {
						t.Fatalf("%s has %d bytes, max %d", name, fi.Size(), tc.maxSize)
					}
				}
				all = append(all, readSeqs(t, name)...)
			}
			wantRange(t, all, 1, n)
			if got := s.Stats(); got.Rotations != uint64(len(files)-1) || got.Lines != n {
				t.Fatalf("stats %+v with %d files", got, len(files))
			}
		})
	}
}

func TestFileRotateByAge(t *testing.T) {
	o := testOpts(t.TempDir())
	o.MaxAge = time.Hour
	var mu sync.Mutex
	now := time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	s, err := NewFile(o, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	s.now = clock
	s.opened = clock()
	q := NewQueue("file", 8, Block)
	writeSync(t, s, q, 1, 2)
	advance(59 * time.Minute)
	writeSync(t, s, q, 3, 3)
	advance(time.Minute)
	writeSync(t, s, q, 4, 5) // 4 opens a new file, started now
	advance(59 * time.Minute)
	writeSync(t, s, q, 6, 6)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	files := allFiles(t, o.Path)
	want := o.Path + ".20261122T020000.000000000Z"
	if len(files) != 2 || files[0] != want {
		t.Fatalf("files %v, want backup %s", files, want)
	}
	wantRange(t, readSeqs(t, files[0]), 1, 3)
	wantRange(t, readSeqs(t, files[1]), 4, 6)
}

func TestFileMaxBackups(t *testing.T) {
	tests := []struct {
		name       string
		maxBackups int
		compress   bool
	}{
		{"keep 2", 2, false},
		{"keep 3 gzip", 3, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := testOpts(t.TempDir())
			o.MaxBackups = tc.maxBackups
			o.Compress = tc.compress
			// A foreign file next to ours must survive pruning.
			foreign := o.Path + ".old"
			if err := os.WriteFile(foreign, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			s := newTestFile(t, o)
			s.maxSize = 1 // every line gets a file of its own
			const n = 10
			runAll(t, s, NewQueue("file", 64, Block), 1, n)
			if _, err := os.Stat(foreign); err != nil {
				t.Fatalf("foreign file pruned: %v", err)
			}
			if err := os.Remove(foreign); err != nil {
				t.Fatal(err)
			}
			wantKept(t, allFiles(t, o.Path), tc.maxBackups, n)
		})
	}
}

// wantKept checks that files are maxBackups backups and the live file,
// which hold the last records up to n, each once.
func wantKept(t *testing.T, files []string, maxBackups int, n uint64) {
	t.Helper()
	if len(files) != maxBackups+1 {
		t.Fatalf("files %v, want %d backups and the live file", files, maxBackups)
	}
	var all []uint64
	for _, name := range files {
		all = append(all, readSeqs(t, name)...)
	}
	wantRange(t, all, n-uint64(maxBackups), n)
}

// TestFileReopen simulates logrotate: the file is renamed away and, in
// create mode, replaced by an empty one; Reopen moves the sink on.
func TestFileReopen(t *testing.T) {
	tests := []struct {
		name   string
		create bool
	}{
		{"create", true},
		{"nocreate", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := testOpts(t.TempDir())
			s := newTestFile(t, o)
			q := NewQueue("file", 8, Block)
			writeSync(t, s, q, 1, 5)
			moved := o.Path + ".1"
			if err := os.Rename(o.Path, moved); err != nil {
				t.Fatal(err)
			}
			if tc.create {
				if err := os.WriteFile(o.Path, nil, 0o640); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Reopen(); err != nil {
				t.Fatal(err)
			}
			writeSync(t, s, q, 6, 10)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			wantRange(t, readSeqs(t, moved), 1, 5)
			wantRange(t, readSeqs(t, o.Path), 6, 10)
			fi, err := os.Stat(o.Path)
			if err != nil {
				t.Fatal(err)
			}
			wantMode := Perm(0o600)
			if tc.create {
				wantMode = 0o640 // logrotate's choice is kept
			}
			if got := Perm(fi.Mode().Perm()); got != wantMode {
				t.Fatalf("mode %s, want %s", got, wantMode)
			}
		})
	}
}

// TestFileReopenConcurrent races Reopen against a running sink: every line
// must land exactly once, whole, in the old or the new file.
func TestFileReopenConcurrent(t *testing.T) {
	o := testOpts(t.TempDir())
	s := newTestFile(t, o)
	q := NewQueue("file", 64, Block)
	done := runSink(context.Background(), s, q)
	const n = 20000
	pushed := make(chan error, 1)
	half := make(chan struct{})
	go func() {
		for seq := uint64(1); seq <= n; seq++ {
			if seq == n/2 {
				close(half) // the sink is busy writing by now
			}
			if err := q.Push(context.Background(), padItem(seq)); err != nil {
				pushed <- err
				return
			}
		}
		pushed <- nil
	}()
	moved := o.Path + ".1"
	<-half
	if err := os.Rename(o.Path, moved); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(o.Path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Reopen(); err != nil {
		t.Fatal(err)
	}
	if err := <-pushed; err != nil {
		t.Fatal(err)
	}
	q.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := s.Reopen(); err != nil {
		t.Fatalf("Reopen after Run: %v", err)
	}
	before, after := readSeqs(t, moved), readSeqs(t, o.Path)
	if len(before) == 0 || len(after) == 0 {
		t.Fatalf("%d lines before the reopen, %d after", len(before), len(after))
	}
	wantRange(t, append(before, after...), 1, n)
}

func TestFileFsyncModes(t *testing.T) {
	tests := []struct {
		mode      FsyncMode
		interval  time.Duration
		wantSyncs func(n uint64) bool
	}{
		{FsyncNever, 0, func(n uint64) bool { return n == 0 }},
		// An hour never ticks in the test: the one sync is Close's.
		{FsyncInterval, time.Hour, func(n uint64) bool { return n == 1 }},
		{FsyncAlways, 0, func(n uint64) bool { return n >= 1 }},
	}
	for _, tc := range tests {
		t.Run(string(tc.mode), func(t *testing.T) {
			o := testOpts(t.TempDir())
			o.Fsync, o.FsyncInterval = tc.mode, tc.interval
			s := newTestFile(t, o)
			const n = 300
			runAll(t, s, NewQueue("file", 16, Block), 1, n)
			wantRange(t, readSeqs(t, o.Path), 1, n)
			st := s.Stats()
			if !tc.wantSyncs(st.Syncs) || st.SyncErrors != 0 || st.Lines != n {
				t.Fatalf("stats %+v", st)
			}
		})
	}
	// always syncs each written batch, one by one here.
	o := testOpts(t.TempDir())
	o.Fsync = FsyncAlways
	s := newTestFile(t, o)
	writeSync(t, s, NewQueue("file", 8, Block), 1, 5)
	if st := s.Stats(); st.Syncs != 5 {
		t.Fatalf("always: %d syncs for 5 batches", st.Syncs)
	}
	s.Close()
}

func TestFileBadItems(t *testing.T) {
	o := testOpts(t.TempDir())
	s := newTestFile(t, o)
	q := NewQueue("file", 8, Block)
	for _, it := range []*Item{padItem(1), {Seq: 2, Line: []byte("{}")}, {Seq: 3, Line: []byte("{}\n{}\n")}, {Seq: 4}, padItem(5)} {
		if err := q.Push(context.Background(), it); err != nil {
			t.Fatal(err)
		}
	}
	q.Close()
	if err := s.Run(context.Background(), q); err != nil {
		t.Fatal(err)
	}
	got := readSeqs(t, o.Path)
	if !slices.Equal(got, []uint64{1, 5}) {
		t.Fatalf("wrote %v", got)
	}
	if st := q.Stats(); st.Delivered != 2 || st.Dropped != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNewFileErrors(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "plain")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
	}{
		{"relative", "events.json"},
		{"parent is a file", filepath.Join(notDir, "events.json")},
		{"path is a directory", dir},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := DefaultFileOptions()
			o.Path = tc.path
			if _, err := NewFile(o, zerolog.Nop()); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

// TestFileFullDisk fills a tiny tmpfs: the sink must keep only whole
// lines, keep (Block) or let the queue drop (DropNewest) what it cannot
// write, and resume once space is freed.
func TestFileFullDisk(t *testing.T) {
	tests := []struct {
		name   string
		policy Policy
		spans  bool // lines back to back in one buffer: written from it
	}{
		{"block", Block, false},
		{"drop_newest", DropNewest, false},
		{"block, back to back", Block, true},
		{"drop_newest, back to back", DropNewest, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			padItem := padItem
			if tc.spans {
				padItem = spanItems(300)
			}
			mnt := testutil.TmpfsMount(t, "256k")
			filler := filepath.Join(mnt, "filler")
			if err := os.WriteFile(filler, make([]byte, 160<<10), 0o600); err != nil {
				t.Fatal(err)
			}
			o := testOpts(mnt)
			o.MaxSizeMB = 0
			o.Fsync = FsyncNever
			s := newTestFile(t, o)
			stalled := make(chan struct{})
			release := make(chan struct{})
			resumed := make(chan struct{}, 1)
			var once sync.Once
			s.onStall = func() {
				once.Do(func() {
					close(stalled)
					<-release // hold the sink still while the test looks
				})
			}
			s.onResume = func() {
				select {
				case resumed <- struct{}{}:
				default:
				}
			}
			q := NewQueue("file", 64, tc.policy)
			ctx := context.Background()
			done := runSink(ctx, s, q)

			// ~2000 lines of ~100 bytes fit the tmpfs only without filler.
			const n = 2000
			var seq uint64
			var pushed <-chan error
			if tc.policy == Block {
				pushed = pushAsync(ctx, q, 1, n, padItem)
				<-stalled
			} else {
			push:
				for seq = 1; ; seq++ {
					select {
					case <-stalled:
						break push
					default:
					}
					if seq > 1_000_000 {
						t.Fatal("never stalled")
					}
					if err := q.Push(ctx, padItem(seq)); err != nil {
						t.Fatal(err)
					}
				}
				// The sink is stuck: all but a queue's worth must drop.
				seq-- // the last one pushed
				before := q.Stats().Dropped
				for i := 0; i < 200; i++ {
					seq++
					if err := q.Push(ctx, padItem(seq)); err != nil {
						t.Fatal(err)
					}
				}
				if d := q.Stats().Dropped - before; d < 200-64 {
					t.Fatalf("only %d of 200 pushes dropped while stalled", d)
				}
			}

			// Stalled: the file holds whole lines only and the unwritten
			// items are in flight.
			got := readSeqs(t, o.Path)
			st := q.Stats()
			checkInvariant(t, st)
			if st.InFlight == 0 || st.Delivered != uint64(len(got)) {
				t.Fatalf("stalled with %d lines written, stats %+v", len(got), st)
			}
			if tc.policy == Block && st.Dropped != 0 {
				t.Fatalf("block dropped: %+v", st)
			}
			if s.Stats().WriteErrors == 0 {
				t.Fatal("no write error counted")
			}

			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			close(release)
			<-resumed
			if tc.policy == Block {
				if err := <-pushed; err != nil {
					t.Fatal(err)
				}
			}
			closeAndWait(t, q, done)
			got = readSeqs(t, o.Path)
			st = q.Stats()
			checkInvariant(t, st)
			if st.InFlight != 0 || st.Delivered != uint64(len(got)) {
				t.Fatalf("%d lines, stats %+v", len(got), st)
			}
			if tc.policy == Block {
				wantRange(t, got, 1, n)
				return
			}
			if st.Received != seq || st.Dropped == 0 || q.TakeUnreported().Total() != st.Dropped {
				t.Fatalf("pushed %d, stats %+v", seq, st)
			}
			for i := 1; i < len(got); i++ {
				if got[i] <= got[i-1] {
					t.Fatalf("seq %d after %d", got[i], got[i-1])
				}
			}
		})
	}
}

func BenchmarkFileSink(b *testing.B) {
	line := padItem(1).Line
	line = append(bytes.Repeat([]byte(" "), 300-len(line)), line...) // ~300-byte records
	tests := []struct {
		name  string
		fsync FsyncMode
	}{
		{"fsync=never", FsyncNever},
		{"fsync=interval", FsyncInterval},
		{"fsync=always", FsyncAlways},
	}
	for _, tc := range tests {
		b.Run(tc.name, func(b *testing.B) {
			o := testOpts(b.TempDir())
			o.Fsync = tc.fsync
			o.MaxSizeMB = 1024
			s, err := NewFile(o, zerolog.Nop())
			if err != nil {
				b.Fatal(err)
			}
			q := NewQueue("file", 8192, Block)
			ctx := context.Background()
			it := &Item{Seq: 1, Line: line}
			b.SetBytes(int64(len(line)))
			b.ReportAllocs()
			b.ResetTimer()
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx, q) }()
			for i := 0; i < b.N; i++ {
				if err := q.Push(ctx, it); err != nil {
					b.Fatal(err)
				}
			}
			q.Close()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// TestFileOptionsTOML decodes the keys the config documents, the way the
// config package does: defaults first, then the file.
func TestFileOptionsTOML(t *testing.T) {
	src := `
path = "/var/log/fanaudit/a.json"
file_mode = "0640"
dir_mode = 0o700
max_size_mb = 0
max_age = "24h"
max_backups = 0
compress = true
fsync = "always"
fsync_interval = "250ms"
`
	var o FileOptions
	o.Defaults()
	md, err := toml.Decode(src, &o)
	if err != nil {
		t.Fatal(err)
	}
	if u := md.Undecoded(); len(u) != 0 {
		t.Fatalf("undecoded keys %v", u)
	}
	want := FileOptions{
		Path: "/var/log/fanaudit/a.json", FileMode: 0o640, DirMode: 0o700,
		MaxAge: 24 * time.Hour, Compress: true, Fsync: FsyncAlways, FsyncInterval: 250 * time.Millisecond,
	}
	if o != want {
		t.Fatalf("decoded %+v, want %+v", o, want)
	}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	var partial FileOptions
	partial.Defaults()
	if _, err := toml.Decode(`path = "/x/y.json"`, &partial); err != nil {
		t.Fatal(err)
	}
	if def := DefaultFileOptions(); partial.FileMode != def.FileMode || partial.MaxSizeMB != def.MaxSizeMB || partial.Fsync != def.Fsync {
		t.Fatalf("defaults lost: %+v", partial)
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(o); err != nil {
		t.Fatal(err)
	}
	var back FileOptions
	if _, err := toml.Decode(buf.String(), &back); err != nil || back != o {
		t.Fatalf("round trip through\n%s\ngave %+v, %v", buf.String(), back, err)
	}
}

func TestFileRunOnce(t *testing.T) {
	s := newTestFile(t, testOpts(t.TempDir()))
	q := NewQueue("file", 8, Block)
	q.Close()
	if err := s.Run(context.Background(), q); err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background(), q); err == nil {
		t.Fatal("second Run accepted")
	}
}
