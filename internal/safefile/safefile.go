// Package safefile owns how fanaudit, running as root, opens, creates,
// renames and removes the files and directories it writes: file sink
// output and its rotated backups, gzip temp files, dead letters, the
// Kafka spool, sealing state and the restart marker. Every such file goes
// through it; nothing else in the agent opens a file for writing by path.
//
// The rules, so that no other user can turn the agent against the host:
//
//   - A path is walked one component at a time from "/", each directory
//     opened relative to its parent with O_NOFOLLOW, and each checked
//     before the next is opened (see OpenDir). A directory that someone
//     other than root (or the agent's own user) can write is refused,
//     unless it is sticky and owned by root, like /tmp. A symbolic link
//     among the directories is followed only when root (or the agent's
//     user) owns it, as fs.protected_symlinks would.
//   - The last component is never followed when it is a symbolic link:
//     files are opened relative to the directory's descriptor with
//     O_NOFOLLOW, and an existing file must be a regular file with one
//     link, owned by root or the agent's user, that others cannot write.
//   - New files are created with O_EXCL and get their mode with fchmod,
//     whatever the umask; temp files get unpredictable names.
//   - Private directories (spool, state) must also be the agent's own:
//     owned by its user, writable by nobody else, sticky or not, and
//     their files writable by nobody else.
//
// A refusal is an *Error naming the config key the caller gave, so that
// start-up can exit 2 with one line naming the key.
package safefile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/fanaudit/fanaudit/internal/kernel"
)

// ErrUnsafe matches (with errors.Is) every refusal of this package.
var ErrUnsafe = errors.New("unsafe path")

// Error is a refusal: Path is not safe for the agent to write, for Reason.
type Error struct {
	Key    string // the config key that named the path, when the caller gave one
	Path   string
	Reason string
}

func (e *Error) Error() string {
	msg := e.Path + ": " + e.Reason
	if e.Key != "" {
		msg = e.Key + ": " + msg
	}
	return msg
}

// Is makes errors.Is(err, ErrUnsafe) true.
func (e *Error) Is(target error) bool { return target == ErrUnsafe }

// WithKeyPrefix returns a copy of e whose Key starts with prefix, for a
// caller that knows where in the config the key sits ("sinks[0].file.").
func (e *Error) WithKeyPrefix(prefix string) *Error {
	c := *e
	c.Key = prefix + c.Key
	return &c
}

// Options says how a directory is opened and checked.
type Options struct {
	// Key is the config key named in errors ("path", "spool.dir").
	Key string
	// Create makes missing directories with DirMode.
	Create bool
	// DirMode is the mode of directories Create makes; 0 means 0700.
	DirMode os.FileMode
	// Private requires the directory itself to be the agent's own: owned
	// by its effective user and writable by no one else (spool, state).
	Private bool
}

// maxLinks bounds symbolic links followed in one walk, like the kernel's 40.
const maxLinks = 40

// Dir is an open, checked directory. Every name given to its methods is
// one path component inside it.
type Dir struct {
	f    *os.File
	path string
	opts Options
	euid uint32
}

