package kernel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Stat is the part of struct stat the agent reports.
type Stat struct {
	Ino   uint64
	Mode  uint32
	Nlink uint64
	Size  int64
	UID   uint32
	GID   uint32
}

// File type bits of Stat.Mode.
const (
	ModeType = unix.S_IFMT
	ModeReg  = unix.S_IFREG
	ModeDir  = unix.S_IFDIR
	ModeLnk  = unix.S_IFLNK
	ModeChr  = unix.S_IFCHR
	ModeBlk  = unix.S_IFBLK
	ModeFifo = unix.S_IFIFO
	ModeSock = unix.S_IFSOCK
)

// Open flags for OpenHandle.
const (
	OpenPath     = unix.O_PATH | unix.O_CLOEXEC
	OpenReadOnly = unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NONBLOCK
)

const deletedSuffix = " (deleted)"

// OpenMount opens path as the mount fd for open_by_handle_at and returns
// the fsid of its filesystem in the layout FID records use. It opens
// O_RDONLY because open_by_handle_at rejects O_PATH fds (EBADF).
func OpenMount(path string) (*os.File, uint64, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("open %s: %w", path, err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		unix.Close(fd)
		return nil, 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	var b [8]byte
	binary.NativeEndian.PutUint32(b[0:], uint32(st.Fsid.Val[0]))
	binary.NativeEndian.PutUint32(b[4:], uint32(st.Fsid.Val[1]))
	return os.NewFile(uintptr(fd), path), binary.NativeEndian.Uint64(b[:]), nil
}

// openByHandle builds struct file_handle on the stack so resolving a
// handle does not allocate.
func openByHandle(mount *os.File, htype int32, handle []byte, flags int) (int, error) {
	if len(handle) > MaxHandleSize {
		return -1, fmt.Errorf("open_by_handle_at: %w", ErrHandleBytes)
	}
	// mirrors struct file_handle: __u32 handle_bytes, int handle_type,
	// unsigned char f_handle[]
	var fh [8 + MaxHandleSize]byte
	binary.NativeEndian.PutUint32(fh[0:], uint32(len(handle)))
	binary.NativeEndian.PutUint32(fh[4:], uint32(htype))
	copy(fh[8:], handle)
	rc, err := mount.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("mount fd: %w", err)
	}
	var fd uintptr
	var errno unix.Errno
	cerr := rc.Control(func(mfd uintptr) {
		fd, _, errno = unix.Syscall(unix.SYS_OPEN_BY_HANDLE_AT, mfd, uintptr(unsafe.Pointer(&fh[0])), uintptr(flags))
	})
	if cerr != nil {
		return -1, fmt.Errorf("open_by_handle_at: %w", cerr)
	}
	if errno != 0 {
		if errno == unix.ESTALE || errno == unix.ENOENT {
			// The common case on a busy tree: the file was unlinked
			// before its event was read. A bare errno costs no
			// allocation; IsStale recognises it.
			return -1, errno
		}
		return -1, fmt.Errorf("open_by_handle_at: %w", errno)
	}
	return int(fd), nil
}

// DecodesHandles reports whether the filesystem of the open directory
// mount can open the file handles fanotify reports (open_by_handle_at).
// overlayfs without nfs_export only encodes them for fanotify
// (AT_HANDLE_FID), so its objects can never be named by handle.
func DecodesHandles(mount *os.File) bool {
	rc, err := mount.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	if cerr := rc.Control(func(fd uintptr) {
		_, _, err := unix.NameToHandleAt(int(fd), "", unix.AT_EMPTY_PATH)
		ok = err == nil
	}); cerr != nil {
		return false
	}
	return ok
}

// IsStale reports whether err says a file handle names an object that no
// longer exists.
func IsStale(err error) bool {
	return errors.Is(err, unix.ESTALE) || errors.Is(err, unix.ENOENT)
}

// ResolveHandle returns the path of the object a handle names
// (open_by_handle_at O_PATH, readlink of /proc/self/fd/N, close) and its
// stat. A path whose object was unlinked comes back without the kernel's
// " (deleted)" suffix and with Nlink 0, so callers can tell.
func ResolveHandle(mount *os.File, htype int32, handle []byte) (string, Stat, error) {
	fd, err := openByHandle(mount, htype, handle, OpenPath)
	if err != nil {
		return "", Stat{}, err
	}
	defer unix.Close(fd)
	return fdPath(fd)
}

// StatHandle fstats the object a handle names.
func StatHandle(mount *os.File, htype int32, handle []byte) (Stat, error) {
	fd, err := openByHandle(mount, htype, handle, OpenPath)
	if err != nil {
		return Stat{}, err
	}
	defer unix.Close(fd)
	return fstat(fd)
}

// OpenHandle opens the object a handle names as an os.File.
func OpenHandle(mount *os.File, htype int32, handle []byte, flags int) (*os.File, error) {
	fd, err := openByHandle(mount, htype, handle, flags)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "handle"), nil
}

// FDPath resolves an fd-mode event fd (readlink /proc/self/fd/N) and
// fstats it. It does not close fd.
func FDPath(fd int32) (string, Stat, error) {
	return fdPath(int(fd))
}

// CloseFD closes an fd the kernel installed for an event (event fd, pidfd).
func CloseFD(fd int32) error {
	if err := unix.Close(int(fd)); err != nil {
		return fmt.Errorf("close fd %d: %w", fd, err)
	}
	return nil
}

// NewFile wraps an fd the kernel installed so that its owner closes it.
func NewFile(fd int32, name string) *os.File {
	return os.NewFile(uintptr(fd), name)
}

func fdPath(fd int) (string, Stat, error) {
	var lnk [32]byte
	p := append(lnk[:0], "/proc/self/fd/"...)
	p = strconv.AppendInt(p, int64(fd), 10)
	var buf [unix.PathMax]byte
	n, err := unix.Readlink(string(p), buf[:])
	if err != nil {
		return "", Stat{}, fmt.Errorf("readlink %s: %w", p, err)
	}
	st, err := fstat(fd)
	if err != nil {
		return "", Stat{}, err
	}
	b := buf[:n]
	if st.Nlink == 0 && bytes.HasSuffix(b, []byte(deletedSuffix)) {
		b = b[:len(b)-len(deletedSuffix)]
	}
	return string(b), st, nil
}

func fstat(fd int) (Stat, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		if errors.Is(err, unix.EBADF) {
			return Stat{}, fmt.Errorf("fstat fd %d: %w", fd, err)
		}
		return Stat{}, fmt.Errorf("fstat: %w", err)
	}
	return Stat{Ino: st.Ino, Mode: st.Mode, Nlink: st.Nlink, Size: st.Size, UID: st.Uid, GID: st.Gid}, nil
}

// FileStat fstats an open file.
func FileStat(f *os.File) (Stat, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return Stat{}, fmt.Errorf("fstat: %w", err)
	}
	var st Stat
	var serr error
	if cerr := rc.Control(func(fd uintptr) { st, serr = fstat(int(fd)) }); cerr != nil {
		return Stat{}, fmt.Errorf("fstat: %w", cerr)
	}
	return st, serr
}
