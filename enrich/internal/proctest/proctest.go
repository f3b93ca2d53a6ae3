// Package proctest writes fake /proc trees for enrichment tests.
package proctest

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// Fixture is one process in a fake /proc tree.
type Fixture struct {
	Pid       int32
	PPid      int32
	Comm      string // default: base name of Exe
	Exe       string // "" = no exe link (zombie, kernel thread)
	Cmdline   string // NUL-separated
	Start     uint64 // start time in clock ticks
	UID, EUID uint32
	GID       uint32
	LoginUID  string // "" = 4294967295 (unset)
	SessionID string // "" = 4294967295 (unset)
	Cgroup    string // file content; default "0::/user.slice\n"
	NoStatus  bool   // leave out status, as for a process mid-exit
}

// Write creates (or replaces) f under the fake proc root.
func Write(t testing.TB, root string, f Fixture) {
	t.Helper()
	dir := filepath.Join(root, strconv.FormatInt(int64(f.Pid), 10))
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	comm := f.Comm
	if comm == "" {
		comm = filepath.Base(f.Exe)
	}
	w := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	w("stat", strconv.FormatInt(int64(f.Pid), 10)+" ("+comm+") S "+strconv.FormatInt(int64(f.PPid), 10)+" 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 "+strconv.FormatInt(int64(f.Start), 10)+" 1000 100\n")
	if !f.NoStatus {
		w("status", "Name:\t"+comm+"\nUid:\t"+strconv.FormatInt(int64(f.UID), 10)+"\t"+strconv.FormatInt(int64(f.EUID), 10)+"\t0\t0\nGid:\t"+strconv.FormatInt(int64(f.GID), 10)+"\t"+strconv.FormatInt(int64(f.GID), 10)+"\t0\t0\n")
	}
	if f.Exe != "" {
		if err := os.Symlink(f.Exe, filepath.Join(dir, "exe")); err != nil {
			t.Fatal(err)
		}
	}
	w("cmdline", f.Cmdline)
	lu, sid := f.LoginUID, f.SessionID
	if lu == "" {
		lu = "4294967295"
	}
	if sid == "" {
		sid = "4294967295"
	}
	w("loginuid", lu)
	w("sessionid", sid)
	cg := f.Cgroup
	if cg == "" {
		cg = "0::/user.slice\n"
	}
	w("cgroup", cg)
}