// OpenDir walks the absolute path from "/" and returns its directory,
// checked as the package doc says. With opts.Create, missing directories
// are created (mode opts.DirMode, whatever the umask).
func OpenDir(path string, opts Options) (*Dir, error) {
	d := &Dir{opts: opts, euid: uint32(os.Geteuid())}
	if d.opts.DirMode == 0 {
		d.opts.DirMode = 0o700
	}
	if !filepath.IsAbs(path) {
		return nil, d.refuse(path, "must be an absolute path")
	}
	path = filepath.Clean(path)
	cur, err := kernel.OpenDirAt(nil, "/")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	curPath := "/"
	if err := d.checkDir(cur, curPath, path == "/"); err != nil {
		cur.Close()
		return nil, err
	}
	comps := split(path)
	links := 0
	for len(comps) > 0 {
		c := comps[0]
		comps = comps[1:]
		if c == "." {
			continue
		}
		next, err := kernel.OpenDirAt(cur, c)
		created := false
		if err != nil && errors.Is(err, fs.ErrNotExist) && opts.Create && c != ".." {
			if err = kernel.MkdirAt(cur, c, uint32(d.opts.DirMode.Perm())); err == nil {
				created = true
			} else if errors.Is(err, fs.ErrExist) {
				err = nil // made by somebody else meanwhile: checked below
			}
			if err == nil {
				next, err = kernel.OpenDirAt(cur, c)
			}
		}
		if err != nil && (errors.Is(err, kernel.ErrLoop) || errors.Is(err, kernel.ErrNotDir)) {
			st, lerr := kernel.LstatAt(cur, c)
			if lerr == nil && st.Mode&kernel.ModeType == kernel.ModeLnk {
				if !d.trusted(st.UID) {
					cur.Close()
					return nil, d.refuse(filepath.Join(curPath, c), fmt.Sprintf("is a symbolic link owned by uid %d; fanaudit follows only links owned by root", st.UID))
				}
				if links++; links > maxLinks {
					cur.Close()
					return nil, d.refuse(path, "too many levels of symbolic links")
				}
				target, rerr := kernel.ReadlinkAt(cur, c)
				if rerr != nil {
					cur.Close()
					return nil, fmt.Errorf("%s: %w", path, rerr)
				}
				if filepath.IsAbs(target) {
					root, oerr := kernel.OpenDirAt(nil, "/")
					if oerr != nil {
						cur.Close()
						return nil, fmt.Errorf("%s: %w", path, oerr)
					}
					cur.Close()
					cur, curPath = root, "/"
				}
				comps = append(split(target), comps...)
				continue
			}
			if lerr == nil {
				err = &os.PathError{Op: "open", Path: filepath.Join(curPath, c), Err: kernel.ErrNotDir}
			}
		}
		if err != nil {
			cur.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		cur.Close()
		cur, curPath = next, filepath.Join(curPath, c)
		if created {
			// The umask may have narrowed the mode given to mkdir.
			if err := kernel.Fchmod(cur, uint32(d.opts.DirMode.Perm())); err != nil {
				cur.Close()
				return nil, fmt.Errorf("%s: %w", path, err)
			}
		}
		if err := d.checkDir(cur, curPath, len(comps) == 0); err != nil {
			cur.Close()
			return nil, err
		}
	}
	d.f, d.path = cur, path
	return d, nil
}

func split(p string) []string {
	var out []string
	for _, c := range strings.Split(p, "/") {
		if c != "" {
			out = append(out, c)
		}
	}
	return out
}

// trusted reports whether uid is root or the agent's own user.
func (d *Dir) trusted(uid uint32) bool { return uid == 0 || uid == d.euid }

func (d *Dir) refuse(path, reason string) *Error {
	return &Error{Key: d.opts.Key, Path: path, Reason: reason}
}

// checkDir applies the directory rules to dir; last is the directory the
// caller asked for (Private applies to it alone).
func (d *Dir) checkDir(dir *os.File, path string, last bool) error {
	st, err := kernel.Fstat(dir)
	if err != nil {
		return err
	}
	perm := st.Mode & 0o777
	sticky := st.Mode&kernel.ModeSticky != 0
	switch {
	case st.Mode&kernel.ModeType != kernel.ModeDir:
		return d.refuse(path, "is not a directory")
	case !d.trusted(st.UID):
		return d.refuse(path, fmt.Sprintf("directory is owned by uid %d; fanaudit writes only under directories owned by root", st.UID))
	case last && d.opts.Private && st.UID != d.euid:
		return d.refuse(path, fmt.Sprintf("private directory is owned by uid %d, not by the agent (uid %d)", st.UID, d.euid))
	case last && d.opts.Private && perm&0o022 != 0:
		return d.refuse(path, fmt.Sprintf("private directory has mode %04o; it must not be writable by group or others (chmod go-w)", st.Mode&0o7777))
	case perm&0o002 != 0 && !(sticky && st.UID == 0):
		return d.refuse(path, fmt.Sprintf("directory has mode %04o: any user can write it; fanaudit refuses such a directory unless it is sticky and owned by root", st.Mode&0o7777))
	case perm&0o020 != 0 && st.GID != 0 && !(sticky && st.UID == 0):
		return d.refuse(path, fmt.Sprintf("directory has mode %04o and group %d: users other than root can write it; fanaudit refuses such a directory unless it is sticky and owned by root", st.Mode&0o7777, st.GID))
	}
	return nil
}

// Path returns the path the directory was opened as.
func (d *Dir) Path() string { return d.path }

// Close closes the directory.
func (d *Dir) Close() error {
	if d == nil || d.f == nil {
		return nil
	}
	return d.f.Close()
}

// Sync fsyncs the directory, making renames and creations in it durable.
func (d *Dir) Sync() error {
	if err := d.f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", d.path, err)
	}
	return nil
}

