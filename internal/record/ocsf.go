package record

import (
	"strconv"
)

// OCSF 1.8 File System Activity (class 1001, category 1 System Activity)
// with the host and container profiles. docs/schema.md documents the
// mapping; the tests validate every record against the JSON Schema that
// the ocsf-json-schema package generates for file_activity.
const (
	ocsfVersion   = "1.8.0"
	ocsfClassUID  = 1001
	ocsfActOther  = 99
	ocsfSevInfo   = 1 // Informational: a file event
	ocsfSevMedium = 3 // Medium: records were lost, the audit trail has a gap
)

// ocsfActivity is an action's activity_id and activity_name. Actions OCSF
// has no activity for are 99 Other with a name of their own.
type ocsfActivity struct {
	id   int
	name string
}

var ocsfActivities = [numActions]ocsfActivity{
	ActionUnknown:      {0, "Unknown"},
	ActionCreate:       {1, "Create"},
	ActionAccess:       {2, "Read"},
	ActionModify:       {3, "Update"},
	ActionCloseWrite:   {3, "Update"},
	ActionDelete:       {4, "Delete"},
	ActionDeleteSelf:   {4, "Delete"}, // the marked object itself was deleted
	ActionRename:       {5, "Rename"},
	ActionMoveSelf:     {5, "Rename"}, // the marked object moved; its new name is unknown
	ActionAttrib:       {6, "Set Attributes"},
	ActionOpen:         {14, "Open"},
	ActionExec:         {ocsfActOther, "Execute"}, // an open for execution; kept apart from Open
	ActionCloseNowrite: {ocsfActOther, "Close"},   // neither a read nor an update
	ActionEventsLost:   {ocsfActOther, "Events Lost"},
}

// ocsfTypeNames is type_name by activity id: the class and the caption
// of the activity OCSF defines.
var ocsfTypeNames = map[int]string{
	0: "File System Activity: Unknown", 1: "File System Activity: Create", 2: "File System Activity: Read",
	3: "File System Activity: Update", 4: "File System Activity: Delete", 5: "File System Activity: Rename",
	6: "File System Activity: Set Attributes", 14: "File System Activity: Open", ocsfActOther: "File System Activity: Other",
}

// ocsfFileType maps file.type to the OCSF file type_id and its caption.
func ocsfFileType(t string) (int, string) {
	switch t {
	case "file":
		return 1, "Regular File"
	case "dir":
		return 2, "Folder"
	case "char_device":
		return 3, "Character Device"
	case "block_device":
		return 4, "Block Device"
	case "socket":
		return 5, "Local Socket"
	case "fifo":
		return 6, "Named Pipe"
	case "symlink":
		return 7, "Symbolic Link"
	}
	return 0, "Unknown"
}

// OCSFEncoder appends records as OCSF File System Activity JSON objects.
// It allocates nothing per record. Not safe for concurrent use.
type OCSFEncoder struct {
	opts     Options
	idHost   *Host
	idPrefix string
	product  []byte // the metadata.product member, fixed per run

	// The actor and device members of the previous file event, reused
	// while its process, user, container and host are equal (as the ECS
	// Encoder does), and the previous timestamp's text.
	actor actorCache
	ts    tsCache
}

// NewOCSFEncoder returns an OCSF encoder with the run's options.
func NewOCSFEncoder(o Options) *OCSFEncoder {
	e := &OCSFEncoder{opts: o}
	p := append([]byte(nil), `"product":{"name":"fanaudit","vendor_name":"fanaudit"`...)
	if o.Version != "" {
		p = append(p, `,"version":`...)
		p = appendString(p, o.Version)
	}
	e.product = append(p, '}')
	return e
}

