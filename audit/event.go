package audit

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/fanaudit/fanaudit/internal/kernel"
)

// Event is one captured action. A kernel event whose mask merges several
// actions is split into one Event per action, in Action order.
//
// Everything in an Event is copied out of the read buffer. An Event may hold
// kernel resources (an open file for hashing, a pidfd); whoever receives it
// must call Release exactly once.
type Event struct {
	Time    time.Time
	Action  Action
	Mask    uint64 // the kernel mask this action was split from
	Pid     int32  // thread group id from the metadata; 0 for overflow
	Path    string // absolute, escaped where not valid UTF-8
	OldPath string // rename: the old path
	Dir     bool   // FAN_ONDIR was set

	// Scanned marks a create the capture synthesized: the entry was found
	// in a directory when subtree scope put its mark there, made before
	// the mark, so the kernel never reported it. Pid is 0 (unknown).
	Scanned bool

	// Lost is set on ActionEventsLost; LostReason says why.
	Lost       uint64
	HasLost    bool
	LostReason string

	// PidFD is a pidfd for Pid when the group reports pidfds, else -1.
	// When one kernel event splits into several Events, only the first
	// one emitted carries the pidfd; the others have -1.
	PidFD int

	// File is the file opened read-only by handle on close_write when
	// Options.OpenForHash is set, so hashing reads the very inode the event
	// was about even after a rename or unlink. Closed by Release.
	File *os.File

	fid *fileID      // object identity for Stat and Open; nil if unknown
	st  *kernel.Stat // fd mode: fstat taken when the event was read

	// ownsPidFD is set when the capture installed PidFD. An Event built
	// elsewhere (a test literal, whose zero PidFD is stdin) never gets
	// its PidFD closed by Release.
	ownsPidFD bool

	// observeOnly marks an exec event that is shown to the Observer but
	// not reported (unwanted, or outside the watched paths).
	observeOnly bool
}

// fileID names the event's object by file handle on its filesystem's
// mount fd, so Stat works after the name is gone or reused.
type fileID struct {
	mount  *os.File
	htype  int32
	handle []byte // a slice of the batch's arena; never modified
	// mem is the batch memory this fileID lives in (nil for a copy of
	// its own): Recycle gives it back through it.
	mem *batchMem

	// The actions split from one kernel event share their fileID, and the
	// first Stat serves them all: one open_by_handle_at and fstat per
	// kernel event instead of one per action. This makes Stat unsafe for
	// concurrent use on events split from the same kernel event; the
	// enricher converts a batch in one goroutine.
	statDone bool
	st       kernel.Stat
	statErr  error
}

func (f *fileID) stat() (kernel.Stat, error) {
	if !f.statDone {
		f.st, f.statErr = kernel.StatHandle(f.mount, f.htype, f.handle)
		f.statDone = true
	}
	return f.st, f.statErr
}

// ErrGone means the event's file no longer exists (its handle is stale),
// as after the unlink that usually follows in a busy directory. It is a
// sentinel, not a formatted error, because it is common on the hot path.
var ErrGone = errors.New("file is gone")

// ErrNoIdentity means the event carries neither a file handle nor an open
// file, e.g. events_lost, or a fd-mode event whose fd is already closed.
var ErrNoIdentity = errors.New("event has no file identity")

// Release closes the kernel resources the event holds. It is safe to call
// on an event that holds none, and a second call is a no-op.
func (e *Event) Release() {
	e.release()
}

func (e *Event) release() {
	if e.File != nil {
		e.File.Close()
		e.File = nil
	}
	if e.ownsPidFD && e.PidFD >= 0 {
		kernel.CloseFD(int32(e.PidFD))
		e.PidFD = -1
		e.ownsPidFD = false
	}
}

// FileStat is what capture knows of an event's object.
type FileStat struct {
	Ino   uint64
	Mode  uint32
	Nlink uint64
	Size  int64
	UID   uint32
	GID   uint32
	Type  string // "file", "dir", "symlink", …; "" when unknown
}

// Stat returns the event's object's stat: fstat of File when held, else
// the stat capture took when it read the event (fd mode), else
// open_by_handle_at(O_PATH) on the filesystem's mount fd and fstat, once
// per kernel event. ErrGone means the object no longer exists.
func (e *Event) Stat() (FileStat, error) {
	var st kernel.Stat
	var err error
	switch {
	case e.File != nil:
		st, err = kernel.FileStat(e.File)
	case e.st != nil:
		st = *e.st
	case e.fid != nil:
		st, err = e.fid.stat()
	default:
		return FileStat{}, ErrNoIdentity
	}
	if err != nil {
		if kernel.IsStale(err) {
			return FileStat{}, ErrGone
		}
		return FileStat{}, fmt.Errorf("stat %s: %w", e.Path, err)
	}
	return FileStat{Ino: st.Ino, Mode: st.Mode, Nlink: st.Nlink, Size: st.Size, UID: st.UID, GID: st.GID, Type: fileType(st.Mode)}, nil
}

func fileType(mode uint32) string {
	switch mode & kernel.ModeType {
	case kernel.ModeReg:
		return "file"
	case kernel.ModeDir:
		return "dir"
	case kernel.ModeLnk:
		return "symlink"
	case kernel.ModeChr:
		return "char_device"
	case kernel.ModeBlk:
		return "block_device"
	case kernel.ModeFifo:
		return "fifo"
	case kernel.ModeSock:
		return "socket"
	}
	return ""
}

// Observer sees every event in the reader goroutine, before the event is
// queued, and also the exec events on the marked filesystems that are not
// reported (exec not wanted, or outside the watched paths), because those
// are what names the executable of a process gone before its other events
// are read. It exists so that enrichment can read /proc while a short-lived
// process is still alive. It must be fast and must not retain ev.
type Observer interface {
	Observe(ev *Event)
}
