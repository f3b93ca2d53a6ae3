package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// MarkRemove is FAN_MARK_REMOVE.
const MarkRemove uint = unix.FAN_MARK_REMOVE

// MarkUnsupported reports whether a fanotify_mark error means this kind of
// mark cannot be placed on that object although another kind might be:
// EXDEV (a btrfs subvolume, whose fsid differs from its superblock's, under
// a filesystem mark of a FID group) or EOPNOTSUPP/ENODEV (overlayfs and
// other filesystems that cannot report file handles for every object).
func MarkUnsupported(err error) bool {
	return errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENODEV)
}

// MarkLimit reports whether a fanotify_mark error is the per-user mark
// limit (fs.fanotify.max_user_marks): ENOSPC.
func MarkLimit(err error) bool { return errors.Is(err, unix.ENOSPC) }

// NotExist reports whether err says a path is gone (ENOENT, ENOTDIR).
func NotExist(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)
}

// DirID is what the agent remembers of a directory it put an inode mark
// on: its device and inode (to stay on one filesystem and to notice that
// something else now sits at a path) and its handle key in the layout of
// Handle.Key, so events naming the directory find it without a lookup.
type DirID struct {
	Dev uint64
	Ino uint64
	Key string // empty when the filesystem can't encode a handle
}

// StatDir returns path's device and inode without following a final
// symlink; ok is false when it is not a directory.
func StatDir(path string) (dev, ino uint64, ok bool, err error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return 0, 0, false, fmt.Errorf("stat %s: %w", path, err)
	}
	return st.Dev, st.Ino, st.Mode&unix.S_IFMT == unix.S_IFDIR, nil
}

// MarkDir puts an inode mark for mask on the directory path (no symlink is
// followed) and returns its identity. The handle key is built as FID
// records carry it: fsid (statfs), handle_bytes, handle_type, f_handle.
func (g *Group) MarkDir(flags uint, mask uint64, path string) (DirID, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return DirID{}, fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return DirID{}, fmt.Errorf("fstat %s: %w", path, err)
	}
	id := DirID{Dev: st.Dev, Ino: st.Ino}
	// The mark goes on the object the fd holds, not on whatever the path
	// names by the time the mark is placed.
	if err := g.markFD(flags, mask, fd); err != nil {
		return id, fmt.Errorf("fanotify_mark(%#x, %#x) %s: %w", flags, mask, path, err)
	}
	id.Key = handleKey(fd)
	return id, nil
}

func (g *Group) markFD(flags uint, mask uint64, fd int) error {
	var err error
	if cerr := g.rc.Control(func(gfd uintptr) {
		err = unix.FanotifyMark(int(gfd), flags, mask, fd, "")
	}); cerr != nil {
		return cerr
	}
	return err
}

// handleKey encodes fd's handle in the Handle.Key layout, "" when the
// filesystem can't. Plain name_to_handle_at gives the bytes fanotify
// reports on the filesystems that can decode handles; AT_HANDLE_FID
// (6.5+) those of the ones that can only encode them (overlayfs).
func handleKey(fd int) string {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return ""
	}
	h, _, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH)
	if err != nil {
		const atHandleFID = 0x200 // AT_HANDLE_FID
		if h, _, err = unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH|atHandleFID); err != nil {
			return ""
		}
	}
	b := h.Bytes()
	// mirrors the fsid + struct file_handle part of struct
	// fanotify_event_info_fid, see decodeFID
	k := make([]byte, fidHandle-fidFsid+len(b))
	binary.NativeEndian.PutUint32(k[0:], uint32(sfs.Fsid.Val[0]))
	binary.NativeEndian.PutUint32(k[4:], uint32(sfs.Fsid.Val[1]))
	binary.NativeEndian.PutUint32(k[fidHandleBytes-fidFsid:], uint32(len(b)))
	binary.NativeEndian.PutUint32(k[fidHandleType-fidFsid:], uint32(h.Type()))
	copy(k[fidHandle-fidFsid:], b)
	return string(k)
}

// MountRoot reports whether path is the root of its filesystem mounted at
// path: a mount point whose mount shows the filesystem's own root (not a
// bind mount of a subdirectory, not a btrfs subvol= mount). mountinfo is
// the text of /proc/self/mountinfo.
func MountRoot(mountinfo []byte, path string) bool {
	root, ok := mountAt(mountinfo, path)
	return ok && root == "/"
}

// IsMountPoint reports whether something is mounted at path.
func IsMountPoint(mountinfo []byte, path string) bool {
	_, ok := mountAt(mountinfo, path)
	return ok
}

