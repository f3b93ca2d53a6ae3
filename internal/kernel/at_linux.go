package kernel

import (
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// The *at calls below are the primitives of internal/safefile: every name
// is one path component resolved relative to an open directory, and the
// last component is never followed when it is a symbolic link. They take
// and return *os.File so that callers outside this package never see a
// raw descriptor.

// NodeStat mirrors the fields of struct stat (asm-generic/stat.h) that
// the safe-file checks need: identity, type, permissions and owner.
type NodeStat struct {
	Dev   uint64
	Ino   uint64
	Mode  uint32 // st_mode: type bits (ModeType) and permission bits
	Nlink uint64
	UID   uint32
	GID   uint32
	Size  int64
}

// ModeSticky is S_ISVTX in NodeStat.Mode.
const ModeSticky = unix.S_ISVTX

// Errors the safe-file checks match with errors.Is.
var (
	// ErrLoop is ELOOP: O_NOFOLLOW met a symbolic link.
	ErrLoop error = unix.ELOOP
	// ErrNotDir is ENOTDIR: a component is not a directory.
	ErrNotDir error = unix.ENOTDIR
)

func nodeStat(st *unix.Stat_t) NodeStat {
	return NodeStat{Dev: st.Dev, Ino: st.Ino, Mode: st.Mode, Nlink: st.Nlink, UID: st.Uid, GID: st.Gid, Size: st.Size}
}

// dirFD is dir's descriptor, or AT_FDCWD for a nil dir (absolute names).
func dirFD(dir *os.File) int {
	if dir == nil {
		return unix.AT_FDCWD
	}
	return int(dir.Fd())
}

func dirName(dir *os.File, name string) string {
	if dir == nil {
		return name
	}
	return strings.TrimSuffix(dir.Name(), "/") + "/" + name
}

// OpenDirAt opens the directory name in dir (nil: name is absolute)
// without following a symbolic link in name's last component.
func OpenDirAt(dir *os.File, name string) (*os.File, error) {
	defer runtime.KeepAlive(dir)
	fd, err := unix.Openat(dirFD(dir), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dirName(dir, name), Err: err}
	}
	return os.NewFile(uintptr(fd), dirName(dir, name)), nil
}

// OpenAt opens name in dir with flag (os.O_* values) and perm, adding
// O_NOFOLLOW, O_NOCTTY and O_CLOEXEC. It opens with O_NONBLOCK so that a
// FIFO planted at name cannot block the caller, and clears O_NONBLOCK
// again before returning; it also returns the fstat of what it opened, so
// that the caller checks the very inode it got.
func OpenAt(dir *os.File, name string, flag int, perm uint32) (*os.File, NodeStat, error) {
	defer runtime.KeepAlive(dir)
	path := dirName(dir, name)
	fd, err := unix.Openat(dirFD(dir), name, flag|unix.O_NOFOLLOW|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, perm)
	if err != nil {
		return nil, NodeStat{}, &os.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		_ = unix.Close(fd)
		return nil, NodeStat{}, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG || st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if err := unix.SetNonblock(fd, false); err != nil {
			_ = unix.Close(fd)
			return nil, NodeStat{}, &os.PathError{Op: "fcntl", Path: path, Err: err}
		}
	}
	return os.NewFile(uintptr(fd), path), nodeStat(&st), nil
}

// MkdirAt creates the directory name in dir with perm (before the umask).
func MkdirAt(dir *os.File, name string, perm uint32) error {
	defer runtime.KeepAlive(dir)
	if err := unix.Mkdirat(dirFD(dir), name, perm); err != nil {
		return &os.PathError{Op: "mkdir", Path: dirName(dir, name), Err: err}
	}
	return nil
}

// LstatAt stats name in dir without following a symbolic link.
func LstatAt(dir *os.File, name string) (NodeStat, error) {
	defer runtime.KeepAlive(dir)
	var st unix.Stat_t
	if err := unix.Fstatat(dirFD(dir), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return NodeStat{}, &os.PathError{Op: "lstat", Path: dirName(dir, name), Err: err}
	}
	return nodeStat(&st), nil
}

