// Package kernel owns every direct contact with the Linux kernel: it is the
// only package that imports golang.org/x/sys/unix and unsafe. For capture it
// holds the fanotify struct mirrors, the pure event decoder, group creation,
// marks, the feature probe and the open_by_handle_at helpers; for enrichment
// it holds the pidfd and /proc helpers (pidfd*.go, proc*.go).
package kernel

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// fanotify event mask bits, re-exported so that callers need not import unix.
const (
	FanAccess       uint64 = unix.FAN_ACCESS
	FanModify       uint64 = unix.FAN_MODIFY
	FanAttrib       uint64 = unix.FAN_ATTRIB
	FanCloseWrite   uint64 = unix.FAN_CLOSE_WRITE
	FanCloseNowrite uint64 = unix.FAN_CLOSE_NOWRITE
	FanOpen         uint64 = unix.FAN_OPEN
	FanMovedFrom    uint64 = unix.FAN_MOVED_FROM
	FanMovedTo      uint64 = unix.FAN_MOVED_TO
	FanCreate       uint64 = unix.FAN_CREATE
	FanDelete       uint64 = unix.FAN_DELETE
	FanDeleteSelf   uint64 = unix.FAN_DELETE_SELF
	FanMoveSelf     uint64 = unix.FAN_MOVE_SELF
	FanOpenExec     uint64 = unix.FAN_OPEN_EXEC
	FanQOverflow    uint64 = unix.FAN_Q_OVERFLOW
	FanFSError      uint64 = unix.FAN_FS_ERROR
	FanRename       uint64 = unix.FAN_RENAME
	FanOnDir        uint64 = unix.FAN_ONDIR
	FanEventOnChild uint64 = unix.FAN_EVENT_ON_CHILD
)

// fanotify_init flags.
const (
	InitClassNotif    uint = unix.FAN_CLASS_NOTIF
	InitUnlimitedQ    uint = unix.FAN_UNLIMITED_QUEUE
	InitReportPidFD   uint = unix.FAN_REPORT_PIDFD
	InitReportFID     uint = unix.FAN_REPORT_FID
	InitReportDFIDNm  uint = unix.FAN_REPORT_DFID_NAME
	InitReportTarget  uint = unix.FAN_REPORT_TARGET_FID
	initAlways        uint = unix.FAN_CLOEXEC | unix.FAN_NONBLOCK
	eventFlagsDefault uint = unix.O_RDONLY | unix.O_LARGEFILE | unix.O_CLOEXEC
)

// fanotify_mark flags.
const (
	MarkAdd        uint = unix.FAN_MARK_ADD
	MarkMount      uint = unix.FAN_MARK_MOUNT
	MarkFilesystem uint = unix.FAN_MARK_FILESYSTEM
	// MarkIgnoreSurv is FAN_MARK_IGNORE|FAN_MARK_IGNORED_SURV_MODIFY (6.0+):
	// an ignore mark that honours FAN_ONDIR and FAN_EVENT_ON_CHILD and is
	// not cleared by the first modify.
	MarkIgnoreSurv uint = unix.FAN_MARK_IGNORE_SURV
	// MarkIgnoredMaskSurv is the pre-6.0 ignored mask that survives modify.
	MarkIgnoredMaskSurv uint = unix.FAN_MARK_IGNORED_MASK | unix.FAN_MARK_IGNORED_SURV_MODIFY
)

// Group is one fanotify group. Its fd is non-blocking and wrapped in an
// os.File so that the runtime poller does the waiting and Close (or a read
// deadline) ends a blocked Read.
type Group struct {
	f  *os.File
	rc syscall.RawConn
	rd groupRead
}

// groupRead is one read's buffer and result, with the callbacks the
// poller runs made once per group: a closure per read escaped to the heap
// (three allocations a read, hundreds of thousands a second at full
// speed). So TryRead and Read are for one reading goroutine at a time.
type groupRead struct {
	buf   []byte
	n     int
	err   error
	again bool // EAGAIN: nothing queued
	try   func(fd uintptr)
	wait  func(fd uintptr) bool
}

// read is the read(2) both callbacks do, retried on EINTR.
func (r *groupRead) read(fd uintptr) {
	for {
		n, err := unix.Read(int(fd), r.buf)
		if err != unix.EINTR {
			r.n, r.err, r.again = n, err, err == unix.EAGAIN
			return
		}
	}
}

// waitRead is Read's callback: false on EAGAIN, so the poller waits and
// calls it again.
func (r *groupRead) waitRead(fd uintptr) bool {
	r.read(fd)
	return !r.again
}

// result takes the read's outcome and drops the buffer.
func (r *groupRead) result() (int, bool, error) {
	n, again, err := r.n, r.again, r.err
	r.buf, r.n, r.again, r.err = nil, 0, false, nil
	return n, again, err
}

