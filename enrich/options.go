// Package enrich owns "who did it": it turns each captured audit.Event into
// a record.Record with process, user, group, login, container, host and
// file context, and optionally the file's sha256.
//
// Where the data comes from, and why:
//
//   - Process identity is read from /proc as early as possible: Observe runs
//     in the capture's reader goroutine, before the event is queued. The
//     read pins the process with a pidfd (the event's own with
//     FAN_REPORT_PIDFD, else pidfd_open), takes the creds from
//     PIDFD_GET_INFO (cheaper than status, and still there for a zombie)
//     and keeps the /proc data only if that pidfd's process is still alive
//     afterwards. On this 6.18 kernel PIDFD_GET_INFO answers creds for a
//     live or zombie process; after reaping only cgroup id and exit code.
//   - Exec events (FAN_OPEN_EXEC) carry the new executable's path; it is
//     kept for the pid even if the process is gone by the next event. The
//     ELF loader's own exec event (ld-linux*, ld-musl*) is ignored.
//   - The kernel's proc connector (netlink cn_proc) reports every fork,
//     exec and uid/gid change, queued at the moment they happen. From it
//     the enricher knows the real uid and gid of a process that has already
//     exited and been reaped when its first event is read: they are the
//     ones it inherited at fork or set since. The effective ids are taken
//     from it only where no set-id exec can have changed them silently
//     (otherwise fanaudit.missing has user.effective.id). Its fork and exec
//     events also invalidate a cached pid at once: the queue is applied
//     once per capture read batch, before the batch's first lookup. At
//     each exec event the lineage reads the new image's /proc (command
//     line, comm, start, parent, login, cgroup) right away, while even a
//     sub-millisecond process usually still exists; a later read that
//     finds the process gone or exiting is completed from it, unless the
//     start times differ.
//   - The process cache is keyed by (pid, start time, pidfs inode): a
//     reused pid or an exec makes a new identity, while events still in
//     flight keep the one they happened under (each identity is valid from
//     the event time it was first seen). It is bounded (LRU,
//     Options.CacheSize pids), and an entry is trusted for Options.CacheTTL
//     before /proc is read again. Without the proc connector and without
//     exec events for the program's filesystem, an exec or a pid reuse can
//     go unnoticed for up to CacheTTL.
//   - A process gone before anything could be read keeps what is known
//     from its earlier events (the cached identity of that pid). Without
//     pidfds an event read after its process died and its pid was reused
//     can in principle be given the new process; with FAN_REPORT_PIDFD the
//     pidfs inode rules that out.
//   - Records: process.command_line is /proc/PID/cmdline with NULs turned
//     into spaces, cut at Options.CmdlineMax bytes (default 4096).
//     process.entity_id is hex(sha256(machine-id "|" boot-id "/" pid "/"
//     start ticks ["/" pidfs inode]))[:32]; it differs for a reused pid
//     (the pidfs inode, known whenever /proc is read through a pidfd,
//     separates even a reuse within one clock tick) and is stable for one
//     process instance across agent restarts within a boot.
//     user.audit.id and user.audit.name are the login uid
//     (/proc/PID/loginuid) and user.audit.session_id the audit session; the
//     unset value 4294967295 is omitted.
//   - fanaudit.enrichment is "full" when every process, user and group
//     field (and file.stat when Options.FileStat is on) is known, else
//     "partial" with fanaudit.missing naming what is unknown, from:
//     process, process.executable, process.name, process.command_line,
//     process.start (with process.entity_id), process.parent.pid,
//     process.cgroup.path, user.id, group.id, user.audit, file.stat,
//     user.effective.id, file.path (the capture could not name the
//     object; see CheckNamed). An empty /proc/PID/cmdline (the process is
//     exiting) is not a command line. When comm can no longer be read,
//     process.name is the executable's base name, which is what the
//     kernel set comm from at exec. Nothing is ever guessed.
//   - fanaudit.hash.status (record.File.HashStatus) says why a close_write
//     has no file.hash.sha256: "skipped_size" (above Hash.MaxSize),
//     "skipped_budget" (the I/O budget was spent), "unavailable" (the
//     capture had no file to read, see audit.Options.OpenForHash), "error"
//     (reading failed). The hash reads the event's own open file, which is
//     the right inode after a rename or unlink; content written after the
//     close_write and before the hash can still be seen.
//
// Records are allocated as one slab per batch, never pooled: a record is
// garbage once every sink has encoded it, and nobody has to give it back.
package enrich

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"
)

