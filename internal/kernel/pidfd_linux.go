package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// PIDFD_GET_INFO request mask bits (include/uapi/linux/pidfd.h).
const (
	PidfdInfoPid      uint64 = 1 << 0
	PidfdInfoCreds    uint64 = 1 << 1
	PidfdInfoCgroupID uint64 = 1 << 2
	PidfdInfoExit     uint64 = 1 << 3
)

// pidfdInfoSizeVer0 is PIDFD_INFO_SIZE_VER0. The ioctl is extensible: the
// kernel reads the size from the request number, so asking with the first
// version's size works on every kernel that has the ioctl (6.13+) and we
// never depend on fields a newer kernel appended.
const pidfdInfoSizeVer0 = 64

// pidfdGetInfoReq is _IOWR(PIDFS_IOCTL_MAGIC=0xFF, 11, 64 bytes).
const pidfdGetInfoReq = 3<<30 | pidfdInfoSizeVer0<<16 | 0xFF<<8 | 11

// Offsets in struct pidfd_info (version 0, 64 bytes). Mirrors struct pidfd_info.
const (
	pidfdOffMask     = 0
	pidfdOffCgroupID = 8
	pidfdOffPid      = 16
	pidfdOffTgid     = 20
	pidfdOffPPid     = 24
	pidfdOffRUID     = 28
	pidfdOffRGID     = 32
	pidfdOffEUID     = 36
	pidfdOffEGID     = 40
	pidfdOffExitCode = 60
)

// PidfdInfo is the decoded answer of PIDFD_GET_INFO. Mask says which groups
// the kernel filled in; fields outside Mask are zero and mean "unknown".
type PidfdInfo struct {
	Mask     uint64
	CgroupID uint64
	Pid      uint32
	Tgid     uint32
	PPid     uint32
	RUID     uint32
	RGID     uint32
	EUID     uint32
	EGID     uint32
	ExitCode int32
}

// DecodePidfdInfo decodes a version-0 struct pidfd_info.
func DecodePidfdInfo(b []byte) (PidfdInfo, error) {
	if len(b) < pidfdInfoSizeVer0 {
		return PidfdInfo{}, fmt.Errorf("pidfd_info: %d bytes, need %d", len(b), pidfdInfoSizeVer0)
	}
	ne := binary.NativeEndian
	return PidfdInfo{
		Mask:     ne.Uint64(b[pidfdOffMask:]),
		CgroupID: ne.Uint64(b[pidfdOffCgroupID:]),
		Pid:      ne.Uint32(b[pidfdOffPid:]),
		Tgid:     ne.Uint32(b[pidfdOffTgid:]),
		PPid:     ne.Uint32(b[pidfdOffPPid:]),
		RUID:     ne.Uint32(b[pidfdOffRUID:]),
		RGID:     ne.Uint32(b[pidfdOffRGID:]),
		EUID:     ne.Uint32(b[pidfdOffEUID:]),
		EGID:     ne.Uint32(b[pidfdOffEGID:]),
		ExitCode: int32(ne.Uint32(b[pidfdOffExitCode:])),
	}, nil
}

// PidfdOpen returns a pidfd for pid (close-on-exec). ESRCH means the process
// is gone.
func PidfdOpen(pid int) (int, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	return fd, nil
}

// PidfdAlive sends signal 0 through the pidfd. It is the race-free way to
// confirm that data read from /proc/PID belongs to the pidfd's process: if
// the process is still alive after the read, the pid cannot have been
// reused in between. A zombie counts as alive here (the kernel accepts
// signals to zombies); callers that need the executable must still read it.
func PidfdAlive(fd int) (bool, error) {
	err := unix.PidfdSendSignal(fd, 0, nil, 0)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ESRCH):
		return false, nil
	default:
		return false, fmt.Errorf("pidfd_send_signal 0: %w", err)
	}
}

// PidfdGetInfo asks the kernel for the groups in mask. ESRCH means the
// process has been reaped and the kernel kept nothing the mask asked for.
func PidfdGetInfo(fd int, mask uint64) (PidfdInfo, error) {
	var buf [pidfdInfoSizeVer0]byte
	binary.NativeEndian.PutUint64(buf[pidfdOffMask:], mask)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(pidfdGetInfoReq), uintptr(unsafe.Pointer(&buf[0])))
	if errno != 0 {
		return PidfdInfo{}, fmt.Errorf("PIDFD_GET_INFO: %w", errno)
	}
	return DecodePidfdInfo(buf[:])
}

// PidfdInode returns the pidfs inode number of a pidfd. On 64-bit kernels
// with pidfs (6.9+) it identifies one process instance for the whole boot,
// so it distinguishes a reused pid.
func PidfdInode(fd int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, fmt.Errorf("fstat pidfd: %w", err)
	}
	return st.Ino, nil
}
