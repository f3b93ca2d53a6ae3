package safefile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fanaudit/fanaudit/internal/kernel"
	"github.com/fanaudit/fanaudit/internal/testutil"
)

const nobody = 65534

// mnt returns a private tmpfs whose root is a 0755 root-owned directory.
func mnt(t *testing.T) string {
	t.Helper()
	m := testutil.TmpfsMount(t, "8m")
	if err := os.Chmod(m, 0o755); err != nil {
		t.Fatal(err)
	}
	return m
}

// asNobody runs argv as uid/gid 65534, the attacker of these tests.
func asNobody(t *testing.T, argv ...string) {
	t.Helper()
	args := append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--"}, argv...)
	if out, err := exec.Command("setpriv", args...).CombinedOutput(); err != nil {
		t.Fatalf("setpriv %v: %v: %s", argv, err, out)
	}
}

func mkdir(t *testing.T, path string, mode os.FileMode, uid, gid int) string {
	t.Helper()
	if err := os.Mkdir(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
	return path
}

// victim writes a root-owned 0600 file and returns a check that it is
// byte-identical and has the same mode and owner at the end.
func victim(t *testing.T, path string) func() {
	t.Helper()
	want := []byte("root secret\npartial")
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
			t.Errorf("victim %s changed: %q mode %v", path, got, fi.Mode())
		}
	}
}

func wantUnsafe(t *testing.T, err error, key, substr string) {
	t.Helper()
	var se *Error
	if !errors.Is(err, ErrUnsafe) || !errors.As(err, &se) {
		t.Fatalf("err = %v, want a refusal", err)
	}
	if se.Key != key || !strings.HasPrefix(err.Error(), key+": ") || !strings.Contains(err.Error(), substr) {
		t.Errorf("err = %q, want key %q and %q", err, key, substr)
	}
}

func TestOpenDirRules(t *testing.T) {
	m := mnt(t)
	mkdir(t, m+"/nobody", 0o755, nobody, nobody)
	mkdir(t, m+"/world", 0o777, 0, 0)
	mkdir(t, m+"/sticky", os.ModeSticky|0o777, 0, 0)
	mkdir(t, m+"/stickynobody", os.ModeSticky|0o777, nobody, nobody)
	mkdir(t, m+"/groupw", 0o775, 0, nobody)
	mkdir(t, m+"/rootgroupw", 0o775, 0, 0)
	mkdir(t, m+"/nobody/sub", 0o755, 0, 0)
	mkdir(t, m+"/ok", 0o755, 0, 0)
	if err := os.Symlink("ok", m+"/rootlink"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("ok", m+"/nobodylink"); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(m+"/nobodylink", nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m+"/file", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path    string
		private bool
		refuse  string // "" = accepted
	}{
		{m + "/ok", false, ""},
		{m + "/ok", true, ""},
		{m + "/sticky", false, ""},
		{m + "/sticky", true, "must not be writable by group or others"},
		{m + "/rootgroupw", false, ""},
		{m + "/nobody", false, "owned by uid 65534"},
		{m + "/nobody/sub", false, "owned by uid 65534"}, // an ancestor counts
		{m + "/world", false, "any user can write it"},
		{m + "/world/new", false, "any user can write it"},
		{m + "/stickynobody", false, "owned by uid 65534"},
		{m + "/groupw", false, "group 65534"},
		{m + "/rootlink", false, ""},
		{m + "/nobodylink", false, "symbolic link owned by uid 65534"},
		{m + "/file", false, "not a directory"},
		{"rel/dir", false, "absolute"},
	} {
		d, err := OpenDir(tc.path, Options{Key: "k", Private: tc.private})
		if tc.refuse == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.path, err)
				continue
			}
			d.Close()
			continue
		}
		if err == nil {
			d.Close()
			t.Errorf("%s (private %v) accepted, want %q", tc.path, tc.private, tc.refuse)
			continue
		}
		if tc.refuse == "not a directory" {
			if !errors.Is(err, fs.ErrInvalid) && !strings.Contains(err.Error(), "not a directory") {
				t.Errorf("%s: %v", tc.path, err)
			}
			continue
		}
		wantUnsafe(t, err, "k", tc.refuse)
	}
	if _, err := os.Stat(m + "/world/new"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("created a directory inside a refused one: %v", err)
	}
}