// ErrOptions is wrapped by every validation error of New.
var ErrOptions = errors.New("invalid enrich options")

// HashOptions configure sha256 of close_write files.
type HashOptions struct {
	Enabled        bool
	MaxSize        int64 // bytes; larger files are skipped_size. Default 64 MiB.
	BytesPerSecond int64 // I/O budget; default 64 MiB/s, burst max(1 s, MaxSize)
	Workers        int   // hashing goroutines; default 2
}

// Options configure an Enricher. A zero numeric or string field takes its
// value from Defaults; negative values are rejected.
type Options struct {
	ProcRoot   string // default "/proc"
	EtcRoot    string // machine-id, and passwd/group unless given; default "/etc"
	PasswdPath string // default EtcRoot/passwd
	GroupPath  string // default EtcRoot/group

	CacheSize  int           // pids in the process cache; default 16384
	CacheTTL   time.Duration // trust a cached process this long; default 1s
	CmdlineMax int           // bytes of process.command_line; default 4096
	ClockTicks int           // USER_HZ for /proc start times; default 100
	IDRefresh  time.Duration // re-stat passwd/group at most this often; default 1s

	// PidFD: the capture reports pidfds (audit.Options.PidFD). Enrichment
	// then reads /proc through the event's own pidfd, which names the exact
	// process instance, and a cached pid whose pidfd names another instance
	// is re-read at once.
	PidFD bool
	// NoPidfdReads turns off pidfd_open + PIDFD_GET_INFO for /proc reads
	// (on by default for the real /proc): creds then come from
	// /proc/PID/status, which is slower and gone with the process.
	NoPidfdReads bool
	// NoProcConnector turns off the proc connector (on by default for the
	// real /proc; needs CAP_NET_ADMIN): without it, a process that exits
	// before its first event is read has no user.id.
	NoProcConnector bool
	// FileStat fills file inode, mode, size and owner via audit.Event.Stat.
	FileStat bool
	Hash     HashOptions
}

// Defaults returns the options with every default filled in.
func Defaults() Options {
	return Options{
		ProcRoot:   "/proc",
		EtcRoot:    "/etc",
		CacheSize:  16384,
		CacheTTL:   time.Second,
		CmdlineMax: 4096,
		ClockTicks: 100,
		IDRefresh:  time.Second,
		Hash: HashOptions{
			MaxSize:        64 << 20,
			BytesPerSecond: 64 << 20,
			Workers:        2,
		},
	}
}

func (o *Options) fill() error {
	d := Defaults()
	if o.ProcRoot == "" {
		o.ProcRoot = d.ProcRoot
	}
	if o.EtcRoot == "" {
		o.EtcRoot = d.EtcRoot
	}
	if o.PasswdPath == "" {
		o.PasswdPath = filepath.Join(o.EtcRoot, "passwd")
	}
	if o.GroupPath == "" {
		o.GroupPath = filepath.Join(o.EtcRoot, "group")
	}
	for _, f := range []struct {
		name string
		v    *int
		def  int
	}{
		{"CacheSize", &o.CacheSize, d.CacheSize},
		{"CmdlineMax", &o.CmdlineMax, d.CmdlineMax},
		{"ClockTicks", &o.ClockTicks, d.ClockTicks},
		{"Hash.Workers", &o.Hash.Workers, d.Hash.Workers},
	} {
		if *f.v < 0 {
			return fmt.Errorf("%w: %s %d is negative", ErrOptions, f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	for _, f := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"CacheTTL", &o.CacheTTL, d.CacheTTL},
		{"IDRefresh", &o.IDRefresh, d.IDRefresh},
	} {
		if *f.v < 0 {
			return fmt.Errorf("%w: %s %v is negative", ErrOptions, f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	for _, f := range []struct {
		name string
		v    *int64
		def  int64
	}{
		{"Hash.MaxSize", &o.Hash.MaxSize, d.Hash.MaxSize},
		{"Hash.BytesPerSecond", &o.Hash.BytesPerSecond, d.Hash.BytesPerSecond},
	} {
		if *f.v < 0 {
			return fmt.Errorf("%w: %s %d is negative", ErrOptions, f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if o.CmdlineMax > 1<<20 {
		return fmt.Errorf("%w: CmdlineMax %d is above 1 MiB", ErrOptions, o.CmdlineMax)
	}
	if o.Hash.Workers > 256 {
		return fmt.Errorf("%w: Hash.Workers %d is above 256", ErrOptions, o.Hash.Workers)
	}
	return nil
}
