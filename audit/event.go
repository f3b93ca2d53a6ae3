package audit

import (
	"os"
	"time"

	"github.com/fanaudit/fanaudit/internal/record"
)

// Event is one captured action. A kernel event whose mask merges several
// actions is split into one Event per action, in record.Action order.
//
// Everything in an Event is copied out of the read buffer. An Event may hold
// kernel resources (an open file for hashing, a pidfd); whoever receives it
// must call Release exactly once.
type Event struct {
	Time    time.Time
	Action  record.Action
	Mask    uint64 // the kernel mask this action was split from
	Pid     int32  // thread group id from the metadata; 0 for overflow
	Path    string // absolute, escaped where not valid UTF-8
	OldPath string // rename: the old path
	Dir     bool   // FAN_ONDIR was set

	// Lost is set on ActionEventsLost; LostReason says why.
	Lost       uint64
	HasLost    bool
	LostReason string

	// PidFD is a pidfd for Pid when the group reports pidfds, else -1.
	PidFD int

	// File is the file opened read-only by handle on close_write when
	// Options.OpenForHash is set, so hashing reads the very inode the event
	// was about even after a rename or unlink. Closed by Release.
	File *os.File

	fid *fileID // object identity for Stat and Open; nil if unknown
}

// Release closes the kernel resources the event holds. It is safe to call
// on an event that holds none, and a second call is a no-op.
func (e *Event) Release() {
	e.release()
}

// Observer sees every event in the reader goroutine, before the event is
// queued. It exists so that enrichment can read /proc while a short-lived
// process is still alive. It must be fast and must not retain ev.
type Observer interface {
	Observe(ev *Event)
}
