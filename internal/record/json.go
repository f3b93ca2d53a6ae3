package record

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// unsetID is the kernel's "not set" value for login uid and session id.
const unsetID = 4294967295

// ECSVersion is ecs.version: the ECS release whose field definitions the
// JSON records follow (checked against ECS 9.5's ecs_flat.yml by the
// tests, see testdata/ecs_fields.tsv).
const ECSVersion = "9.5.0"

// Options are an encoder's per-run settings, set once when it is made.
type Options struct {
	// RunID is fanaudit.run_id and the run part of event.id. Empty leaves
	// both out (tests, tools that re-encode).
	RunID string
	// Version is the agent's version, OCSF's metadata.product.version.
	Version string
	// Color: the text encoder colours its lines (a terminal).
	Color bool
}

// EventIDPrefix returns "<host.id>:<boot.id>:<run id>:", to which
// AppendEventID adds event.sequence. Without a machine id (some
// containers) the hostname stands in for host.id. It returns "" when no
// unique id can be made: no run id, or neither host id nor hostname.
// The Kafka sink's fanaudit.event_id header and the records' event.id are
// both made with it, so they are the same string.
func EventIDPrefix(h *Host, runID string) string {
	if h == nil || runID == "" {
		return ""
	}
	id := h.ID
	if id == "" {
		id = h.Hostname
	}
	if id == "" {
		return ""
	}
	return id + ":" + h.BootID + ":" + runID + ":"
}

// AppendEventID appends the event id of sequence seq to b.
func AppendEventID(b []byte, prefix string, seq uint64) []byte {
	return strconv.AppendUint(append(b, prefix...), seq, 10)
}

// AppendJSON appends the record as one compact ECS JSON object (no
// newline) to dst and returns the extended slice, as an Encoder with no
// Options does. Dotted contract names become nested objects, unknown
// values are left out, and an object left with no member is removed
// whole. It does not allocate when dst has room.
func (r *Record) AppendJSON(dst []byte) []byte {
	b := r.appendHead(dst, nil, "")
	b = r.appendActor(b)
	return r.appendTail(b, "")
}

// Encoder appends records exactly as AppendJSON does, plus the per-run
// fields of its Options (event.id, fanaudit.run_id), but keeps the
// encoded process, user, group, container and host members of the
// previous record and reuses them while those fields are equal.
// Consecutive records mostly come from one process, and those members are
// most of a record's bytes. The comparison is cheap: the strings of one
// cached process share their data, so equal strings are found by pointer.
// Not safe for concurrent use.
type Encoder struct {
	opts Options

	idHost   *Host
	idPrefix string

	ts    tsCache
	actor actorCache

	tk        tailKey
	tail      []byte
	tailValid bool
}

// NewEncoder returns an ECS JSON encoder with the run's options.
func NewEncoder(o Options) *Encoder { return &Encoder{opts: o} }

// prefix returns the event id prefix for h, recomputed only when the host
// changes (once per run in the agent).
func (e *Encoder) prefix(h *Host) string {
	return cachedPrefix(&e.idHost, &e.idPrefix, h, e.opts.RunID)
}

// cachedPrefix returns EventIDPrefix(h, runID), made again only when h
// differs from *host, the last non-nil host seen.
func cachedPrefix(host **Host, prefix *string, h *Host, runID string) string {
	if h == nil {
		return ""
	}
	if h != *host {
		*host, *prefix = h, EventIDPrefix(h, runID)
	}
	return *prefix
}

// tsCache keeps the text of the last timestamp formatted: the records of
// one read share their timestamp.
type tsCache struct {
	t   time.Time
	buf []byte
}

// text returns t formatted by AppendTimestamp, formatted again only when
// t differs from the last one.
func (c *tsCache) text(t time.Time) []byte {
	if !t.Equal(c.t) || c.buf == nil {
		c.t = t
		c.buf = AppendTimestamp(c.buf[:0], t)
	}
	return c.buf
}

// actorCache keeps the encoded actor members (process, user, container,
// host) of the last record, for reuse while those fields are equal.
type actorCache struct {
	p     Process
	u     User
	c     Container
	h     *Host
	buf   []byte
	valid bool
}

