package kernel

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ReadFileInto reads up to len(buf) bytes of a small file (a /proc entry)
// with three raw syscalls and no allocation beyond the path conversion.
// It reports whether the file had more bytes than buf holds.
func ReadFileInto(path string, buf []byte) (n int, truncated bool, err error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return 0, false, fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return n, false, fmt.Errorf("read %s: %w", path, err)
		}
		if m == 0 {
			return n, false, nil
		}
		n += m
	}
	// Buffer full: one more byte tells a cap from an exact fit.
	var one [1]byte
	m, err := unix.Read(fd, one[:])
	if err != nil && !errors.Is(err, unix.EINTR) {
		return n, false, fmt.Errorf("read %s: %w", path, err)
	}
	return n, m > 0, nil
}

// ReadlinkInto reads a symlink (e.g. /proc/PID/exe) into buf.
func ReadlinkInto(path string, buf []byte) (int, error) {
	n, err := unix.Readlink(path, buf)
	if err != nil {
		return 0, fmt.Errorf("readlink %s: %w", path, err)
	}
	return n, nil
}

// IsGone reports whether err says that a process no longer exists: ENOENT
// from /proc, ESRCH from pidfd calls.
func IsGone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}
