package kernel

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestDecodePidfdInfo(t *testing.T) {
	b := make([]byte, pidfdInfoSizeVer0)
	ne := binary.NativeEndian
	ne.PutUint64(b[0:], PidfdInfoPid|PidfdInfoCreds)
	ne.PutUint64(b[8:], 77)
	for off, v := range map[int]uint32{16: 10, 20: 10, 24: 1, 28: 1000, 32: 100, 36: 0, 40: 101} {
		ne.PutUint32(b[off:], v)
	}
	ne.PutUint32(b[60:], uint32(0xffffffff))
	got, err := DecodePidfdInfo(b)
	want := PidfdInfo{Mask: 3, CgroupID: 77, Pid: 10, Tgid: 10, PPid: 1, RUID: 1000, RGID: 100, EUID: 0, EGID: 101, ExitCode: -1}
	if err != nil || got != want {
		t.Fatalf("got %+v, %v; want %+v", got, err, want)
	}
	if _, err := DecodePidfdInfo(b[:63]); err == nil {
		t.Fatal("short buffer accepted")
	}
}

// TestPidfdLifecycle records what PIDFD_GET_INFO answers for a live
// process, a zombie and a reaped one on the running kernel. Enrichment
// relies only on the live and zombie answers carrying creds.
func TestPidfdLifecycle(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to set the child's uid")
	}
	cmd := exec.Command("/bin/sh", "-c", "read x")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 4321, Gid: 4322}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fd, err := PidfdOpen(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	all := PidfdInfoPid | PidfdInfoCreds | PidfdInfoCgroupID
	live, err := PidfdGetInfo(fd, all)
	if err != nil {
		t.Fatalf("live: %v", err)
	}
	if live.Mask&PidfdInfoCreds == 0 || live.RUID != 4321 || live.RGID != 4322 || int(live.Pid) != cmd.Process.Pid {
		t.Fatalf("live: %+v", live)
	}
	t.Logf("live:   %+v", live)
	if ok, err := PidfdAlive(fd); !ok || err != nil {
		t.Fatalf("alive: %v %v", ok, err)
	}
	ino, err := PidfdInode(fd)
	if err != nil || ino == 0 {
		t.Fatalf("inode %d %v", ino, err)
	}

	stdin.Close()
	// A pidfd polls readable once the process has exited: a zombie now,
	// since nothing has waited for it.
	if _, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 10000); err != nil {
		t.Fatal(err)
	}
	zombie, err := PidfdGetInfo(fd, all|PidfdInfoExit)
	t.Logf("zombie: %+v err=%v", zombie, err)
	if err != nil || zombie.Mask&PidfdInfoCreds == 0 || zombie.RUID != 4321 {
		t.Fatalf("zombie lost creds: %+v %v", zombie, err)
	}

	cmd.Wait()
	reaped, err := PidfdGetInfo(fd, all)
	t.Logf("reaped: %+v err=%v (ESRCH=%v)", reaped, err, errors.Is(err, unix.ESRCH))
	reapedExit, err2 := PidfdGetInfo(fd, all|PidfdInfoExit)
	t.Logf("reaped with PIDFD_INFO_EXIT: %+v err=%v", reapedExit, err2)
	if err == nil && reaped.Mask&PidfdInfoCreds != 0 {
		t.Logf("this kernel keeps creds after reaping")
	}
	if ok, err := PidfdAlive(fd); ok || err != nil {
		t.Fatalf("alive after reap: %v %v", ok, err)
	}
	if ino2, _ := PidfdInode(fd); ino2 != ino {
		t.Fatalf("inode changed %d → %d", ino, ino2)
	}
}