// hit reports whether buf holds r's members: r's fields are those of
// the record they were stored for.
func (c *actorCache) hit(r *Record) bool {
	return c.valid && r.Host == c.h && r.Process == c.p && r.User == c.u && r.Container == c.c
}

// store caches members, the encoded actor members of r.
func (c *actorCache) store(r *Record, members []byte) {
	c.buf = append(c.buf[:0], members...)
	c.p, c.u, c.c, c.h, c.valid = r.Process, r.User, r.Container, r.Host, true
}

// Append appends r as one JSON object, like r.AppendJSON(dst).
func (e *Encoder) Append(dst []byte, r *Record) []byte {
	// The records of one read share their timestamp.
	b := r.appendHead(dst, e.ts.text(r.Timestamp), e.prefix(r.Host))
	if e.actor.hit(r) {
		b = append(b, e.actor.buf...)
	} else {
		// The members always follow the event object, so the separator
		// they start with is the same for every record.
		m := len(b)
		b = r.appendActor(b)
		e.actor.store(r, b[m:])
	}
	// The fanaudit members of file events repeat too: enrichment shares
	// one Missing slice per combination of missing fields, so the slice's
	// identity stands for its contents.
	if r.Action == ActionEventsLost || r.Fanaudit.Lost != (Lost{}) {
		return r.appendTail(b, e.opts.RunID)
	}
	k := tailKey{enrichment: r.Fanaudit.Enrichment, n: len(r.Fanaudit.Missing), hash: r.File.HashStatus,
		ftype: r.File.Type, cgroup: r.Process.CgroupPath}
	if k.n > 0 {
		k.missing = &r.Fanaudit.Missing[0]
	}
	if e.tailValid && k == e.tk {
		return append(b, e.tail...)
	}
	m := len(b)
	b = r.appendTail(b, e.opts.RunID)
	e.tail = append(e.tail[:0], b[m:]...)
	e.tk, e.tailValid = k, true
	return b
}

// tailKey identifies a file event's fanaudit members for Encoder.
type tailKey struct {
	enrichment string
	missing    *string
	n          int
	hash       string
	ftype      string
	cgroup     string
}

// appendHead opens the object and appends @timestamp, ecs, event and
// file. ts, when not nil, is r.Timestamp already formatted; idPrefix, when
// not empty, makes event.id.
func (r *Record) appendHead(dst, ts []byte, idPrefix string) []byte {
	b := append(dst, '{')
	if !r.Timestamp.IsZero() {
		b = key(b, "@timestamp")
		b = append(b, '"')
		if ts != nil {
			b = append(b, ts...)
		} else {
			b = AppendTimestamp(b, r.Timestamp)
		}
		b = append(b, '"')
	}
	b = key(b, "ecs")
	b = append(b, `{"version":"`+ECSVersion+`"}`...)

	m := len(b)
	b = openObj(b, "event")
	b = strField(b, "action", r.Action.String())
	// Loss records are events too (something happened: records were
	// lost), of type info and with no category: no ECS category fits
	// the agent's own pipeline, and file rules must not match them.
	b = key(b, "kind")
	b = append(b, `"event"`...)
	if r.Sequence != 0 {
		if idPrefix != "" {
			b = key(b, "id")
			b = append(b, '"')
			b = AppendEventID(b, idPrefix, r.Sequence)
			b = append(b, '"')
		}
		b = key(b, "sequence")
		b = strconv.AppendUint(b, r.Sequence, 10)
	}
	if r.Action != ActionEventsLost {
		b = key(b, "category")
		b = append(b, `["file"]`...)
	}
	b = strArray(b, "type", r.Action.ECSTypes())
	b = closeObj(b, m)

	return r.File.appendJSON(b)
}

