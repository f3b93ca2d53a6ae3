package kernel

import (
	"encoding/binary"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func procMsg(what uint32, data ...uint32) []byte {
	b := make([]byte, procEvData+4*len(data))
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint32(b[procEvWhat:], what)
	for i, v := range data {
		ne.PutUint32(b[procEvData+4*i:], v)
	}
	return b
}

func TestDecodeProcEvents(t *testing.T) {
	var buf []byte
	buf = append(buf, procMsg(ProcEventFork, 10, 10, 11, 11)...)
	buf = append(buf, procMsg(ProcEventFork, 10, 10, 12, 10)...) // a thread
	buf = append(buf, procMsg(ProcEventExec, 11, 11, 0, 0)...)
	buf = append(buf, procMsg(ProcEventUID, 11, 11, 1000, 0)...)
	buf = append(buf, procMsg(0x200, 11, 11, 0, 0)...) // comm: ignored
	got, err := DecodeProcEvents(buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []ProcEvent{
		{What: ProcEventFork, Pid: 11, Tgid: 11, ParentTgid: 10},
		{What: ProcEventExec, Pid: 11, Tgid: 11},
		{What: ProcEventUID, Pid: 11, Tgid: 11, Real: 1000, Effective: 0},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("event %d: got %+v want %+v", i, got[i], want[i])
		}
	}
	bad := procMsg(ProcEventFork, 1, 1, 2, 2)
	binary.NativeEndian.PutUint32(bad[0:], 9999)
	if _, err := DecodeProcEvents(bad, nil); err == nil {
		t.Fatal("bad length accepted")
	}
}

// TestProcConnectorLive sees a child's fork, exec and setuid-style uid.
func TestProcConnectorLive(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs CAP_NET_ADMIN")
	}
	p, err := OpenProcConnector(4 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	cmd := exec.Command("/bin/true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 4321, Gid: 4321}}
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	pid := int32(cmd.Process.Pid)
	var fork, execd, uid bool
	var evs []ProcEvent
	deadline := time.Now().Add(10 * time.Second)
	for !(fork && execd && uid) && time.Now().Before(deadline) {
		if err := p.Wait(time.Second); err != nil {
			t.Fatal(err)
		}
		evs, err = p.Read(evs[:0])
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.Tgid != pid {
				continue
			}
			switch e.What {
			case ProcEventFork:
				fork = e.ParentTgid == int32(os.Getpid())
			case ProcEventExec:
				execd = true
			case ProcEventUID:
				uid = uid || (e.Real == 4321 && e.Effective == 4321)
			}
		}
	}
	if !fork || !execd || !uid {
		t.Fatalf("fork %v exec %v uid %v", fork, execd, uid)
	}
}
