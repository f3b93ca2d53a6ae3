package proc

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/fanaudit/fanaudit/internal/kernel"
)

// ErrGone says the process no longer exists (or never did).
var ErrGone = errors.New("process gone")

// Info is one snapshot of a process. Has* false means unknown; nothing is
// guessed.
type Info struct {
	Pid int32

	HasComm    bool
	Comm       string
	HasPPid    bool
	PPid       int32
	HasStart   bool
	StartTicks uint64

	HasExe bool
	Exe    string

	HasCmdline bool
	Cmdline    string // capped at the reader's CmdlineMax bytes

	HasCreds bool
	Creds    Creds

	HasLoginUID bool // the file was read; LoginUID may still be unset
	LoginUID    uint32
	HasSession  bool
	Session     uint32

	HasCgroup  bool
	CgroupPath string
}

// Reader reads /proc/PID under Root. It reuses one buffer, so one Reader
// belongs to one goroutine.
type Reader struct {
	root       string
	cmdlineMax int
	buf        []byte
	path       []byte
}

// NewReader returns a Reader for the proc tree at root (normally "/proc").
func NewReader(root string, cmdlineMax int) *Reader {
	n := 4096
	if cmdlineMax > n {
		n = cmdlineMax
	}
	return &Reader{root: strings.TrimRight(root, "/"), cmdlineMax: cmdlineMax, buf: make([]byte, n)}
}

func (r *Reader) file(pid int32, name string) string {
	r.path = append(r.path[:0], r.root...)
	r.path = append(r.path, '/')
	r.path = strconv.AppendInt(r.path, int64(pid), 10)
	r.path = append(r.path, '/')
	r.path = append(r.path, name...)
	return string(r.path)
}

func (r *Reader) read(pid int32, name string, max int) ([]byte, bool, error) {
	if max > len(r.buf) {
		max = len(r.buf)
	}
	n, trunc, err := kernel.ReadFileInto(r.file(pid, name), r.buf[:max])
	if err != nil {
		if kernel.IsGone(err) {
			return nil, false, fmt.Errorf("%w: %w", ErrGone, err)
		}
		return nil, false, err
	}
	return r.buf[:n], trunc, nil
}

// Read takes a snapshot of pid. stat comes first: if it is gone, the whole
// process is gone and Read returns an error wrapping ErrGone. Later files
// may fail on their own (a zombie has no exe, a kernel thread no cmdline
// content); those leave their Has* false and are listed in partial, the
// first error per failed file, so the caller can log them.
func (r *Reader) Read(pid int32, info *Info) (partial []error, err error) {
	*info = Info{Pid: pid}
	if pid <= 0 {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrGone)
	}
	b, _, err := r.read(pid, "stat", len(r.buf))
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	st, err := ParseStat(b)
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	info.HasComm, info.Comm = true, st.Comm
	info.HasPPid, info.PPid = true, st.PPid
	info.HasStart, info.StartTicks = true, st.StartTicks

	if b, _, err := r.read(pid, "status", len(r.buf)); err != nil {
		partial = append(partial, err)
	} else if c, err := ParseStatus(b); err != nil {
		partial = append(partial, fmt.Errorf("pid %d: %w", pid, err))
	} else {
		info.HasCreds, info.Creds = true, c
	}

	if n, err := kernel.ReadlinkInto(r.file(pid, "exe"), r.buf); err != nil {
		partial = append(partial, err)
	} else {
		// The kernel marks an unlinked executable with this suffix; the
		// path it had is the useful answer and the contract never prints
		// "(deleted)".
		info.HasExe, info.Exe = true, strings.TrimSuffix(string(r.buf[:n]), " (deleted)")
	}

	if b, _, err := r.read(pid, "cmdline", r.cmdlineMax); err != nil {
		partial = append(partial, err)
	} else {
		info.HasCmdline, info.Cmdline = true, Cmdline(b)
	}

	if b, _, err := r.read(pid, "loginuid", 32); err != nil {
		partial = append(partial, err)
	} else if v, err := ParseU32(b); err != nil {
		partial = append(partial, fmt.Errorf("pid %d loginuid: %w", pid, err))
	} else {
		info.HasLoginUID, info.LoginUID = true, v
	}
	if b, _, err := r.read(pid, "sessionid", 32); err != nil {
		partial = append(partial, err)
	} else if v, err := ParseU32(b); err != nil {
		partial = append(partial, fmt.Errorf("pid %d sessionid: %w", pid, err))
	} else {
		info.HasSession, info.Session = true, v
	}

	if b, _, err := r.read(pid, "cgroup", len(r.buf)); err != nil {
		partial = append(partial, err)
	} else if p, err := ParseCgroup(b); err != nil {
		partial = append(partial, fmt.Errorf("pid %d: %w", pid, err))
	} else {
		info.HasCgroup, info.CgroupPath = true, p
	}
	return partial, nil
}

// StartTicks reads only the start time of pid.
func (r *Reader) StartTicks(pid int32) (uint64, error) {
	b, _, err := r.read(pid, "stat", len(r.buf))
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	st, err := ParseStat(b)
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	return st.StartTicks, nil
}