// appendActor appends who did it: process, user, group, container, host.
func (r *Record) appendActor(b []byte) []byte {
	b = r.Process.appendJSON(b)
	b = r.User.appendJSON(b)

	m := len(b)
	b = openObj(b, "container")
	b = strField(b, "id", r.Container.ID)
	b = strField(b, "runtime", r.Container.Runtime)
	b = closeObj(b, m)

	if h := r.Host; h != nil {
		m = len(b)
		b = openObj(b, "host")
		b = strField(b, "hostname", h.Hostname)
		// host.name: ECS's main host field, which Elastic's rules and
		// dashboards key on; the hostname is what it holds on Unix.
		b = strField(b, "name", h.Hostname)
		b = strField(b, "id", h.ID)
		m2 := len(b)
		b = openObj(b, "boot")
		b = strField(b, "id", h.BootID)
		b = closeObj(b, m2)
		b = key(b, "os")
		b = append(b, `{"type":"linux"`...)
		if h.Kernel != "" {
			b = key(b, "kernel")
			b = appendString(b, h.Kernel)
		}
		b = append(b, '}')
		b = closeObj(b, m)
	}
	return b
}

// appendTail appends the fanaudit members and closes the object.
func (r *Record) appendTail(b []byte, runID string) []byte {
	m := len(b)
	b = openObj(b, "fanaudit")
	b = strField(b, "run_id", runID)
	b = r.Fanaudit.appendJSON(b, r.File.HashStatus)
	if t := r.File.Type; t != "" && !ecsFileType(t) {
		b = key(b, "file")
		b = append(b, `{"type":`...)
		b = appendString(b, t)
		b = append(b, '}')
	}
	if p := r.Process.CgroupPath; p != "" {
		// ECS has no cgroup field for a process.
		b = key(b, "process")
		b = append(b, `{"cgroup":{"path":`...)
		b = appendString(b, p)
		b = append(b, "}}"...)
	}
	b = closeObj(b, m)
	return append(b, '}')
}

// ecsFileType reports whether t is one of the file.type values ECS lists
// (file, dir, symlink). The other kinds of inode (char_device,
// block_device, fifo, socket) go to fanaudit.file.type instead.
func ecsFileType(t string) bool {
	return t == "file" || t == "dir" || t == "symlink"
}

// SplitPath returns file.directory, file.name and file.extension for an
// absolute path: the directory without a trailing slash ("/" for a top
// level name), the last element, and what follows the name's last dot,
// where the name has a dot that is neither its first nor its last byte
// (".bashrc" and "a." have none). The root has no name. They are slices
// of path: nothing is allocated.
func SplitPath(path string) (dir, name, ext string) {
	i := strings.LastIndexByte(path, '/')
	if i < 0 {
		return "", path, extOf(path)
	}
	name = path[i+1:]
	dir = path[:i]
	if i == 0 {
		dir = "/"
	}
	if name == "" {
		// "/" or a path ending in a slash: no name to speak of.
		return "", "", ""
	}
	return dir, name, extOf(name)
}

func extOf(name string) string {
	j := strings.LastIndexByte(name, '.')
	if j <= 0 || j == len(name)-1 {
		return ""
	}
	return name[j+1:]
}

func (f *File) appendJSON(b []byte) []byte {
	m := len(b)
	b = openObj(b, "file")
	b = strField(b, "path", f.Path)
	dir, name, ext := SplitPath(f.Path)
	b = strField(b, "name", name)
	b = strField(b, "directory", dir)
	b = strField(b, "extension", ext)
	if f.OriginalPath != "" {
		// ECS has no field for a rename's source; Ext is its custom-field
		// escape hatch, and Elastic's own agents use file.Ext.original.path.
		b = key(b, "Ext")
		b = append(b, `{"original":{"path":`...)
		b = appendString(b, f.OriginalPath)
		b = append(b, "}}"...)
	}
	if ecsFileType(f.Type) {
		b = strField(b, "type", f.Type)
	}
	if f.HasStat {
		// ECS types inode, mode, uid and gid as keywords, so they are strings.
		b = key(b, "inode")
		b = quotedUint(b, f.Inode)
		b = key(b, "mode")
		b = appendMode(b, f.Mode)
		b = key(b, "size")
		b = strconv.AppendInt(b, f.Size, 10)
		b = key(b, "uid")
		b = quotedUint(b, uint64(f.UID))
		b = key(b, "gid")
		b = quotedUint(b, uint64(f.GID))
	}
	b = nestedStr(b, "hash", `{"sha256":`, f.SHA256)
	return closeObj(b, m)
}

// nestedStr appends k:{sub:v}, with open being `{"sub":`, unless v is
// empty.
func nestedStr(b []byte, k, open, v string) []byte {
	if v == "" {
		return b
	}
	b = key(b, k)
	b = append(b, open...)
	b = appendString(b, v)
	return append(b, '}')
}

