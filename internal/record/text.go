package record

import (
	"strconv"
	"time"
)

// TextEncoder appends one human-readable line per record, for people at a
// terminal (watch --format text), in the manner of fatrace:
//
//	12:01:02.345 close_write   /etc/passwd  vipw[4242] root
//	12:01:03.000 rename        /m/old -> /m/new  mv[4300] alice
//	12:01:04.000 events_lost   17 records lost: queue_full (sink stdout)
//
// The time is local, to the millisecond, and the action is padded so the
// paths start in one column. Control bytes in names are shown as \xNN,
// so a line is always one line. With Options.Color the action is coloured by
// kind (ANSI). It allocates nothing per record. Not safe for concurrent use.
type TextEncoder struct {
	opts Options
	loc  *time.Location
}

// NewTextEncoder returns a text encoder; times are shown in the local zone.
func NewTextEncoder(o Options) *TextEncoder { return &TextEncoder{opts: o, loc: time.Local} }

// actionWidth is the longest action name, close_nowrite.
const actionWidth = len("close_nowrite")

const (
	ansiReset  = "\x1b[0m"
	ansiRed    = "\x1b[31m"
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiCyan   = "\x1b[36m"
	ansiBoldR  = "\x1b[1;31m"
	ansiDim    = "\x1b[2m"
)

func actionColor(a Action) string {
	switch a {
	case ActionCreate:
		return ansiGreen
	case ActionDelete, ActionDeleteSelf:
		return ansiRed
	case ActionModify, ActionCloseWrite, ActionAttrib:
		return ansiYellow
	case ActionRename, ActionMoveSelf:
		return ansiCyan
	case ActionEventsLost:
		return ansiBoldR
	}
	return ""
}

// Append appends r as one line (no newline).
func (e *TextEncoder) Append(dst []byte, r *Record) []byte {
	b := dst
	if r.Timestamp.IsZero() {
		b = append(b, "--:--:--.---"...)
	} else {
		t := r.Timestamp.In(e.loc)
		h, m, s := t.Clock()
		b = appendDigits(b, h, 2)
		b = append(b, ':')
		b = appendDigits(b, m, 2)
		b = append(b, ':')
		b = appendDigits(b, s, 2)
		b = append(b, '.')
		b = appendDigits(b, t.Nanosecond()/1e6, 3)
	}
	b = append(b, ' ')
	name := r.Action.String()
	col := ""
	if e.opts.Color {
		col = actionColor(r.Action)
	}
	if col != "" {
		b = append(b, col...)
	}
	b = append(b, name...)
	if col != "" {
		b = append(b, ansiReset...)
	}
	for i := len(name); i < actionWidth; i++ {
		b = append(b, ' ')
	}
	b = append(b, ' ')
	if r.Action == ActionEventsLost {
		b = appendLossText(b, &r.Fanaudit.Lost)
		if r.File.Path != "" {
			b = append(b, " in "...)
			b = appendTextEscaped(b, r.File.Path)
		}
		return b
	}
	if r.File.OriginalPath != "" {
		b = appendTextEscaped(b, r.File.OriginalPath)
		b = append(b, " -> "...)
	}
	b = appendTextEscaped(b, r.File.Path)
	b = append(b, "  "...)
	if e.opts.Color {
		b = append(b, ansiDim...)
	}
	p := &r.Process
	switch {
	case p.Name != "":
		b = appendTextEscaped(b, p.Name)
	case p.Executable != "":
		b = appendTextEscaped(b, p.Executable)
	default:
		b = append(b, '?')
	}
	b = append(b, '[')
	b = strconv.AppendInt(b, int64(p.Pid), 10)
	b = append(b, ']')
	u := &r.User
	switch {
	case u.Name != "":
		b = append(b, ' ')
		b = appendTextEscaped(b, u.Name)
	case u.HasID:
		b = append(b, " uid="...)
		b = strconv.AppendUint(b, uint64(u.ID), 10)
	}
	if u.HasEID && (!u.HasID || u.EID != u.ID) {
		b = append(b, " euid="...)
		b = strconv.AppendUint(b, uint64(u.EID), 10)
	}
	if e.opts.Color {
		b = append(b, ansiReset...)
	}
	return b
}

// appendTextEscaped appends s with control bytes shown as \xNN, so a
// name cannot break the line or drive the terminal; the rest is as is
// (names are already escaped reversibly where not valid UTF-8).
func appendTextEscaped(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f {
			b = append(b, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
			continue
		}
		b = append(b, c)
	}
	return b
}