// Append appends r as one OCSF JSON object (no newline).
func (e *OCSFEncoder) Append(dst []byte, r *Record) []byte {
	idPrefix := cachedPrefix(&e.idHost, &e.idPrefix, r.Host, e.opts.RunID)
	act := ocsfActivities[ActionUnknown]
	if r.Action < numActions {
		act = ocsfActivities[r.Action]
	}
	sev, sevName := ocsfSevInfo, "Informational"
	if r.Action == ActionEventsLost {
		sev, sevName = ocsfSevMedium, "Medium"
	}
	b := append(dst, `{"activity_id":`...)
	b = strconv.AppendInt(b, int64(act.id), 10)
	b = append(b, `,"activity_name":`...)
	b = appendString(b, act.name)
	b = append(b, `,"category_uid":1,"category_name":"System Activity","class_uid":1001,"class_name":"File System Activity","type_uid":`...)
	b = strconv.AppendInt(b, int64(ocsfClassUID*100+act.id), 10)
	b = append(b, `,"type_name":`...)
	b = appendString(b, ocsfTypeNames[act.id])
	b = append(b, `,"severity_id":`...)
	b = strconv.AppendInt(b, int64(sev), 10)
	b = append(b, `,"severity":`...)
	b = appendString(b, sevName)
	// time is OCSF's timestamp_t, milliseconds; the nanoseconds are in
	// unmapped.fanaudit.timestamp.
	b = append(b, `,"time":`...)
	var ms int64
	if !r.Timestamp.IsZero() {
		ms = r.Timestamp.UnixMilli()
	}
	b = strconv.AppendInt(b, ms, 10)

	b = append(b, `,"metadata":{"version":"`+ocsfVersion+`",`...)
	b = append(b, e.product...)
	b = append(b, `,"profiles":["host","container"]`...)
	if r.Sequence != 0 {
		if idPrefix != "" {
			b = append(b, `,"uid":"`...)
			b = AppendEventID(b, idPrefix, r.Sequence)
			b = append(b, '"')
		}
		b = append(b, `,"sequence":`...)
		b = strconv.AppendUint(b, r.Sequence, 10)
	}
	b = append(b, '}')

	// file is required by the class: a loss record that names no place
	// (unwatched_window names a directory) carries an unnamed file of
	// unknown type.
	switch {
	case r.Action == ActionEventsLost && r.File.Path == "":
		b = append(b, `,"file":{"name":"","type_id":0,"type":"Unknown"}`...)
	case r.File.OriginalPath != "":
		// Rename: the old name in file, the new one in file_result.
		b = append(b, `,"file":`...)
		b = appendOCSFFile(b, r.File.OriginalPath, &r.File, false)
		b = append(b, `,"file_result":`...)
		b = appendOCSFFile(b, r.File.Path, &r.File, true)
	default:
		b = append(b, `,"file":`...)
		b = appendOCSFFile(b, r.File.Path, &r.File, true)
	}

	switch {
	case r.Action == ActionEventsLost:
		// The agent itself reports the loss.
		b = append(b, `,"actor":{"app_name":"fanaudit"},"device":`...)
		b = appendOCSFDevice(b, r.Host)
	case e.actor.hit(r):
		b = append(b, e.actor.buf...)
	default:
		m := len(b)
		b = append(b, `,"actor":`...)
		if r.Process.Pid == 0 && r.Process.EntityID == "" && !r.User.HasID && r.User.Name == "" {
			// OCSF requires some actor; this one is not known.
			b = append(b, `{"app_name":"unknown"}`...)
		} else {
			b = r.appendOCSFActor(b)
		}
		b = append(b, `,"device":`...)
		b = appendOCSFDevice(b, r.Host)
		e.actor.store(r, b[m:])
	}
	if r.Action == ActionEventsLost {
		b = append(b, `,"message":"`...)
		b = appendLossText(b, &r.Fanaudit.Lost)
		b = append(b, '"')
	}
	b = r.appendOCSFUnmapped(b, e.opts.RunID, e.ts.text(r.Timestamp))
	return append(b, '}')
}

// appendLossText appends "17 records lost: queue_full (sink archive)",
// escaped for a JSON string.
func appendLossText(b []byte, l *Lost) []byte {
	if l.HasCount {
		b = strconv.AppendUint(b, l.Count, 10)
		b = append(b, " records lost: "...)
	} else {
		b = append(b, "records lost: "...)
	}
	b = appendEscaped(b, l.Reason)
	if l.Sink != "" {
		b = append(b, " (sink "...)
		b = appendEscaped(b, l.Sink)
		b = append(b, ')')
	}
	return b
}

// appendOCSFFile appends an OCSF file object for path; withStat adds what
// the stat of the object says (the current name of a renamed file).
func appendOCSFFile(b []byte, path string, f *File, withStat bool) []byte {
	dir, name, ext := SplitPath(path)
	if name == "" {
		name = path // the root, or an unknown path: name is required
	}
	b = append(b, `{"name":`...)
	b = appendString(b, name)
	tid, tname := ocsfFileType(f.Type)
	b = append(b, `,"type_id":`...)
	b = strconv.AppendInt(b, int64(tid), 10)
	b = append(b, `,"type":`...)
	b = appendString(b, tname)
	b = strField(b, "path", path)
	b = strField(b, "parent_folder", dir)
	b = strField(b, "ext", ext)
	if withStat {
		if f.HasStat {
			b = append(b, `,"uid":`...)
			b = quotedUint(b, f.Inode)
			b = append(b, `,"size":`...)
			b = strconv.AppendInt(b, f.Size, 10)
			b = append(b, `,"owner":{"uid":`...)
			b = quotedUint(b, uint64(f.UID))
			b = append(b, '}')
		}
		if f.SHA256 != "" {
			b = append(b, `,"hashes":[{"algorithm_id":3,"algorithm":"SHA-256","value":`...)
			b = appendString(b, f.SHA256)
			b = append(b, "}]"...)
		}
	}
	return append(b, '}')
}