// PartialMount returns the mount point of the mount that holds path when
// that mount shows only part of its filesystem (a bind mount of a
// subdirectory, a btrfs subvol= mount), else "". Through such a mount the
// kernel cannot name an object outside the part it shows: the path of a
// handle opened there escapes (d_path gives "/" for every such
// directory), which is no path at all.
func PartialMount(mountinfo []byte, path string) string {
	best, root := "", ""
	eachMount(mountinfo, func(r, mp string) {
		if pathUnder(path, mp) && len(mp) >= len(best) {
			best, root = mp, r // the topmost of equals is listed last
		}
	})
	if best == "" || root == "/" {
		return ""
	}
	return best
}

// pathUnder reports whether p is dir or below it.
func pathUnder(p, dir string) bool {
	if dir == "/" || p == dir {
		return true
	}
	return len(p) > len(dir) && p[:len(dir)] == dir && p[len(dir)] == '/'
}

// mountAt returns the root field of the last (topmost) mount at path.
// Fields: mount ID, parent ID, major:minor, root, mount point, …; root
// and mount point escape space, tab, newline and backslash as \ooo.
func mountAt(mountinfo []byte, path string) (root string, ok bool) {
	eachMount(mountinfo, func(r, mp string) {
		if mp == path {
			root, ok = r, true
		}
	})
	return root, ok
}

// eachMount calls fn with the root and mount point (unescaped) of every
// mountinfo line, in order.
func eachMount(mountinfo []byte, fn func(root, mountPoint string)) {
	for len(mountinfo) > 0 {
		line := mountinfo
		if i := indexByte(line, '\n'); i >= 0 {
			line, mountinfo = line[:i], mountinfo[i+1:]
		} else {
			mountinfo = nil
		}
		f := fields(line, 5)
		if len(f) < 5 {
			continue
		}
		fn(unescapeMount(f[3]), unescapeMount(f[4]))
	}
}

func indexByte(b []byte, c byte) int {
	for i := range b {
		if b[i] == c {
			return i
		}
	}
	return -1
}

func fields(b []byte, n int) [][]byte {
	var out [][]byte
	for len(out) < n {
		for len(b) > 0 && b[0] == ' ' {
			b = b[1:]
		}
		if len(b) == 0 {
			break
		}
		i := indexByte(b, ' ')
		if i < 0 {
			out = append(out, b)
			break
		}
		out = append(out, b[:i])
		b = b[i:]
	}
	return out
}

func unescapeMount(b []byte) string {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' && i+3 < len(b) && isOct(b[i+1]) && isOct(b[i+2]) && isOct(b[i+3]) {
			out = append(out, (b[i+1]-'0')<<6|(b[i+2]-'0')<<3|(b[i+3]-'0'))
			i += 3
			continue
		}
		out = append(out, b[i])
	}
	return string(out)
}

func isOct(c byte) bool { return c >= '0' && c <= '7' }

// MountWatch signals changes of the mount table: /proc/self/mountinfo
// polls POLLPRI|POLLERR when a mount or unmount happens in the namespace.
// The fd is a raw one, kept out of the runtime's epoll: the file's poll
// consumes the change it reports, so the runtime's poller would eat it.
type MountWatch struct {
	fd   int
	wake [2]int // pipe: Close writes to end a Wait
	buf  []byte
}

// OpenMountWatch opens /proc/self/mountinfo for change notification.
func OpenMountWatch() (*MountWatch, error) {
	fd, err := unix.Open("/proc/self/mountinfo", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("mount watch: %w", err)
	}
	w := &MountWatch{fd: fd, buf: make([]byte, 64<<10)}
	if err := unix.Pipe2(w.wake[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mount watch: pipe: %w", err)
	}
	return w, nil
}

// Read returns the current mount table.
func (w *MountWatch) Read() ([]byte, error) {
	if _, err := unix.Seek(w.fd, 0, 0); err != nil {
		return nil, fmt.Errorf("mountinfo: %w", err)
	}
	var out []byte
	for {
		n, err := unix.Read(w.fd, w.buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("mountinfo: %w", err)
		}
		if n <= 0 {
			return out, nil
		}
		out = append(out, w.buf[:n]...)
	}
}

// Wait blocks until the mount table changed (true) or Close was called
// (false).
func (w *MountWatch) Wait() (bool, error) {
	for {
		fds := [2]unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLPRI}, {Fd: int32(w.wake[0]), Events: unix.POLLIN}}
		n, err := unix.Poll(fds[:], -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("mount watch: poll: %w", err)
		}
		if n > 0 && fds[1].Revents != 0 {
			return false, nil
		}
		if n > 0 && fds[0].Revents&(unix.POLLPRI|unix.POLLERR) != 0 {
			return true, nil
		}
	}
}

// Close ends a Wait.
func (w *MountWatch) Close() error {
	if _, err := unix.Write(w.wake[1], []byte{1}); err != nil {
		return fmt.Errorf("mount watch: %w", err)
	}
	return nil
}

