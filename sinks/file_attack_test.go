package sinks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/internal/safefile"
	"github.com/fanaudit/fanaudit/internal/testutil"
)

// The attacker of these tests is nobody (65534), acting through setpriv
// on a private tmpfs; the agent runs as root. In every case a root-owned
// 0600 victim file must stay byte-identical.

const nobodyID = 65534

// attackMount returns a private tmpfs with a root-owned 0755 root and a
// log directory in it that is sticky, world-writable and root's, like
// /tmp: fanaudit accepts it; nobody cannot replace or remove root's names
// in it, but can take any name that is free.
func attackMount(t *testing.T) (mnt, logDir string) {
	t.Helper()
	mnt = testutil.TmpfsMount(t, "16m")
	if err := os.Chmod(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	logDir = filepath.Join(mnt, "log")
	if err := os.Mkdir(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(logDir, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	return mnt, logDir
}

// nobodyDo runs argv as nobody.
func nobodyDo(t *testing.T, argv ...string) {
	t.Helper()
	args := append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--"}, argv...)
	if out, err := exec.Command("setpriv", args...).CombinedOutput(); err != nil {
		t.Fatalf("as nobody %v: %v: %s", argv, err, out)
	}
}

// plantLink makes nobody create the symbolic link name -> target.
func plantLink(t *testing.T, target, name string) {
	t.Helper()
	nobodyDo(t, "ln", "-s", target, name)
}

// newVictim writes a root-owned 0600 file whose last line is partial (so
// that a tail repair through a link would cut it) and returns a check
// that it is unchanged.
func newVictim(t *testing.T, path string) func() {
	t.Helper()
	want := []byte("root:secret:1\nroot:secret:2 (no newline)")
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) || fi.Mode() != 0o600 {
			t.Errorf("victim %s changed: mode %v, %q", path, fi.Mode(), got)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func newLoggedFile(t *testing.T, o FileOptions) (*File, *syncBuffer) {
	t.Helper()
	var logs syncBuffer
	s, err := NewFile(o, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	s.retryMin, s.retryMax = time.Millisecond, 10*time.Millisecond
	return s, &logs
}

func wantRefusal(t *testing.T, err error, substr string) {
	t.Helper()
	var se *safefile.Error
	if !errors.Is(err, safefile.ErrUnsafe) || !errors.As(err, &se) || se.Key != "path" || !strings.Contains(err.Error(), substr) {
		t.Fatalf("err = %v, want a refusal of key path saying %q", err, substr)
	}
}

// TestFileRefusesUnsafePaths: the output path is a link nobody planted,
// or the directory is one nobody can write. NewFile fails (start-up
// exits 2 naming the key) and the victim is untouched.
func TestFileRefusesUnsafePaths(t *testing.T) {
	mnt, logDir := attackMount(t)
	check := newVictim(t, filepath.Join(mnt, "victim"))
	defer check()

	plantLink(t, filepath.Join(mnt, "victim"), filepath.Join(logDir, "events.json"))

	owned := filepath.Join(mnt, "owned") // nobody's own log directory
	if err := os.Mkdir(owned, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(owned, nobodyID, nobodyID); err != nil {
		t.Fatal(err)
	}
	plantLink(t, filepath.Join(mnt, "victim"), filepath.Join(owned, "events.json"))

	world := filepath.Join(mnt, "world") // root's, but anyone can write it
	if err := os.Mkdir(world, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(world, 0o777); err != nil {
		t.Fatal(err)
	}

	// A link among the directories, owned by nobody: /mnt/linkdir -> log.
	plantLink(t, logDir, filepath.Join(logDir, "linkdir"))

	for _, tc := range []struct{ path, want string }{
		{filepath.Join(logDir, "events.json"), "symbolic link"},
		{filepath.Join(owned, "events.json"), "owned by uid 65534"},
		{filepath.Join(owned, "sub", "events.json"), "owned by uid 65534"},
		{filepath.Join(world, "events.json"), "any user can write it"},
		{filepath.Join(logDir, "linkdir", "x.json"), "symbolic link owned by uid 65534"},
	} {
		o := testOpts(mnt)
		o.Path = tc.path
		_, err := NewFile(o, zerolog.Nop())
		wantRefusal(t, err, tc.want)
	}
	if _, err := os.Lstat(filepath.Join(owned, "sub")); err == nil {
		t.Error("created a directory inside nobody's directory")
	}

	// The sticky root-owned directory itself is fine for a name nobody
	// has planted.
	o := testOpts(logDir)
	o.Path = filepath.Join(logDir, "ok.json")
	s := newTestFile(t, o)
	writeSync(t, s, NewQueue("file", 8, Block), 1, 3)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wantRange(t, readSeqs(t, o.Path), 1, 3)
}

// TestFileSwappedLinkOnReopen: while the sink runs, the file is moved
// away (as logrotate does) and nobody plants a link at the path before
// the SIGHUP. The reopen fails, says so in the log, and the sink writes
// on to the file it has open; the victim is untouched.
func TestFileSwappedLinkOnReopen(t *testing.T) {
	mnt, logDir := attackMount(t)
	check := newVictim(t, filepath.Join(mnt, "victim"))
	defer check()
	o := testOpts(logDir)
	s, logs := newLoggedFile(t, o)
	q := NewQueue("file", 8, Block)
	writeSync(t, s, q, 1, 5)
	moved := o.Path + ".1"
	if err := os.Rename(o.Path, moved); err != nil {
		t.Fatal(err)
	}
	plantLink(t, filepath.Join(mnt, "victim"), o.Path)
	err := s.Reopen()
	wantRefusal(t, err, "symbolic link")
	writeSync(t, s, q, 6, 10)
	// Every batch is due for rotation now, and every rotation fails the
	// same way: the log says so once, not once a batch.
	s.maxSize = 1
	for seq := uint64(11); seq <= 30; seq++ {
		writeSync(t, s, q, seq, seq)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wantRange(t, readSeqs(t, moved), 1, 30)
	if !strings.Contains(logs.String(), "reopen failed") {
		t.Errorf("log does not say the reopen failed:\n%s", logs)
	}
	for _, msg := range []string{"output file is no longer at its path", "rotation failed; writing on"} {
		if n := strings.Count(logs.String(), msg); n != 1 {
			t.Errorf("%q logged %d times, want once:\n%s", msg, n, logs)
		}
	}
	if st := q.Stats(); st.Delivered != 30 {
		t.Errorf("stats %+v", st)
	}
}

// TestFileDeletedUnderSink: the output file is deleted (or replaced by a
// rename) under the running sink. Every later record lands in the new
// file at the path, none in the deleted inode, and the log says so.
func TestFileDeletedUnderSink(t *testing.T) {
	for _, tc := range []struct {
		name   string
		remove func(t *testing.T, path string)
	}{
		{"unlink", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
		{"renamed over", func(t *testing.T, path string) {
			if err := os.WriteFile(path+".new", nil, 0o640); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(path+".new", path); err != nil {
				t.Fatal(err)
			}
		}},
		{"directory removed", func(t *testing.T, path string) {
			if err := os.RemoveAll(filepath.Dir(path)); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := testOpts(filepath.Join(t.TempDir(), "log"))
			s, logs := newLoggedFile(t, o)
			q := NewQueue("file", 64, Block)
			writeSync(t, s, q, 1, 5)
			tc.remove(t, o.Path)
			done := runSink(t.Context(), s, q)
			pushRange(t, t.Context(), q, 6, 200, padItem)
			closeAndWait(t, q, done)
			wantRange(t, readSeqs(t, o.Path), 6, 200)
			if !strings.Contains(logs.String(), "deleted under the sink") {
				t.Errorf("log does not say so:\n%s", logs)
			}
			if st := q.Stats(); st.Delivered != 200 || st.Dropped != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestRotationPlantedLinks: nobody plants links at the backup names the
// next rotation would use (the clock is fixed, so they are predictable)
// and at the old fixed gzip temp name. Rotation and gzip go around them:
// no victim changes, no backup is a link, and every record is in a
// regular backup or the live file.
func TestRotationPlantedLinks(t *testing.T) {
	mnt, logDir := attackMount(t)
	var checks []func()
	o := testOpts(logDir)
	o.Compress = true
	o.MaxBackups = 0
	at := time.Date(2026, 11, 30, 20, 0, 0, 0, time.UTC)
	base := o.Path + "." + at.Format(backupLayout)
	planted := []string{base, base + ".gz", base + ".gz.tmp", base + ".gz.tmp.0000000000000000"}
	for ns := 1; ns <= 8; ns++ { // the temp names of the next backups, as the sink used to name them
		planted = append(planted, o.Path+"."+at.Add(time.Duration(ns)).Format(backupLayout)+".gz.tmp")
	}
	for i, name := range planted {
		v := filepath.Join(mnt, "victim"+string(rune('a'+i)))
		checks = append(checks, newVictim(t, v))
		plantLink(t, v, name)
	}
	s := newTestFile(t, o)
	s.now = func() time.Time { return at }
	s.maxSize = 2000
	const n = 300
	runAll(t, s, NewQueue("file", 64, Block), 1, n)

	ents, err := os.ReadDir(logDir)
	if err != nil {
		t.Fatal(err)
	}
	var all []uint64
	files := 0
	for _, e := range ents {
		name := filepath.Join(logDir, e.Name())
		if e.Type()&os.ModeSymlink != 0 {
			if target, _ := os.Readlink(name); !strings.HasPrefix(target, filepath.Join(mnt, "victim")) {
				t.Errorf("%s is a link to %s", name, target)
			}
			continue
		}
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temp file left: %s", e.Name())
			continue
		}
		if name != o.Path && !strings.HasSuffix(name, ".gz") {
			t.Errorf("backup %s not compressed", name)
		}
		files++
		all = append(all, readSeqs(t, name)...)
	}
	slices.Sort(all)
	wantRange(t, all, 1, n)
	if files < 3 {
		t.Errorf("only %d files: no rotation happened", files)
	}
	for _, c := range checks {
		c()
	}
}

// TestPruneLeavesPlantedBackups: nobody fills the sticky log directory
// with files named like backups, newer than any real one, and like the
// temp file of a cut-short compression. Pruning neither counts them (the
// real backups stay MaxBackups) nor removes them (they are not the
// agent's).
func TestPruneLeavesPlantedBackups(t *testing.T) {
	_, logDir := attackMount(t)
	o := testOpts(logDir)
	o.MaxBackups = 2
	future := time.Date(2099, 12, 31, 23, 59, 59, 0, time.UTC)
	var planted []string
	for i := range 5 {
		planted = append(planted, o.Path+"."+future.Add(time.Duration(i)).Format(backupLayout))
	}
	planted = append(planted, o.Path+"."+future.Format(backupLayout)+gzTmp+"abcdef")
	for _, name := range planted {
		nobodyDo(t, "touch", name)
	}
	s := newTestFile(t, o)
	s.maxSize = 1 // every line gets a file of its own
	const n = 10
	runAll(t, s, NewQueue("file", 64, Block), 1, n)
	for _, name := range planted {
		if _, err := os.Lstat(name); err != nil {
			t.Errorf("nobody's %s: %v", filepath.Base(name), err)
		}
	}
	var ours []string
	for _, name := range allFiles(t, o.Path) {
		if !slices.Contains(planted, name) {
			ours = append(ours, name)
		}
	}
	wantKept(t, ours, o.MaxBackups, n)
}

// TestRotationPathTakenMeanwhile: the log directory is sticky and
// world-writable, which the sink accepts, so nobody can make new names in
// it. Each time a rotation has moved the old file to its backup name,
// nobody plants a link at the output path. Rotation never leaves the path
// free, so each plant fails and nothing stalls: every record is in a
// regular file. Before, the link took the free name, the new file could
// not be opened (a link is never followed) and every write failed until
// the test's deadline.
func TestRotationPathTakenMeanwhile(t *testing.T) {
	// noExchange: a log filesystem without RENAME_EXCHANGE (NFS, CIFS):
	// the path is free between the two renames, and whatever is planted
	// there is replaced by the new file (rev6: the plain create failed on
	// the link at every write, as before user6's fix).
	for _, noExchange := range []bool{false, true} {
		t.Run(fmt.Sprint("no_exchange=", noExchange), func(t *testing.T) {
			mnt, logDir := attackMount(t)
			victim := filepath.Join(mnt, "victim")
			check := newVictim(t, victim)
			defer check()
			o := testOpts(logDir)
			o.MaxBackups = 0
			s, _ := newLoggedFile(t, o)
			s.maxSize = 2000
			if noExchange {
				s.exchangeErr = errors.New("invalid argument (no RENAME_EXCHANGE)")
			}
			planted := 0
			s.rotatedHook = func() {
				// setpriv's exit status says whether the name was free.
				err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
					"ln", "-s", victim, o.Path).Run()
				if err == nil {
					planted++
				}
			}
			const n = 300
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a stall fails, not hangs
			defer cancel()
			q := NewQueue("file", 64, Block)
			done := runSink(ctx, s, q)
			pushRange(t, ctx, q, 1, n, padItem)
			closeAndWait(t, q, done)
			if planted > 0 && !noExchange {
				t.Errorf("the output path was free for a link %d times during rotations", planted)
			}
			if noExchange && planted == 0 {
				t.Errorf("no link planted: the test no longer tests the free path")
			}
			ents, err := os.ReadDir(logDir)
			if err != nil {
				t.Fatal(err)
			}
			var all []uint64
			files := 0
			for _, e := range ents {
				if !e.Type().IsRegular() {
					t.Errorf("%s is not a regular file", e.Name())
					continue
				}
				files++
				all = append(all, readSeqs(t, filepath.Join(logDir, e.Name()))...)
			}
			slices.Sort(all)
			wantRange(t, all, 1, n)
			if files < 3 {
				t.Errorf("only %d files: no rotation happened", files)
			}
		})
	}
}

// TestFileReplacedWithoutReopen: the file is moved away and a new one
// created at the path (logrotate's create) but no SIGHUP comes. Within a
// second of the next write the sink notices, says so, and writes on into
// the new file; nothing is lost (the lines before went into the moved
// file, which still has a name).
func TestFileReplacedWithoutReopen(t *testing.T) {
	o := testOpts(t.TempDir())
	s, logs := newLoggedFile(t, o)
	now := time.Date(2026, 11, 30, 20, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	q := NewQueue("file", 8, Block)
	writeSync(t, s, q, 1, 5)
	if err := os.Rename(o.Path, o.Path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(o.Path, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	writeSync(t, s, q, 6, 6) // within the second: into the moved file
	now = now.Add(pathCheckEvery)
	writeSync(t, s, q, 7, 7) // still into the moved file; then the check
	writeSync(t, s, q, 8, 10)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wantRange(t, readSeqs(t, o.Path+".1"), 1, 7)
	wantRange(t, readSeqs(t, o.Path), 8, 10)
	if !strings.Contains(logs.String(), "output path now leads to another file; reopened it") {
		t.Errorf("log does not say so:\n%s", logs)
	}
}