// Init creates a fanotify group. FAN_CLOEXEC and FAN_NONBLOCK are always
// added; event fds (fd mode) are opened O_RDONLY|O_LARGEFILE|O_CLOEXEC.
func Init(flags uint) (*Group, error) {
	fd, err := unix.FanotifyInit(flags|initAlways, eventFlagsDefault)
	if err != nil {
		return nil, fmt.Errorf("fanotify_init(%#x): %w", flags, err)
	}
	f := os.NewFile(uintptr(fd), "fanotify")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("fanotify fd: %w", err)
	}
	g := &Group{f: f, rc: rc}
	g.rd.try, g.rd.wait = g.rd.read, g.rd.waitRead
	return g, nil
}

// Mark calls fanotify_mark on path.
func (g *Group) Mark(flags uint, mask uint64, path string) error {
	var err error
	cerr := g.rc.Control(func(fd uintptr) {
		err = unix.FanotifyMark(int(fd), flags, mask, unix.AT_FDCWD, path)
	})
	if cerr != nil {
		return fmt.Errorf("fanotify_mark %s: %w", path, cerr)
	}
	if err != nil {
		return fmt.Errorf("fanotify_mark(%#x, %#x) %s: %w", flags, mask, path, err)
	}
	return nil
}

// TryRead reads whatever is queued without waiting (one reading goroutine
// at a time, see groupRead). It returns 0, nil
// when the queue is empty. It ignores read deadlines, so it still works
// while draining after a deadline ended a blocked Read.
func (g *Group) TryRead(buf []byte) (int, error) {
	g.rd.buf = buf
	cerr := g.rc.Control(g.rd.try)
	n, again, err := g.rd.result()
	if cerr != nil {
		return 0, connErr(cerr)
	}
	if again {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("fanotify read: %w", err)
	}
	return n, nil
}

// Read waits until events are queued and reads them (one reading
// goroutine at a time, see groupRead). Close or an expired
// read deadline ends the wait with an error (os.ErrClosed,
// os.ErrDeadlineExceeded).
func (g *Group) Read(buf []byte) (int, error) {
	g.rd.buf = buf
	cerr := g.rc.Read(g.rd.wait)
	n, _, err := g.rd.result()
	if cerr != nil {
		return 0, connErr(cerr)
	}
	if err != nil {
		return 0, fmt.Errorf("fanotify read: %w", err)
	}
	return n, nil
}

// connErr maps the runtime poller's errors onto the ones os documents:
// an expired deadline stays os.ErrDeadlineExceeded, anything else means
// the group was closed.
func connErr(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("fanotify read: %w", err)
	}
	return fmt.Errorf("fanotify read: %w (%w)", os.ErrClosed, err)
}

// SetReadDeadline bounds a blocked Read; it is how a context ends one.
// Its one failure is a closed group, reported as os.ErrClosed.
func (g *Group) SetReadDeadline(t time.Time) error {
	if err := g.f.SetReadDeadline(t); err != nil {
		return fmt.Errorf("fanotify deadline: %w: %w", os.ErrClosed, err)
	}
	return nil
}

// Close closes the group; a blocked Read returns.
func (g *Group) Close() error {
	return g.f.Close()
}

// Features is what the running kernel's fanotify supports.
type Features struct {
	FID        bool // FAN_REPORT_DFID_NAME|FAN_REPORT_FID (5.9)
	TargetFID  bool // FAN_REPORT_TARGET_FID (5.17)
	Rename     bool // FAN_RENAME (5.17)
	MarkIgnore bool // FAN_MARK_IGNORE (6.0)
	PidFD      bool // FAN_REPORT_PIDFD (5.15)
}

// Probe finds out once, with throw-away groups and inode marks on path
// (which go away with the groups), which fanotify features work.
func Probe(path string) (Features, error) {
	var ft Features
	base := InitClassNotif | InitReportDFIDNm | InitReportFID
	g, err := Init(base | InitReportTarget)
	if err == nil {
		ft.FID, ft.TargetFID = true, true
	} else if errors.Is(err, unix.EINVAL) {
		g, err = Init(base)
		if err == nil {
			ft.FID = true
		}
	}
	if err != nil {
		if !errors.Is(err, unix.EINVAL) {
			// EPERM and friends are not a missing feature.
			return ft, fmt.Errorf("probe: %w", err)
		}
		g, err = Init(InitClassNotif)
		if err != nil {
			return ft, fmt.Errorf("probe: %w", err)
		}
	}
	defer g.Close()
	if ft.FID {
		ft.Rename = g.Mark(MarkAdd, FanRename|FanOnDir, path) == nil
	}
	ft.MarkIgnore = g.Mark(MarkAdd|MarkIgnoreSurv, FanOpen|FanOnDir, path) == nil
	if pg, err := Init(InitClassNotif | InitReportPidFD); err == nil {
		ft.PidFD = true
		pg.Close()
	}
	return ft, nil
}
