package record

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// unsetID is the kernel's "not set" value for login uid and session id.
const unsetID = 4294967295

// AppendJSON appends the record as one compact JSON object (no newline) to
// dst and returns the extended slice. Dotted contract names become nested
// objects, unknown values are left out, and an object left with no member is
// removed whole. It does not allocate when dst has room, because it runs
// once per record on the hot path.
func (r *Record) AppendJSON(dst []byte) []byte {
	b := r.appendHead(dst, nil)
	b = r.appendActor(b)
	return r.appendTail(b)
}

// Encoder appends records exactly as AppendJSON does, but keeps the encoded
// process, user, group, container and host members of the previous record
// and reuses them while those fields are equal. Consecutive records mostly
// come from one process, and those members are most of a record's bytes.
// The comparison is cheap: the strings of one cached process share their
// data, so equal strings are found by pointer. Not safe for concurrent use.
type Encoder struct {
	ts     time.Time
	tsText []byte

	p     Process
	u     User
	c     Container
	h     *Host
	actor []byte
	valid bool

	tk        tailKey
	tail      []byte
	tailValid bool
}

// Append appends r as one JSON object, like r.AppendJSON(dst).
func (e *Encoder) Append(dst []byte, r *Record) []byte {
	// The records of one read share their timestamp.
	if !r.Timestamp.Equal(e.ts) || e.tsText == nil {
		e.ts = r.Timestamp
		e.tsText = AppendTimestamp(e.tsText[:0], r.Timestamp)
	}
	b := r.appendHead(dst, e.tsText)
	if e.valid && r.Host == e.h && r.Process == e.p && r.User == e.u && r.Container == e.c {
		b = append(b, e.actor...)
	} else {
		// The members always follow the event object, so the separator
		// they start with is the same for every record.
		m := len(b)
		b = r.appendActor(b)
		e.actor = append(e.actor[:0], b[m:]...)
		e.p, e.u, e.c, e.h, e.valid = r.Process, r.User, r.Container, r.Host, true
	}
	// The fanaudit members of file events repeat too: enrichment shares
	// one Missing slice per combination of missing fields, so the slice's
	// identity stands for its contents.
	if r.Action == ActionEventsLost || r.Fanaudit.Lost != (Lost{}) {
		return r.appendTail(b)
	}
	k := tailKey{enrichment: r.Fanaudit.Enrichment, n: len(r.Fanaudit.Missing), hash: r.File.HashStatus}
	if k.n > 0 {
		k.missing = &r.Fanaudit.Missing[0]
	}
	if e.tailValid && k == e.tk {
		return append(b, e.tail...)
	}
	m := len(b)
	b = r.appendTail(b)
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
}

// appendHead opens the object and appends @timestamp, event and file.
// ts, when not nil, is r.Timestamp already formatted.
func (r *Record) appendHead(dst, ts []byte) []byte {
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

	m := len(b)
	b = openObj(b, "event")
	b = strField(b, "action", r.Action.String())
	if r.Sequence != 0 {
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
		b = strField(b, "id", h.ID)
		m2 := len(b)
		b = openObj(b, "boot")
		b = strField(b, "id", h.BootID)
		b = closeObj(b, m2)
		b = closeObj(b, m)
	}
	return b
}

// appendTail appends the fanaudit members and closes the object.
func (r *Record) appendTail(b []byte) []byte {
	b = r.Fanaudit.appendJSON(b, r.File.HashStatus)
	return append(b, '}')
}

func (f *File) appendJSON(b []byte) []byte {
	m := len(b)
	b = openObj(b, "file")
	b = strField(b, "path", f.Path)
	if f.OriginalPath != "" {
		// ECS has no field for a rename's source; Ext is its custom-field
		// escape hatch, and Elastic's own agents use file.Ext.original.path.
		b = key(b, "Ext")
		b = append(b, `{"original":{"path":`...)
		b = appendString(b, f.OriginalPath)
		b = append(b, "}}"...)
	}
	b = strField(b, "type", f.Type)
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
	if p.PPid != 0 {
		b = key(b, "parent")
		b = append(b, `{"pid":`...)
		b = strconv.AppendInt(b, int64(p.PPid), 10)
		b = append(b, '}')
	}
	b = strField(b, "executable", p.Executable)
	b = strField(b, "name", p.Name)
	b = strField(b, "command_line", p.CommandLine)
	if !p.Start.IsZero() {
		b = key(b, "start")
		b = append(b, '"')
		b = AppendTimestamp(b, p.Start)
		b = append(b, '"')
	}
	b = strField(b, "entity_id", p.EntityID)
	b = nestedStr(b, "cgroup", `{"path":`, p.CgroupPath)
	return closeObj(b, m)
}

func (u *User) appendJSON(b []byte) []byte {
	m := len(b)
	b = openObj(b, "user")
	if u.HasID {
		b = key(b, "id")
		b = quotedUint(b, uint64(u.ID))
	}
	b = strField(b, "name", u.Name)
	if u.HasEID && (!u.HasID || u.EID != u.ID) {
		b = key(b, "effective")
		b = append(b, `{"id":`...)
		b = quotedUint(b, uint64(u.EID))
		b = append(b, '}')
	}
	m2 := len(b)
	b = openObj(b, "audit")
	if u.HasAUID && u.AUID != unsetID {
		b = key(b, "id")
		b = quotedUint(b, uint64(u.AUID))
	}
	b = strField(b, "name", u.AName)
	if u.HasSess && u.Session != unsetID {
		b = key(b, "session_id")
		b = quotedUint(b, uint64(u.Session))
	}
	b = closeObj(b, m2)
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

func (f *Meta) appendJSON(b []byte, hashStatus string) []byte {
	m := len(b)
	b = openObj(b, "fanaudit")
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
	b = closeObj(b, m2)
	if hashStatus != "" {
		b = key(b, "hash")
		b = append(b, `{"status":`...)
		b = appendString(b, hashStatus)
		b = append(b, '}')
	}
	return closeObj(b, m)
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
	b = append(b, s[start:]...)
	return append(b, '"')
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
