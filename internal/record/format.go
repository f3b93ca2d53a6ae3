package record

import "fmt"

// Format is a record encoding a sink writes: the contract's sink format
// (ecs, ocsf) or watch's text view.
type Format uint8

const (
	FormatECS  Format = iota // ECS JSON lines, the default
	FormatOCSF               // OCSF 1.8 File System Activity (class 1001) JSON lines
	FormatText               // one aligned human-readable line per event (watch only)
	NumFormats
)

var formatNames = [NumFormats]string{FormatECS: "ecs", FormatOCSF: "ocsf", FormatText: "text"}

func (f Format) String() string {
	if f < NumFormats {
		return formatNames[f]
	}
	return fmt.Sprintf("format(%d)", uint8(f))
}

// ParseFormat maps a format name to its Format.
func ParseFormat(s string) (Format, bool) {
	for i, n := range formatNames {
		if n == s {
			return Format(i), true
		}
	}
	return FormatECS, false
}

// LineEncoder appends one encoded record, without the newline, to dst.
// An encoder belongs to one goroutine; it may keep state between records
// (the ECS encoder reuses members that repeat), and it allocates nothing
// per record once its buffers have grown.
type LineEncoder interface {
	Append(dst []byte, r *Record) []byte
}

// NewFormatEncoder returns the encoder of format f with the run's options.
func NewFormatEncoder(f Format, o Options) LineEncoder {
	switch f {
	case FormatOCSF:
		return NewOCSFEncoder(o)
	case FormatText:
		return NewTextEncoder(o)
	default:
		return NewEncoder(o)
	}
}
