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
	// PidfsIno is the pidfs inode of the process (0 unknown): unique per
	// process instance for the boot, even for a pid reused within one
	// clock tick, where the start time cannot tell them apart.
	PidfsIno uint64

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
	Argv       string // the same bytes with their NUL separators (process.args)

	HasCreds bool
	Creds    Creds
	// NoEffective: only the real ids in Creds are known (they came from
	// the proc connector across an exec that may have been set-id).
	NoEffective bool

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
	pidfds     bool
	buf        []byte
	path       []byte
}

// NewReader returns a Reader for the proc tree at root. With pidfds, a
// Read pins the process with a pidfd (the event's, or one it opens),
// takes the creds from PIDFD_GET_INFO, which is cheaper than parsing
// status and still answers for a zombie, and keeps the /proc data only if
// the pidfd's process is still alive after reading it. pidfds make sense
// only for the real /proc, not a fixture tree.
func NewReader(root string, cmdlineMax int, pidfds bool) *Reader {
	n := 4096
	if cmdlineMax > n {
		n = cmdlineMax
	}
	return &Reader{root: strings.TrimRight(root, "/"), cmdlineMax: cmdlineMax, pidfds: pidfds, buf: make([]byte, n)}
}

func (r *Reader) dir(pid int32) string {
	r.path = append(r.path[:0], r.root...)
	r.path = append(r.path, '/')
	r.path = strconv.AppendInt(r.path, int64(pid), 10)
	return string(r.path)
}

func gone(pid int32, err error) error {
	if kernel.IsGone(err) {
		return fmt.Errorf("pid %d: %w: %w", pid, ErrGone, err)
	}
	return fmt.Errorf("pid %d: %w", pid, err)
}

// Field groups a Read can be limited to.
const (
	ReadCreds = 1 << iota
	ReadStat
	ReadExe
	ReadCmdline
	ReadLogin  // loginuid and sessionid
	ReadCgroup // and with it the container
	ReadAll    = ReadCreds | ReadStat | ReadExe | ReadCmdline | ReadLogin | ReadCgroup
)

// Read takes a snapshot of pid's groups in what (ReadAll); pidfd is the
// event's pidfd or -1. The
// fields needed to attribute an event (creds, executable, start) are read
// first, because a short-lived process may vanish mid-read. When the
// process is gone before any of that, Read returns an error wrapping
// ErrGone. Later files may fail on their own (a zombie has no exe); those
// leave their Has* false and their errors are returned in partial.
func (r *Reader) Read(pid int32, pidfd int, what int, info *Info) (partial []error, err error) {
	return r.read(pid, pidfd, 0, what, info)
}