// Release frees the watch's fds once no Wait runs.
func (w *MountWatch) Release() {
	unix.Close(w.fd)
	unix.Close(w.wake[0])
	unix.Close(w.wake[1])
}

// Lstat stats path without following a final symlink.
func Lstat(path string) (Stat, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return Stat{}, fmt.Errorf("lstat %s: %w", path, err)
	}
	return Stat{Ino: st.Ino, Mode: st.Mode, Nlink: st.Nlink, Size: st.Size, UID: st.Uid, GID: st.Gid}, nil
}

// Times is a statx of one object, for the subtree scope's check of what a
// new directory went through before its mark: identity, type and the
// timestamps in nanoseconds since the epoch (Btime only when HasBtime).
type Times struct {
	Dev, Ino            uint64
	Mode                uint32
	Mtime, Ctime, Btime int64
	HasBtime            bool
}

// IsDir reports whether the object is a directory.
func (t Times) IsDir() bool { return t.Mode&unix.S_IFMT == unix.S_IFDIR }

// StatTimes statx's path without following a final symlink. Asking for
// ctime marks the inode's ctime as queried on multigrain filesystems
// (Linux 6.13+: tmpfs, ext4, xfs, btrfs), so the inode's next change gets a
// timestamp that differs from the one returned here even within the same
// clock tick; a change before the query may carry the very timestamp the
// inode was created with (coarse, one tick).
func StatTimes(path string) (Times, error) {
	var s unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW,
		unix.STATX_TYPE|unix.STATX_INO|unix.STATX_MTIME|unix.STATX_CTIME|unix.STATX_BTIME, &s); err != nil {
		return Times{}, fmt.Errorf("statx %s: %w", path, err)
	}
	ns := func(t unix.StatxTimestamp) int64 { return t.Sec*1e9 + int64(t.Nsec) }
	return Times{
		Dev: unix.Mkdev(s.Dev_major, s.Dev_minor), Ino: s.Ino, Mode: uint32(s.Mode),
		Mtime: ns(s.Mtime), Ctime: ns(s.Ctime), Btime: ns(s.Btime),
		HasBtime: s.Mask&unix.STATX_BTIME != 0,
	}, nil
}

// BirthTime returns path's btime in nanoseconds since the epoch (ok false
// when the filesystem keeps none). It asks statx for btime alone, which
// does not mark the inode's ctime as queried (see StatTimes): its next
// change keeps the coarse timestamp it would have had.
func BirthTime(path string) (ns int64, ok bool, err error) {
	var s unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BTIME, &s); err != nil {
		return 0, false, fmt.Errorf("statx %s: %w", path, err)
	}
	return s.Btime.Sec*1e9 + int64(s.Btime.Nsec), s.Mask&unix.STATX_BTIME != 0, nil
}

// CoarseNow is CLOCK_REALTIME_COARSE in nanoseconds: the clock a
// filesystem's timestamps come from unless a fine-grained one is needed.
func CoarseNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME_COARSE, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

// MarkHandle changes the inode mark of the directory a handle names
// (open_by_handle_at through mount, then fanotify_mark on that very
// object, so a path that changed meanwhile cannot redirect it). The O_PATH
// fd is handed over as /proc/self/fd/N: fanotify_mark takes no O_PATH fd
// as its object (EBADF), and opening the directory for real would queue
// open and close events of the agent's own. A handle whose object is gone
// returns an error IsStale recognises.
func (g *Group) MarkHandle(flags uint, mask uint64, mount *os.File, h *Handle) error {
	fd, err := openByHandle(mount, h.Type(), h.Bytes(), OpenPath|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var lnk [32]byte
	p := append(lnk[:0], "/proc/self/fd/"...)
	p = strconv.AppendInt(p, int64(fd), 10)
	return g.Mark(flags, mask, string(p))
}

// UnmarkBelow removes the group's filesystem mark (fsMask; 0 for none)
// from the filesystem of dir, an open directory, and its inode marks
// (inodeMask) from the directories at rels below dir ("" is dir itself),
// reached through dir's fd: the path that showed them may be gone (an
// unmounted filesystem). A final symlink below dir is not followed.
// Errors are ignored: a mark that is not there, a directory gone since.
func (g *Group) UnmarkBelow(dir *os.File, fsMask, inodeMask uint64, rels []string) {
	rc, err := dir.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		base := "/proc/self/fd/" + strconv.Itoa(int(fd))
		if fsMask != 0 {
			_ = g.Mark(MarkRemove|MarkFilesystem, fsMask, base)
		}
		for _, rel := range rels {
			flags := MarkRemove
			if rel != "" {
				flags |= unix.FAN_MARK_DONT_FOLLOW
			}
			_ = g.Mark(flags, inodeMask, base+rel)
		}
	})
}