func (p *Process) appendJSON(b []byte) []byte {
	m := len(b)
	b = openObj(b, "process")
	if p.Pid != 0 {
		b = key(b, "pid")
		b = strconv.AppendInt(b, int64(p.Pid), 10)
	}
	m2 := len(b)
	b = openObj(b, "parent")
	if p.PPid != 0 {
		b = key(b, "pid")
		b = strconv.AppendInt(b, int64(p.PPid), 10)
	}
	b = strField(b, "executable", p.ParentExecutable)
	b = strField(b, "entity_id", p.ParentEntityID)
	b = closeObj(b, m2)
	b = strField(b, "executable", p.Executable)
	b = strField(b, "name", p.Name)
	b = strField(b, "command_line", p.CommandLine)
	if p.Args != "" {
		b = key(b, "args")
		b = appendArgs(b, p.Args)
	}
	if !p.Start.IsZero() {
		b = key(b, "start")
		b = append(b, '"')
		b = AppendTimestamp(b, p.Start)
		b = append(b, '"')
	}
	b = strField(b, "entity_id", p.EntityID)
	return closeObj(b, m)
}

// appendArgs appends argv, NUL-separated as in Process.Args, as a JSON
// array of strings.
func appendArgs(b []byte, args string) []byte {
	b = append(b, '[')
	for i := 0; ; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		j := strings.IndexByte(args, 0)
		if j < 0 {
			b = appendString(b, args)
			break
		}
		b = appendString(b, args[:j])
		args = args[j+1:]
	}
	return append(b, ']')
}

func (u *User) appendJSON(b []byte) []byte {
	m := len(b)
	b = openObj(b, "user")
	if u.HasID {
		b = key(b, "id")
		b = quotedUint(b, uint64(u.ID))
	}
	b = strField(b, "name", u.Name)
	b = u.appendEffectiveAudit(b, true)
	b = closeObj(b, m)

	m = len(b)
	b = openObj(b, "group")
	if u.HasGID {
		b = key(b, "id")
		b = quotedUint(b, uint64(u.GID))
	}
	b = strField(b, "name", u.Group)
	return closeObj(b, m)
}

// appendEffectiveAudit appends user.effective (where the effective uid
// differs) and the user.audit object, with its session id if session is
// set: the members the ECS user object and OCSF's unmapped user share.
func (u *User) appendEffectiveAudit(b []byte, session bool) []byte {
	if u.HasEID && (!u.HasID || u.EID != u.ID) {
		b = key(b, "effective")
		b = append(b, `{"id":`...)
		b = quotedUint(b, uint64(u.EID))
		b = append(b, '}')
	}
	m := len(b)
	b = openObj(b, "audit")
	if u.HasAUID && u.AUID != unsetID {
		b = key(b, "id")
		b = quotedUint(b, uint64(u.AUID))
	}
	b = strField(b, "name", u.AName)
	if session && u.HasSess && u.Session != unsetID {
		b = key(b, "session_id")
		b = quotedUint(b, uint64(u.Session))
	}
	return closeObj(b, m)
}

// appendJSON appends the members of the fanaudit object, which the
// caller opens and closes.
func (f *Meta) appendJSON(b []byte, hashStatus string) []byte {
	b = strField(b, "enrichment", f.Enrichment)
	if len(f.Missing) > 0 {
		b = strArray(b, "missing", f.Missing)
	}
	m2 := len(b)
	b = openObj(b, "lost")
	if f.Lost.HasCount {
		b = key(b, "count")
		b = strconv.AppendUint(b, f.Lost.Count, 10)
	}
	b = strField(b, "reason", f.Lost.Reason)
	b = strField(b, "sink", f.Lost.Sink)
	b = strField(b, "previous_run_id", f.Lost.PreviousRunID)
	if f.Lost.HasLastSequence {
		b = key(b, "last_sequence")
		b = strconv.AppendUint(b, f.Lost.LastSequence, 10)
	}
	b = closeObj(b, m2)
	if hashStatus != "" {
		b = key(b, "hash")
		b = append(b, `{"status":`...)
		b = appendString(b, hashStatus)
		b = append(b, '}')
	}
	return b
}

