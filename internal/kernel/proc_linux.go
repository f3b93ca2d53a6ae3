package kernel

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ProcDir is an open /proc/PID directory. Reading its files relative to
// the directory fd skips the path walk for each file, which is most of the
// cost of a small /proc read.
type ProcDir struct {
	fd int
}

// OpenProcDir opens a /proc/PID directory (or a fixture copy of one).
// ENOENT means the process is gone.
func OpenProcDir(path string) (ProcDir, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return ProcDir{fd: -1}, fmt.Errorf("open %s: %w", path, err)
	}
	return ProcDir{fd: fd}, nil
}

// Close closes the directory.
func (d ProcDir) Close() error {
	if d.fd < 0 {
		return nil
	}
	if err := unix.Close(d.fd); err != nil {
		return fmt.Errorf("close proc dir: %w", err)
	}
	return nil
}

// ReadFile reads up to len(buf) bytes of the file name in d. A /proc
// seq_file fills as much of the buffer as it can per read, so a short
// read is the whole file; only a full buffer needs one more read to tell
// a cap from an exact fit. truncated reports the cap.
func (d ProcDir) ReadFile(name string, buf []byte) (n int, truncated bool, err error) {
	fd, err := unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return 0, false, fmt.Errorf("open %s: %w", name, err)
	}
	defer unix.Close(fd)
	for {
		n, err = unix.Read(fd, buf)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return 0, false, fmt.Errorf("read %s: %w", name, err)
	}
	if n < len(buf) {
		return n, false, nil
	}
	var one [1]byte
	m, err := unix.Read(fd, one[:])
	if err != nil && !errors.Is(err, unix.EINTR) {
		return n, false, fmt.Errorf("read %s: %w", name, err)
	}
	return n, m > 0, nil
}

// Readlink reads the symlink name in d (e.g. "exe").
func (d ProcDir) Readlink(name string, buf []byte) (int, error) {
	n, err := unix.Readlinkat(d.fd, name, buf)
	if err != nil {
		return 0, fmt.Errorf("readlink %s: %w", name, err)
	}
	return n, nil
}

// ClosePidfd closes a pidfd this package opened.
func ClosePidfd(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

// IsGone reports whether err says that a process no longer exists: ENOENT
// from /proc, ESRCH from pidfd calls.
func IsGone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}
