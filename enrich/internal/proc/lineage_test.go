package proc

import (
	"testing"

	"github.com/fanaudit/fanaudit/enrich/internal/proctest"
	"github.com/fanaudit/fanaudit/internal/kernel"
)

func testLineage(t *testing.T) *Lineage {
	root := t.TempDir()
	proctest.Write(t, root, proctest.Fixture{Pid: 10, Exe: "/bin/sh", Start: 1, UID: 1000, EUID: 1000, GID: 100})
	return &Lineage{reader: NewReader(root, 64, false), m: map[int32]*lineEntry{}, ring: make([]*lineEntry, 4)}
}

func TestLineage(t *testing.T) {
	l := testLineage(t)
	// 10 (read from /proc) forks 11; 11 execs and is gone before the
	// re-read, so its effective ids are certain only if that exec was not
	// of a set-id program.
	l.apply(&kernel.ProcEvent{What: kernel.ProcEventFork, Pid: 11, Tgid: 11, ParentTgid: 10})
	if li := l.Info(11, "", false); !li.HasCreds || li.NoEffective || li.Creds.RUID != 1000 || li.Creds.RGID != 100 || li.Exe != "/bin/sh" {
		t.Fatalf("after fork: %+v", li)
	}
	l.apply(&kernel.ProcEvent{What: kernel.ProcEventExec, Pid: 11, Tgid: 11})
	if li := l.Info(11, "", false); !li.HasCreds || !li.NoEffective || li.Exe != "" {
		t.Fatalf("after exec, effective ids and exe must be unknown: %+v", li)
	}
	if l.Info(11, "/bin/plain", false).NoEffective {
		t.Fatal("exec of a plain program: effective ids still certain")
	}
	if !l.Info(11, "/usr/bin/passwd", true).NoEffective {
		t.Fatal("exec of a set-id program: effective ids uncertain")
	}
	// setuid() makes them certain again.
	l.apply(&kernel.ProcEvent{What: kernel.ProcEventUID, Pid: 11, Tgid: 11, Real: 0, Effective: 0})
	l.apply(&kernel.ProcEvent{What: kernel.ProcEventGID, Pid: 11, Tgid: 11, Real: 0, Effective: 0})
	if li := l.Info(11, "", false); !li.HasCreds || li.NoEffective || li.Creds.RUID != 0 {
		t.Fatalf("after setuid: %+v", li)
	}
	// A fork by a parent nobody knows (gone from /proc) must not leave
	// the previous owner's ids on a reused pid.
	l.apply(&kernel.ProcEvent{What: kernel.ProcEventFork, Pid: 11, Tgid: 11, ParentTgid: 999})
	if l.Info(11, "", false).HasCreds {
		t.Fatal("reused pid kept old ids")
	}
}

func TestLineageBound(t *testing.T) {
	l := testLineage(t)
	for pid := int32(20); pid < 30; pid++ {
		l.apply(&kernel.ProcEvent{What: kernel.ProcEventFork, Pid: pid, Tgid: pid, ParentTgid: 10})
	}
	if len(l.m) > len(l.ring) {
		t.Fatalf("%d entries, bound %d", len(l.m), len(l.ring))
	}
	if !l.Info(29, "", false).HasCreds {
		t.Fatal("newest entry evicted")
	}
}