func (d *Dir) join(name string) string { return filepath.Join(d.path, name) }

func (d *Dir) checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return d.refuse(d.join(name), "not a plain file name")
	}
	return nil
}

// checkFile applies the file rules to an existing file's stat.
func (d *Dir) checkFile(path string, st kernel.NodeStat) error {
	switch {
	case st.Mode&kernel.ModeType == kernel.ModeLnk:
		return d.refuse(path, "is a symbolic link; fanaudit never writes through one")
	case st.Mode&kernel.ModeType != kernel.ModeReg:
		return d.refuse(path, "is not a regular file")
	case !d.trusted(st.UID):
		return d.refuse(path, fmt.Sprintf("file is owned by uid %d; fanaudit uses only files owned by root", st.UID))
	case st.Nlink != 1:
		return d.refuse(path, fmt.Sprintf("file has %d hard links; fanaudit uses only files with one", st.Nlink))
	case st.Mode&0o002 != 0:
		return d.refuse(path, fmt.Sprintf("file has mode %04o: any user can write it", st.Mode&0o7777))
	case d.opts.Private && st.Mode&0o020 != 0:
		return d.refuse(path, fmt.Sprintf("file in a private directory has mode %04o: its group can write it", st.Mode&0o7777))
	}
	return nil
}

// OpenFile opens name in d with flag (os.O_* values) and perm, never
// following a symbolic link. With O_CREATE (and without O_EXCL) it first
// tries to create the file exclusively and applies perm with fchmod;
// otherwise the existing file must pass the file rules, and keeps its
// mode. O_TRUNC is applied only after the checks passed.
func (d *Dir) OpenFile(name string, flag int, perm os.FileMode) (*os.File, error) {
	if err := d.checkName(name); err != nil {
		return nil, err
	}
	path := d.join(name)
	if flag&os.O_CREATE != 0 {
		f, _, err := kernel.OpenAt(d.f, name, flag|os.O_EXCL, uint32(perm.Perm()))
		if err == nil {
			if err := kernel.Fchmod(f, uint32(perm.Perm())); err != nil {
				f.Close()
				return nil, err
			}
			return f, nil
		}
		if flag&os.O_EXCL != 0 || !errors.Is(err, fs.ErrExist) {
			return nil, d.openErr(path, err)
		}
		flag &^= os.O_CREATE
	}
	trunc := flag&os.O_TRUNC != 0
	f, st, err := kernel.OpenAt(d.f, name, flag&^os.O_TRUNC, 0)
	if err != nil {
		return nil, d.openErr(path, err)
	}
	if err := d.checkFile(path, st); err != nil {
		f.Close()
		return nil, err
	}
	if trunc {
		if err := f.Truncate(0); err != nil {
			f.Close()
			return nil, fmt.Errorf("truncate %s: %w", path, err)
		}
	}
	return f, nil
}