func TestOpenDirCreates(t *testing.T) {
	m := mnt(t)
	old := umask(0o077)
	defer umask(old)
	d, err := OpenDir(m+"/a/b/c", Options{Create: true, DirMode: 0o750})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	for _, p := range []string{"/a", "/a/b", "/a/b/c"} {
		fi, err := os.Stat(m + p)
		if err != nil || fi.Mode().Perm() != 0o750 || !fi.IsDir() {
			t.Errorf("%s: %v %v", p, fi.Mode(), err)
		}
	}
	d, err = OpenDir(m+"/x/y", Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if fi, _ := os.Stat(m + "/x/y"); fi.Mode().Perm() != 0o700 {
		t.Errorf("default dir mode %v, want 0700", fi.Mode())
	}
	if _, err := OpenDir(m+"/none", Options{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing dir without Create: %v", err)
	}
}

func TestOpenFileRefuses(t *testing.T) {
	m := mnt(t)
	sticky := mkdir(t, m+"/log", os.ModeSticky|0o777, 0, 0) // like /tmp: allowed, and nobody can plant names
	check := victim(t, m+"/victim")
	asNobody(t, "ln", "-s", m+"/victim", sticky+"/link")
	asNobody(t, "ln", "-s", m+"/victim", sticky+"/tmplink")
	asNobody(t, "mkfifo", sticky+"/fifo")
	asNobody(t, "touch", sticky+"/theirs")
	if err := os.Link(m+"/victim", sticky+"/hard"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sticky+"/wide", nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sticky+"/wide", 0o666); err != nil {
		t.Fatal(err)
	}
	d, err := OpenDir(sticky, Options{Key: "path"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, tc := range []struct {
		name, want string
		flag       int
	}{
		{"link", "symbolic link", os.O_WRONLY | os.O_APPEND | os.O_CREATE},
		{"link", "symbolic link", os.O_WRONLY | os.O_CREATE | os.O_TRUNC},
		{"link", "symbolic link", os.O_RDONLY},
		{"fifo", "not a regular file", os.O_WRONLY | os.O_APPEND | os.O_CREATE},
		{"theirs", "owned by uid 65534", os.O_WRONLY | os.O_APPEND | os.O_CREATE},
		{"hard", "2 hard links", os.O_RDWR | os.O_CREATE | os.O_TRUNC},
		{"wide", "any user can write it", os.O_RDWR},
		{"../victim", "not a plain file name", os.O_RDWR},
	} {
		f, err := d.OpenFile(tc.name, tc.flag, 0o600)
		if err == nil {
			f.Close()
			t.Errorf("%s opened", tc.name)
			continue
		}
		wantUnsafe(t, err, "path", tc.want)
	}
	if _, err := d.OpenFile("tmplink", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); !errors.Is(err, fs.ErrExist) {
		t.Errorf("O_EXCL over a link: %v", err)
	}
	if _, err := d.ReadFile("link", 1<<20); !errors.Is(err, ErrUnsafe) {
		t.Errorf("ReadFile through a link: %v", err)
	}
	// WriteFile replaces the link itself, never the file it points to.
	if err := d.WriteFile("link", []byte("state\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := d.ReadFile("link", 1<<20); err != nil || string(b) != "state\n" {
		t.Errorf("ReadFile after WriteFile: %q %v", b, err)
	}
	check()
}

func TestOpenFileCreates(t *testing.T) {
	m := mnt(t)
	old := umask(0o077)
	defer umask(old)
	f, err := Open(m+"/logs/out.json", os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640, Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("one\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, _ := os.Stat(m + "/logs/out.json"); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640 whatever the umask", fi.Mode())
	}
	// An existing file keeps its mode and its content.
	if err := os.Chmod(m+"/logs/out.json", 0o600); err != nil {
		t.Fatal(err)
	}
	f, err = Open(m+"/logs/out.json", os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("two\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if b, _ := os.ReadFile(m + "/logs/out.json"); string(b) != "one\ntwo\n" {
		t.Errorf("content %q", b)
	}
	if fi, _ := os.Stat(m + "/logs/out.json"); fi.Mode().Perm() != 0o600 {
		t.Errorf("existing file's mode changed to %v", fi.Mode())
	}

	d, err := OpenDir(m+"/logs", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	seen := map[string]bool{}
	for range 20 {
		f, name, err := d.CreateTemp("x.gz.tmp.", 0o600)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		if seen[name] || !strings.HasPrefix(name, "x.gz.tmp.") || len(name) < len("x.gz.tmp.")+16 {
			t.Errorf("temp name %q", name)
		}
		seen[name] = true
	}
}

func TestPrivateFiles(t *testing.T) {
	m := mnt(t)
	spool := mkdir(t, m+"/spool", 0o700, 0, 0)
	if err := os.WriteFile(spool+"/seg", nil, 0o660); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(spool+"/seg", 0o660); err != nil {
		t.Fatal(err)
	}
	d, err := OpenDir(spool, Options{Key: "spool.dir", Private: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	wantUnsafe(t, d.Check("seg"), "spool.dir", "group can write")
	if err := d.Check("none"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Check of a missing file: %v", err)
	}
}

func TestCompare(t *testing.T) {
	m := mnt(t)
	path := m + "/out"
	open := func() *File {
		f, err := Open(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600, Options{})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	compare := func(f *File, want Change) {
		t.Helper()
		got, err := f.Compare()
		if err != nil || got != want {
			t.Errorf("Compare = %v, %v; want %v", got, err, want)
		}
	}
	f := open()
	compare(f, Same)
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	compare(f, Moved)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	compare(f, Replaced)
	if err := os.Remove(path + ".1"); err != nil {
		t.Fatal(err)
	}
	compare(f, Unlinked)
	f.Close()
	f = open()
	defer f.Close()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(m+"/elsewhere", path); err != nil {
		t.Fatal(err)
	}
	compare(f, Unlinked)
}

func umask(m int) int { return kernel.Umask(m) }

// BenchmarkCompare is the per-batch cost of the file sink's check that
// its open file is still at its path.
func BenchmarkCompare(b *testing.B) {
	f, err := Open(filepath.Join(b.TempDir(), "out"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.ReportAllocs()
	for b.Loop() {
		if c, err := f.Compare(); err != nil || c != Same {
			b.Fatal(c, err)
		}
	}
}

func BenchmarkDeleted(b *testing.B) {
	f, err := Open(filepath.Join(b.TempDir(), "out"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.ReportAllocs()
	for b.Loop() {
		if gone, err := Deleted(f.File); err != nil || gone {
			b.Fatal(gone, err)
		}
	}
}