// Fstat stats an open file. It allocates nothing, so that the file sink
// can check its file on every batch.
func Fstat(f *os.File) (NodeStat, error) {
	defer runtime.KeepAlive(f)
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return NodeStat{}, &os.PathError{Op: "fstat", Path: f.Name(), Err: err}
	}
	return nodeStat(&st), nil
}

// Fchmod sets the permission bits of an open file, whatever the umask.
func Fchmod(f *os.File, perm uint32) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("fchmod %s: %w", f.Name(), err)
	}
	var serr error
	if cerr := rc.Control(func(fd uintptr) { serr = unix.Fchmod(int(fd), perm) }); cerr != nil {
		return fmt.Errorf("fchmod %s: %w", f.Name(), cerr)
	}
	if serr != nil {
		return &os.PathError{Op: "fchmod", Path: f.Name(), Err: serr}
	}
	return nil
}

// ErrWouldBlock is returned by TryLock when another open file
// description holds the lock.
const ErrWouldBlock = unix.EWOULDBLOCK

// TryLock takes an exclusive flock(2) on f without waiting; a lock held
// elsewhere is ErrWouldBlock (wrapped).
func TryLock(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("flock %s: %w", f.Name(), err)
	}
	var serr error
	if cerr := rc.Control(func(fd uintptr) { serr = unix.Flock(int(fd), unix.LOCK_EX|unix.LOCK_NB) }); cerr != nil {
		return fmt.Errorf("flock %s: %w", f.Name(), cerr)
	}
	if serr != nil {
		return &os.PathError{Op: "flock", Path: f.Name(), Err: serr}
	}
	return nil
}

// RenameAt renames oldname to newname, both in dir. With noReplace it
// fails with an error matching fs.ErrExist rather than replace newname
// (renameat2 RENAME_NOREPLACE). A rename never follows a symbolic link:
// a link at newname is replaced, not written through.
func RenameAt(dir *os.File, oldname, newname string, noReplace bool) error {
	defer runtime.KeepAlive(dir)
	var flags uint
	if noReplace {
		flags = unix.RENAME_NOREPLACE
	}
	fd := dirFD(dir)
	if err := unix.Renameat2(fd, oldname, fd, newname, flags); err != nil {
		return &os.LinkError{Op: "rename", Old: dirName(dir, oldname), New: dirName(dir, newname), Err: err}
	}
	return nil
}

// ExchangeAt swaps the names a and b in dir atomically (renameat2
// RENAME_EXCHANGE): both must exist; neither is followed if a link.
func ExchangeAt(dir *os.File, a, b string) error {
	defer runtime.KeepAlive(dir)
	fd := dirFD(dir)
	if err := unix.Renameat2(fd, a, fd, b, unix.RENAME_EXCHANGE); err != nil {
		return &os.LinkError{Op: "rename exchange", Old: dirName(dir, a), New: dirName(dir, b), Err: err}
	}
	return nil
}

// UnlinkAt removes the non-directory name from dir.
func UnlinkAt(dir *os.File, name string) error {
	defer runtime.KeepAlive(dir)
	if err := unix.Unlinkat(dirFD(dir), name, 0); err != nil {
		return &os.PathError{Op: "remove", Path: dirName(dir, name), Err: err}
	}
	return nil
}

// ReadlinkAt returns the target of the symbolic link name in dir.
func ReadlinkAt(dir *os.File, name string) (string, error) {
	defer runtime.KeepAlive(dir)
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirFD(dir), name, buf)
		if err != nil {
			return "", &os.PathError{Op: "readlink", Path: dirName(dir, name), Err: err}
		}
		if n < size {
			return string(buf[:n]), nil
		}
		if size >= 1<<16 {
			return "", &os.PathError{Op: "readlink", Path: dirName(dir, name), Err: unix.ENAMETOOLONG}
		}
	}
}

// Umask sets the process's file mode creation mask and returns the old
// one (tests use it to show that modes hold whatever the umask).
func Umask(mask int) int { return unix.Umask(mask) }
