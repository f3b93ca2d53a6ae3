package ids

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[uint32]string
	}{
		{"passwd", "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n", map[uint32]string{0: "root", 1000: "alice"}},
		{"group", "root:x:0:\nwheel:x:10:alice,bob\n", map[uint32]string{0: "root", 10: "wheel"}},
		{"comments, blanks, NIS, bad ids", "# c\n\n+nis::::\nbad:x:notanumber:0\nbig:x:4294967296:0\nshort:x\n:x:5:\nok:x:4294967294:0\n", map[uint32]string{4294967294: "ok"}},
		{"first entry wins", "a:x:1:\nb:x:1:\n", map[uint32]string{1: "a"}},
		{"no trailing newline", "a:x:2:2", map[uint32]string{2: "a"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestRefresh(t *testing.T) {
	dir := t.TempDir()
	pw, gr := filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	write := func(p, s string) {
		t.Helper()
		// Write a new file and rename it over the old one, as useradd does,
		// so the inode changes even when size and mtime would not.
		tmp := p + ".new"
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
	}
	write(pw, "root:x:0:0::/:/bin/sh\n")
	write(gr, "root:x:0:\n")
	d := New(pw, gr, time.Second)
	if d.User(0) != "root" || d.Group(0) != "root" || d.User(1) != "" {
		t.Fatal("initial load")
	}
	write(pw, "toor:x:0:0::/:/bin/sh\nbob:x:1:1::/:/bin/sh\n")
	now := time.Now()
	d.Refresh(now) // within a second of New: not re-checked yet
	if d.User(1) != "" {
		t.Fatal("re-checked too early")
	}
	d.Refresh(now.Add(2 * time.Second))
	if d.User(0) != "toor" || d.User(1) != "bob" {
		t.Fatalf("after change: %q %q", d.User(0), d.User(1))
	}
	// A removed file makes its names unknown, not stale.
	os.Remove(gr)
	d.Refresh(now.Add(4 * time.Second))
	if d.Group(0) != "" {
		t.Fatal("stale group name after removal")
	}
	if _, gerr := d.LoadErrors(); gerr == nil {
		t.Fatal("no load error for missing group file")
	}
}

func TestMissingFiles(t *testing.T) {
	d := New("/nonexistent/passwd", "/nonexistent/group", time.Second)
	if d.User(0) != "" {
		t.Fatal("invented a name")
	}
	if p, g := d.LoadErrors(); p == nil || g == nil {
		t.Fatal("want load errors")
	}
}