// ErrLocked is returned by Lock when another open file description (in
// this process or another) holds the lock.
var ErrLocked = errors.New("locked by another process")

// Lock opens (creating it with perm when missing) the lock file name in d
// and takes an exclusive flock on it without waiting. The lock lasts
// until the returned file is closed, or the process exits, so a crash
// never leaves it stale. A lock already held is ErrLocked.
func (d *Dir) Lock(name string, perm os.FileMode) (*os.File, error) {
	f, err := d.OpenFile(name, os.O_RDWR|os.O_CREATE, perm)
	if err != nil {
		return nil, err
	}
	if err := kernel.TryLock(f); err != nil {
		f.Close()
		if errors.Is(err, kernel.ErrWouldBlock) {
			return nil, fmt.Errorf("%s: %w", d.join(name), ErrLocked)
		}
		return nil, err
	}
	return f, nil
}

// openErr turns an open error into a refusal when the name is something
// the agent must not use (a link; a FIFO or device, which O_NONBLOCK
// keeps from blocking the open).
func (d *Dir) openErr(path string, err error) error {
	if errors.Is(err, kernel.ErrLoop) {
		return d.refuse(path, "is a symbolic link; fanaudit never writes through one")
	}
	if errors.Is(err, fs.ErrExist) {
		return err // O_EXCL: the caller picks another name or gives up
	}
	if st, lerr := kernel.LstatAt(d.f, filepath.Base(path)); lerr == nil {
		if ferr := d.checkFile(path, st); ferr != nil {
			return ferr
		}
	}
	return err
}

// Check returns an error when the existing name in d fails the file rules
// (or is missing: fs.ErrNotExist), without opening it.
func (d *Dir) Check(name string) error {
	if err := d.checkName(name); err != nil {
		return err
	}
	st, err := kernel.LstatAt(d.f, name)
	if err != nil {
		return err
	}
	return d.checkFile(d.join(name), st)
}

// CreateTemp creates a new file in d named prefix followed by random
// characters, exclusively (O_EXCL, never through a link), with perm
// whatever the umask, and returns it with its name.
func (d *Dir) CreateTemp(prefix string, perm os.FileMode) (*os.File, string, error) {
	for try := 0; ; try++ {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, "", fmt.Errorf("temp name: %w", err)
		}
		name := prefix + hex.EncodeToString(b[:])
		f, err := d.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, perm)
		if err == nil {
			return f, name, nil
		}
		if !errors.Is(err, fs.ErrExist) || try >= 100 {
			return nil, "", err
		}
	}
}

// Rename renames oldname to newname in d, replacing newname (a rename
// never follows a link; a link at newname is replaced).
func (d *Dir) Rename(oldname, newname string) error {
	if err := errors.Join(d.checkName(oldname), d.checkName(newname)); err != nil {
		return err
	}
	return kernel.RenameAt(d.f, oldname, newname, false)
}

// RenameNoReplace renames oldname to newname in d and fails with an error
// matching fs.ErrExist when newname exists (whatever it is).
func (d *Dir) RenameNoReplace(oldname, newname string) error {
	if err := errors.Join(d.checkName(oldname), d.checkName(newname)); err != nil {
		return err
	}
	return kernel.RenameAt(d.f, oldname, newname, true)
}

// Exchange swaps the names a and b in d in one step (both must exist), so
// that neither name is ever free for someone else to take.
func (d *Dir) Exchange(a, b string) error {
	if err := errors.Join(d.checkName(a), d.checkName(b)); err != nil {
		return err
	}
	return kernel.ExchangeAt(d.f, a, b)
}

// Remove unlinks the non-directory name from d.
func (d *Dir) Remove(name string) error {
	if err := d.checkName(name); err != nil {
		return err
	}
	return kernel.UnlinkAt(d.f, name)
}

