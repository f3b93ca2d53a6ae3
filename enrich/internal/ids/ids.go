// Package ids owns user and group names: it parses passwd and group files
// without cgo and refreshes them when the files change.
package ids

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"syscall"
	"time"
)

// fileState identifies one version of a file; a change of any field means
// the file must be parsed again.
type fileState struct {
	ino   uint64
	size  int64
	mtime time.Time
	ok    bool
}

func stateOf(path string) (fileState, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileState{}, err
	}
	st := fileState{size: fi.Size(), mtime: fi.ModTime(), ok: true}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
	}
	return st, nil
}

// DB resolves ids to names. It is not safe for concurrent use: it belongs
// to the enricher's goroutine, which is the only one that needs names.
type DB struct {
	passwdPath, groupPath string
	checkEvery            time.Duration

	lastCheck           time.Time
	passwdSt, groupSt   fileState
	users, groups       map[uint32]string
	passwdErr, groupErr error
}

// New returns a DB over the given files and loads them. A missing or
// unreadable file is not fatal (names are then unknown); its error is kept
// for LoadErrors.
func New(passwdPath, groupPath string, checkEvery time.Duration) *DB {
	d := &DB{passwdPath: passwdPath, groupPath: groupPath, checkEvery: checkEvery}
	d.reload(time.Now())
	return d
}

// LoadErrors returns the errors of the last load of each file.
func (d *DB) LoadErrors() (passwd, group error) { return d.passwdErr, d.groupErr }

// Refresh re-stats the files at most once per checkEvery and re-parses
// any that changed.
func (d *DB) Refresh(now time.Time) {
	if now.Sub(d.lastCheck) < d.checkEvery {
		return
	}
	d.reload(now)
}

func (d *DB) reload(now time.Time) {
	d.lastCheck = now
	d.users, d.passwdSt, d.passwdErr = load(d.passwdPath, d.passwdSt, d.users)
	d.groups, d.groupSt, d.groupErr = load(d.groupPath, d.groupSt, d.groups)
}

func load(path string, old fileState, cur map[uint32]string) (map[uint32]string, fileState, error) {
	st, err := stateOf(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fileState{}, fmt.Errorf("ids: %w", err)
		}
		return cur, old, fmt.Errorf("ids: %w", err)
	}
	if old.ok && st == old {
		return cur, old, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return cur, old, fmt.Errorf("ids: %w", err)
	}
	m, err := Parse(b)
	if err != nil {
		return cur, old, fmt.Errorf("ids: %s: %w", path, err)
	}
	return m, st, nil
}

// Parse reads passwd or group lines, "name:x:id:...". Comments, blank
// lines, NIS "+"/"-" entries and lines with a bad id are skipped, since
// one bad line must not hide every other name; when an id appears twice
// the first entry wins, as with getpwuid.
func Parse(b []byte) (map[uint32]string, error) {
	m := make(map[uint32]string)
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] == '#' || line[0] == '+' || line[0] == '-' {
			continue
		}
		f := bytes.SplitN(line, []byte(":"), 4)
		if len(f) < 3 || len(f[0]) == 0 {
			continue
		}
		id, err := strconv.ParseUint(string(f[2]), 10, 32)
		if err != nil {
			continue
		}
		if _, dup := m[uint32(id)]; !dup {
			m[uint32(id)] = string(f[0])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return m, nil
}

// User returns the name of uid, or "" when unknown.
func (d *DB) User(uid uint32) string { return d.users[uid] }

// Group returns the name of gid, or "" when unknown.
func (d *DB) Group(gid uint32) string { return d.groups[gid] }