// key appends a member name, preceded by a comma unless it is the first
// member of its object. Looking at the previous byte keeps the encoder
// free of per-object state.
func key(b []byte, k string) []byte {
	if n := len(b); n > 0 && b[n-1] != '{' {
		b = append(b, ',')
	}
	b = append(b, '"')
	b = append(b, k...)
	return append(b, '"', ':')
}

func openObj(b []byte, k string) []byte {
	return append(key(b, k), '{')
}

// closeObj closes an object opened at mark, or removes it (and its key)
// when nothing was written into it.
func closeObj(b []byte, mark int) []byte {
	if b[len(b)-1] == '{' {
		return b[:mark]
	}
	return append(b, '}')
}

func strField(b []byte, k, v string) []byte {
	if v == "" {
		return b
	}
	return appendString(key(b, k), v)
}

func strArray(b []byte, k string, vs []string) []byte {
	b = key(b, k)
	b = append(b, '[')
	for i, v := range vs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, v)
	}
	return append(b, ']')
}

func quotedUint(b []byte, v uint64) []byte {
	b = append(b, '"')
	b = strconv.AppendUint(b, v, 10)
	return append(b, '"')
}

// appendMode writes the permission bits as four octal digits ("0644",
// "4755"), the form ECS documents for file.mode.
func appendMode(b []byte, mode uint32) []byte {
	p := mode & 0o7777
	return append(b, '"',
		byte('0'+(p>>9)&7), byte('0'+(p>>6)&7), byte('0'+(p>>3)&7), byte('0'+p&7), '"')
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string. Control characters, quote and
// backslash are escaped as JSON requires; U+2028 and U+2029 are escaped too
// because JavaScript consumers treat them as line ends; invalid UTF-8
// becomes U+FFFD so the output is always valid JSON.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	b = appendEscaped(b, s)
	return append(b, '"')
}

// appendEscaped appends s escaped as in a JSON string, without quotes.
func appendEscaped(b []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); {
		if i+8 <= len(s) && plainWord(s[i:i+8]) {
			i += 8
			continue
		}
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	return append(b, s[start:]...)
}

// plainWord reports whether all 8 bytes of w are ASCII that JSON takes as
// is (no control character, quote or backslash), testing them at once:
// most paths and command lines are plain, and this is the encoder's
// hottest loop.
func plainWord(w string) bool {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	x := uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 |
		uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56
	ctl := (x - lo*0x20) & ^x // high bit set where a byte is < 0x20 (or >= 0x80)
	q := x ^ (lo * '"')       // zero byte where a byte is '"'
	bs := x ^ (lo * '\\')     // zero byte where a byte is '\\'
	q = (q - lo) & ^q         // high bit set where q has a zero byte
	bs = (bs - lo) & ^bs
	return (x|ctl|q|bs)&hi == 0
}

// AppendTimestamp appends t in the @timestamp form: RFC 3339, UTC, with
// exactly nine fraction digits so every timestamp has the same width and
// sorts lexically (RFC3339Nano trims trailing zeros). Hand-rolled because
// time.AppendFormat costs more than the rest of a record's encoding.
func AppendTimestamp(b []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	hour, min, sec := t.Clock()
	if year < 0 || year > 9999 {
		// Outside RFC 3339's four-digit years; let the library decide.
		return t.AppendFormat(b, "2006-01-02T15:04:05.000000000Z07:00")
	}
	b = appendDigits(b, year, 4)
	b = append(b, '-')
	b = appendDigits(b, int(month), 2)
	b = append(b, '-')
	b = appendDigits(b, day, 2)
	b = append(b, 'T')
	b = appendDigits(b, hour, 2)
	b = append(b, ':')
	b = appendDigits(b, min, 2)
	b = append(b, ':')
	b = appendDigits(b, sec, 2)
	b = append(b, '.')
	b = appendDigits(b, t.Nanosecond(), 9)
	return append(b, 'Z')
}

// appendDigits writes v zero-padded to width digits.
func appendDigits(b []byte, v, width int) []byte {
	n := len(b) + width
	for len(b) < n {
		b = append(b, '0')
	}
	for i := n - 1; i >= n-width; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return b
}