// Exists reports whether name exists in d, whatever it is (a dangling
// link exists).
func (d *Dir) Exists(name string) (bool, error) {
	if err := d.checkName(name); err != nil {
		return false, err
	}
	_, err := kernel.LstatAt(d.f, name)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, err
	}
}

// ReadDir lists d, sorted by name.
func (d *Dir) ReadDir() ([]fs.DirEntry, error) {
	f, err := kernel.OpenDirAt(d.f, ".")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ents, err := f.ReadDir(-1)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", d.path, err)
	}
	slices.SortFunc(ents, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return ents, nil
}

// ReadFile reads name in d, which must pass the file rules, failing when
// it holds more than limit bytes.
func (d *Dir) ReadFile(name string, limit int64) ([]byte, error) {
	f, err := d.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", d.join(name), err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("read %s: larger than %d bytes", d.join(name), limit)
	}
	return b, nil
}

// WriteFile replaces name in d atomically with data: a new temp file,
// fsync, rename over name, fsync of d. After a crash name holds either
// the old or the new content.
func (d *Dir) WriteFile(name string, data []byte, perm os.FileMode) (err error) {
	if err := d.checkName(name); err != nil {
		return err
	}
	f, tmp, err := d.CreateTemp("."+name+".tmp-", perm)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = kernel.UnlinkAt(d.f, tmp)
		}
	}()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", d.join(name), err)
	}
	if err := kernel.RenameAt(d.f, tmp, name, false); err != nil {
		return err
	}
	return d.Sync()
}

// Change says how a name relates to a file the caller has open.
type Change int

const (
	// Same: the name still leads to the open file.
	Same Change = iota
	// Unlinked: the open file was deleted; what is written to it is lost.
	Unlinked
	// Replaced: the name leads to another file (or link) now.
	Replaced
	// Moved: the name is gone, but the open file still has a name
	// somewhere (renamed away, as logrotate does).
	Moved
)

func (c Change) String() string {
	switch c {
	case Same:
		return "same"
	case Unlinked:
		return "unlinked"
	case Replaced:
		return "replaced"
	case Moved:
		return "moved"
	}
	return fmt.Sprintf("Change(%d)", int(c))
}

// Deleted reports whether f was unlinked: what is written to it now is
// lost. One fstat, no allocation: cheap enough for every write.
func Deleted(f *os.File) (bool, error) {
	st, err := kernel.Fstat(f)
	if err != nil {
		return false, err
	}
	return st.Nlink == 0, nil
}

// Compare tells whether name in d still leads to f: one fstat and one
// fstatat (which allocates the name's C string).
func (d *Dir) Compare(f *os.File, name string) (Change, error) {
	fst, err := kernel.Fstat(f)
	if err != nil {
		return Same, err
	}
	if fst.Nlink == 0 {
		return Unlinked, nil
	}
	st, err := kernel.LstatAt(d.f, name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return Moved, nil
	case err != nil:
		return Same, err
	case st.Dev != fst.Dev || st.Ino != fst.Ino:
		return Replaced, nil
	}
	return Same, nil
}

// File is a file opened by Open, with the directory it was opened in.
type File struct {
	*os.File
	Dir  *Dir
	Name string // the file's name in Dir
}

// Open opens the absolute path's directory with opts (OpenDir) and the
// file in it with flag and perm (Dir.OpenFile).
func Open(path string, flag int, perm os.FileMode, opts Options) (*File, error) {
	dir, name := filepath.Split(path)
	d, err := OpenDir(dir, opts)
	if err != nil {
		return nil, err
	}
	f, err := d.OpenFile(name, flag, perm)
	if err != nil {
		d.Close()
		return nil, err
	}
	return &File{File: f, Dir: d, Name: name}, nil
}

// Compare tells whether the file's path still leads to it (Dir.Compare).
func (f *File) Compare() (Change, error) { return f.Dir.Compare(f.File, f.Name) }

// Close closes the file and its directory.
func (f *File) Close() error {
	return errors.Join(f.File.Close(), f.Dir.Close())
}
