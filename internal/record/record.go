// Package record owns the event record that flows from enrichment to the
// sinks: its fields, the action vocabulary and the JSON line encoding fixed
// by ../shared/contract.md. Nothing here touches the kernel or the network.
package record

import "time"

// Action is the contract's event.action. One kernel event with several mask
// bits (the kernel merges events on the same object) becomes one record per
// action, in the order the actions happen.
type Action uint8

const (
	ActionUnknown Action = iota
	ActionCreate
	ActionOpen
	ActionExec
	ActionAccess
	ActionModify
	ActionAttrib
	ActionCloseWrite
	ActionCloseNowrite
	ActionRename
	ActionMoveSelf
	ActionDelete
	ActionDeleteSelf
	ActionEventsLost
	numActions
)

var actionNames = [numActions]string{
	ActionUnknown:      "unknown",
	ActionCreate:       "create",
	ActionOpen:         "open",
	ActionExec:         "exec",
	ActionAccess:       "access",
	ActionModify:       "modify",
	ActionAttrib:       "attrib",
	ActionCloseWrite:   "close_write",
	ActionCloseNowrite: "close_nowrite",
	ActionRename:       "rename",
	ActionMoveSelf:     "move_self",
	ActionDelete:       "delete",
	ActionDeleteSelf:   "delete_self",
	ActionEventsLost:   "events_lost",
}

// ecsTypes maps an action to the contract's event.type values.
var ecsTypes = [numActions][]string{
	ActionUnknown:      {"info"},
	ActionCreate:       {"creation"},
	ActionOpen:         {"access"},
	ActionExec:         {"access"},
	ActionAccess:       {"access"},
	ActionModify:       {"change"},
	ActionAttrib:       {"change"},
	ActionCloseWrite:   {"change"},
	ActionCloseNowrite: {"access"},
	ActionRename:       {"change"},
	ActionMoveSelf:     {"change"},
	ActionDelete:       {"deletion"},
	ActionDeleteSelf:   {"deletion"},
	ActionEventsLost:   {"info"},
}

func (a Action) String() string {
	if a < numActions {
		return actionNames[a]
	}
	return "unknown"
}

// ECSTypes returns event.type for the action. The slice is shared; do not modify.
func (a Action) ECSTypes() []string {
	if a < numActions {
		return ecsTypes[a]
	}
	return ecsTypes[ActionUnknown]
}

// ParseAction maps a contract event.action name back to its Action.
func ParseAction(s string) (Action, bool) {
	for i, n := range actionNames {
		if n == s && Action(i) != ActionUnknown {
			return Action(i), true
		}
	}
	return ActionUnknown, false
}

// FileActions lists every file action, i.e. every action but events_lost.
func FileActions() []Action {
	out := make([]Action, 0, numActions)
	for a := ActionCreate; a < ActionEventsLost; a++ {
		out = append(out, a)
	}
	return out
}

// Record is one output record. Zero values mean "unknown" and are omitted
// from the JSON, except where a Has* flag says the zero is a real value.
type Record struct {
	Timestamp time.Time // when the agent read the event
	Action    Action
	Sequence  uint64 // assigned by the pipeline, gapless from 1

	File      File
	Process   Process
	User      User
	Container Container
	Host      *Host // shared by every record of a run; never modified
	Fanaudit  Meta
}

// File holds file.* fields.
type File struct {
	Path         string // absolute; escaped where not valid UTF-8
	OriginalPath string // rename: the old path (file.Ext.original.path)
	Type         string // file, dir, symlink, char_device, block_device, fifo, socket

	HasStat bool // Inode, Mode, Size, UID, GID are known
	Inode   uint64
	Mode    uint32 // permission and type bits as in st_mode
	Size    int64
	UID     uint32
	GID     uint32

	SHA256     string // file.hash.sha256 when hashing is on
	HashStatus string // fanaudit.hash.status: why there is no hash, e.g. "skipped_size"
}

// Process holds process.* fields.
type Process struct {
	Pid         int32
	PPid        int32 // process.parent.pid; 0 = unknown
	Executable  string
	Name        string // comm
	CommandLine string // capped, see enrich
	// Args is argv as /proc/PID/cmdline has it: the arguments separated
	// by NUL bytes, without the final NUL, capped like CommandLine. The
	// encoders split it into process.args without allocating; one string
	// (rather than a slice) keeps Process comparable and cheap to cache.
	Args     string
	Start    time.Time
	EntityID string
	// Parent's executable and entity id (process.parent.*), where known.
	ParentExecutable string
	ParentEntityID   string
	// CgroupPath is not an ECS field; it is encoded as
	// fanaudit.process.cgroup.path.
	CgroupPath string
}

// User holds user.*, group.* and the audit login fields.
type User struct {
	HasID   bool
	ID      uint32
	Name    string
	HasEID  bool // user.effective.id is printed only where it differs from ID
	EID     uint32
	HasGID  bool
	GID     uint32
	Group   string
	HasAUID bool // login uid (user.audit.id); unset (4294967295) is not printed
	AUID    uint32
	AName   string // user.audit.name
	HasSess bool   // audit session id (user.audit.session_id)
	Session uint32
}

// Container holds container.* fields.
type Container struct {
	ID      string
	Runtime string // container.runtime: docker, containerd, cri-o, podman, where known
}

// Host holds host.* fields, read once at start.
type Host struct {
	Hostname string // also host.name
	ID       string // /etc/machine-id
	BootID   string // /proc/sys/kernel/random/boot_id
	Kernel   string // host.os.kernel: /proc/sys/kernel/osrelease
}

// Meta holds fanaudit.* fields.
type Meta struct {
	Enrichment string   // "full" or "partial"; empty for events_lost
	Missing    []string // which enrichment groups are missing when partial; shared between records, never modified
	Lost       Lost
}

// Lost describes an events_lost record.
type Lost struct {
	HasCount bool
	Count    uint64
	Reason   string // kernel_queue_overflow, queue_full, ...
	Sink     string
	// PreviousRunID names the earlier agent run whose records these were,
	// when a sink lost them in a later run (a replayed spool).
	PreviousRunID string
	// LastSequence is, for agent_restart, the last event.sequence of the
	// previous run known to be settled (delivered or announced lost).
	LastSequence    uint64
	HasLastSequence bool
}

// Loss reasons used across the agent.
const (
	ReasonKernelOverflow = "kernel_queue_overflow"
	ReasonQueueFull      = "queue_full"
	// ReasonSinkError: a sink gave up on records it had taken (e.g. a
	// Kafka permanent error that was dead-lettered, a broken stdout pipe).
	ReasonSinkError = "sink_error"
	// ReasonAgentRestart: the previous agent run ended without a clean
	// stop (SIGKILL, a crash, power loss); what it had not delivered is
	// unknown. Carries previous_run_id and, where known, last_sequence.
	ReasonAgentRestart = "agent_restart"
	// ReasonDeadLetter: a record the sink's destination can never take
	// (Kafka: too large, invalid), written to the dead-letter file.
	ReasonDeadLetter = "dead_letter"
	// ReasonSpoolFull: spooled records discarded by the spool's when_full
	// (drop_oldest), or refused by it (drop_newest).
	ReasonSpoolFull = "spool_full"
	// ReasonSpoolCorrupt: spooled records unreadable on replay (bad checksum,
	// torn or damaged segment).
	ReasonSpoolCorrupt = "spool_corrupt"
	// ReasonUnwatchedWindow: a directory that appeared in a subtree under
	// inode marks may have seen work before the capture marked it; File.Path
	// names the directory, the count is unknown.
	ReasonUnwatchedWindow = "unwatched_window"
)