// appendOCSFActor appends actor: the process with its user, parent,
// ancestry (the parent: the one ancestor known) and container, the user
// and the audit session.
func (r *Record) appendOCSFActor(b []byte) []byte {
	p, u := &r.Process, &r.User
	b = append(b, '{')
	m := len(b)
	b = openObj(b, "process")
	if p.Pid != 0 {
		b = key(b, "pid")
		b = strconv.AppendInt(b, int64(p.Pid), 10)
	}
	b = strField(b, "name", p.Name)
	b = strField(b, "path", p.Executable)
	b = strField(b, "cmd_line", p.CommandLine)
	b = strField(b, "uid", p.EntityID)
	if !p.Start.IsZero() {
		b = key(b, "created_time")
		b = strconv.AppendInt(b, p.Start.UnixMilli(), 10)
	}
	if p.PPid != 0 || p.ParentExecutable != "" || p.ParentEntityID != "" {
		m2 := len(b)
		b = openObj(b, "parent_process")
		b = p.appendParent(b)
		b = closeObj(b, m2)
		b = key(b, "ancestry")
		b = append(b, "[{"...)
		b = p.appendParent(b)
		b = append(b, "}]"...)
	}
	b = r.appendOCSFUser(b)
	m2 := len(b)
	b = openObj(b, "container")
	b = strField(b, "uid", r.Container.ID)
	b = strField(b, "runtime", r.Container.Runtime)
	b = closeObj(b, m2)
	b = closeObj(b, m)
	b = r.appendOCSFUser(b)
	if u.HasSess && u.Session != unsetID {
		b = key(b, "session")
		b = append(b, `{"uid":`...)
		b = quotedUint(b, uint64(u.Session))
		b = append(b, '}')
	}
	return append(b, '}')
}

func (p *Process) appendParent(b []byte) []byte {
	if p.PPid != 0 {
		b = key(b, "pid")
		b = strconv.AppendInt(b, int64(p.PPid), 10)
	}
	b = strField(b, "path", p.ParentExecutable)
	return strField(b, "uid", p.ParentEntityID)
}

// appendOCSFUser appends a user member: the real user and group.
func (r *Record) appendOCSFUser(b []byte) []byte {
	u := &r.User
	if !u.HasID && u.Name == "" {
		return b // OCSF's user needs a uid or a name
	}
	m := len(b)
	b = openObj(b, "user")
	if u.HasID {
		b = key(b, "uid")
		b = quotedUint(b, uint64(u.ID))
	}
	b = strField(b, "name", u.Name)
	if u.HasGID || u.Group != "" {
		b = key(b, "groups")
		b = append(b, "[{"...)
		if u.HasGID {
			b = key(b, "uid")
			b = quotedUint(b, uint64(u.GID))
		}
		b = strField(b, "name", u.Group)
		b = append(b, "}]"...)
	}
	return closeObj(b, m)
}

// appendOCSFDevice appends the host profile's device: type_id 0
// (Unknown: the agent cannot tell a server from a desktop). OCSF requires
// a name or id; without any the device is named "unknown".
func appendOCSFDevice(b []byte, h *Host) []byte {
	b = append(b, `{"type_id":0,"type":"Unknown"`...)
	if h == nil || h.Hostname == "" && h.ID == "" {
		b = append(b, `,"name":"unknown"`...)
	}
	if h != nil {
		b = strField(b, "hostname", h.Hostname)
		b = strField(b, "name", h.Hostname)
		b = strField(b, "uid", h.ID)
		b = strField(b, "boot_uid", h.BootID)
		b = append(b, `,"os":{"name":"Linux","type_id":200,"type":"Linux"`...)
		b = strField(b, "kernel_release", h.Kernel)
		b = append(b, '}')
	}
	return append(b, '}')
}

// appendOCSFUnmapped appends unmapped.fanaudit: what OCSF has no attribute
// for, under the names the ECS records use.
// ts is r.Timestamp already formatted.
func (r *Record) appendOCSFUnmapped(b []byte, runID string, ts []byte) []byte {
	b = append(b, `,"unmapped":{"fanaudit":{"action":`...)
	b = appendString(b, r.Action.String())
	if !r.Timestamp.IsZero() {
		b = append(b, `,"timestamp":"`...)
		b = append(b, ts...)
		b = append(b, '"')
	}
	b = strField(b, "run_id", runID)
	b = r.Fanaudit.appendJSON(b, r.File.HashStatus)
	f := &r.File
	m := len(b)
	b = openObj(b, "file")
	if f.HasStat {
		b = key(b, "mode")
		b = appendMode(b, f.Mode)
		b = key(b, "gid")
		b = quotedUint(b, uint64(f.GID))
	}
	if f.Type != "" && !ecsFileType(f.Type) {
		b = strField(b, "type", f.Type)
	}
	b = closeObj(b, m)
	p := &r.Process
	m = len(b)
	b = openObj(b, "process")
	if p.Args != "" {
		b = key(b, "args")
		b = appendArgs(b, p.Args)
	}
	if p.CgroupPath != "" {
		b = key(b, "cgroup")
		b = append(b, `{"path":`...)
		b = appendString(b, p.CgroupPath)
		b = append(b, '}')
	}
	b = closeObj(b, m)
	u := &r.User
	m = len(b)
	b = openObj(b, "user")
	b = u.appendEffectiveAudit(b, false)
	b = closeObj(b, m)
	return append(b, "}}"...)
}