// read is Read for a caller that has already fstat'ed pidfd: ino is its
// pidfs inode (0 unknown), which Read would otherwise fstat again.
func (r *Reader) read(pid int32, pidfd int, ino uint64, what int, info *Info) (partial []error, err error) {
	*info = Info{Pid: pid}
	if pid <= 0 {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrGone)
	}
	if r.pidfds && pidfd < 0 {
		fd, err := kernel.PidfdOpen(int(pid))
		switch {
		case err == nil:
			defer kernel.ClosePidfd(fd)
			pidfd = fd
		case kernel.IsGone(err):
			return nil, gone(pid, err)
		}
	}
	if pidfd >= 0 && r.pidfds {
		if ino != 0 {
			info.PidfsIno = ino
		} else if v, err := kernel.PidfdInode(pidfd); err == nil {
			info.PidfsIno = v
		}
	}
	if pidfd >= 0 && r.pidfds && what&ReadCreds != 0 {
		pi, err := kernel.PidfdGetInfo(pidfd, kernel.PidfdInfoPid|kernel.PidfdInfoCreds)
		if err != nil && kernel.IsGone(err) {
			return nil, gone(pid, err)
		}
		// Any other error: a kernel before 6.13 without the ioctl; status
		// has the creds then.
		if err == nil && pi.Mask&kernel.PidfdInfoCreds != 0 {
			info.HasCreds = true
			info.Creds = Creds{RUID: pi.RUID, EUID: pi.EUID, RGID: pi.RGID, EGID: pi.EGID}
		}
		if err == nil && pi.Mask&kernel.PidfdInfoPid != 0 {
			info.HasPPid, info.PPid = true, int32(pi.PPid)
		}
	}
	creds, ppid := *info, info.HasPPid

	d, err := kernel.OpenProcDir(r.dir(pid))
	if err != nil {
		if info.HasCreds {
			return []error{err}, nil
		}
		return nil, gone(pid, err)
	}
	defer d.Close()

	if what&ReadExe == 0 {
	} else if n, err := d.Readlink("exe", r.buf); err != nil {
		partial = append(partial, err)
	} else {
		// The kernel marks an unlinked executable with this suffix; the
		// path it had is the useful answer and the contract never prints
		// "(deleted)".
		info.HasExe, info.Exe = true, strings.TrimSuffix(string(r.buf[:n]), " (deleted)")
	}

	if what&ReadStat == 0 {
	} else if n, _, err := d.ReadFile("stat", r.buf); err != nil {
		if !info.HasCreds {
			return nil, gone(pid, err)
		}
		partial = append(partial, err)
	} else if st, err := ParseStat(r.buf[:n]); err != nil {
		partial = append(partial, fmt.Errorf("pid %d: %w", pid, err))
	} else {
		info.HasComm, info.Comm = true, st.Comm
		info.HasPPid, info.PPid = true, st.PPid
		info.HasStart, info.StartTicks = true, st.StartTicks
	}

	if !info.HasCreds && what&ReadCreds != 0 {
		if n, _, err := d.ReadFile("status", r.buf); err != nil {
			partial = append(partial, err)
		} else if c, err := ParseStatus(r.buf[:n]); err != nil {
			partial = append(partial, fmt.Errorf("pid %d: %w", pid, err))
		} else {
			info.HasCreds, info.Creds = true, c
		}
	}

	if what&ReadCmdline == 0 {
	} else if n, _, err := d.ReadFile("cmdline", r.buf[:r.cmdlineMax]); err != nil {
		partial = append(partial, err)
	} else if n > 0 {
		// Empty once the process has dropped its memory (exiting, a
		// zombie): that is not its command line.
		info.HasCmdline, info.Cmdline, info.Argv = true, Cmdline(r.buf[:n]), Argv(r.buf[:n])
	}

	if what&ReadLogin == 0 {
	} else if n, _, err := d.ReadFile("loginuid", r.buf[:32]); err != nil {
		partial = append(partial, err)
	} else if v, err := ParseU32(r.buf[:n]); err != nil {
		partial = append(partial, fmt.Errorf("pid %d loginuid: %w", pid, err))
	} else {
		info.HasLoginUID, info.LoginUID = true, v
	}
	if what&ReadLogin == 0 {
	} else if n, _, err := d.ReadFile("sessionid", r.buf[:32]); err != nil {
		partial = append(partial, err)
	} else if v, err := ParseU32(r.buf[:n]); err != nil {
		partial = append(partial, fmt.Errorf("pid %d sessionid: %w", pid, err))
	} else {
		info.HasSession, info.Session = true, v
	}

	if what&ReadCgroup == 0 {
	} else if n, _, err := d.ReadFile("cgroup", r.buf); err != nil {
		partial = append(partial, err)
	} else if p, err := ParseCgroup(r.buf[:n]); err != nil {
		partial = append(partial, fmt.Errorf("pid %d: %w", pid, err))
	} else {
		info.HasCgroup, info.CgroupPath = true, p
	}

	if pidfd >= 0 && r.pidfds {
		// Alive after the reads: /proc/PID was this process all along.
		// Otherwise only what came through the pidfd is certain.
		if alive, err := kernel.PidfdAlive(pidfd); err == nil && !alive {
			ino := info.PidfsIno
			*info = creds
			info.HasPPid, info.PidfsIno = ppid, ino
			return append(partial, fmt.Errorf("pid %d: reaped during the read", pid)), nil
		}
	}
	if !info.HasCreds && !info.HasStart && !info.HasExe {
		return partial, fmt.Errorf("pid %d: %w", pid, ErrGone)
	}
	return partial, nil
}
