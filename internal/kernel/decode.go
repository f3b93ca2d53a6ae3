package kernel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Offsets in the read buffer. Every record is decoded at fixed offsets with
// binary.NativeEndian; nothing is cast, so a hostile or truncated buffer
// can only produce a DecodeError.
const (
	// mirrors struct fanotify_event_metadata
	metaEventLen    = 0  // __u32 event_len
	metaVers        = 4  // __u8 vers
	metaMetadataLen = 6  // __u16 metadata_len
	metaMask        = 8  // __aligned_u64 mask
	metaFD          = 16 // __s32 fd
	metaPid         = 20 // __s32 pid
	// MetadataSize is FAN_EVENT_METADATA_LEN.
	MetadataSize = 24
	// MetadataVersion is FANOTIFY_METADATA_VERSION.
	MetadataVersion = 3

	// mirrors struct fanotify_event_info_header
	infoType   = 0 // __u8 info_type
	infoLen    = 2 // __u16 len
	infoHdrLen = 4

	// mirrors struct fanotify_event_info_fid: header, __kernel_fsid_t fsid,
	// then struct file_handle { __u32 handle_bytes; int handle_type;
	// unsigned char f_handle[]; } and, for the *_NAME types, a
	// NUL-terminated name.
	fidFsid        = 4
	fidHandleBytes = 12
	fidHandleType  = 16
	fidHandle      = 20
	// MaxHandleSize is MAX_HANDLE_SZ.
	MaxHandleSize = 128

	// mirrors struct fanotify_event_info_pidfd: header, __s32 pidfd
	pidfdFD  = 4
	pidfdLen = 8
)

// Info record types (FAN_EVENT_INFO_TYPE_*).
const (
	infoTypeFID         = 1
	infoTypeDFIDName    = 2
	infoTypeDFID        = 3
	infoTypePidFD       = 4
	infoTypeOldDFIDName = 10
	infoTypeNewDFIDName = 12
)

// Decode errors. A *DecodeError wraps exactly one of these.
var (
	ErrShortMetadata = errors.New("buffer shorter than event metadata")
	ErrVersion       = errors.New("unsupported metadata version")
	ErrMetadataLen   = errors.New("bad metadata_len")
	ErrEventLen      = errors.New("bad event_len")
	ErrInfoHeader    = errors.New("truncated info header")
	ErrInfoLen       = errors.New("bad info record len")
	ErrHandleBytes   = errors.New("bad handle_bytes")
	ErrNameNUL       = errors.New("name without NUL terminator")
)

// DecodeError says what was wrong and where (byte offset in the buffer).
type DecodeError struct {
	Offset int
	Err    error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("fanotify decode at byte %d: %v", e.Offset, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// Handle is a file handle from an FID info record. Key aliases the read
// buffer and is valid until the buffer is reused.
type Handle struct {
	// Key spans fsid, handle_bytes, handle_type and f_handle, exactly as
	// in the record: unique per object across filesystems, and usable as a
	// map key without copying (m[string(h.Key)]). Decode has checked its
	// length, so the accessors below cannot fail.
	Key []byte
}

// Valid reports whether the record carried this handle.
func (h *Handle) Valid() bool { return h.Key != nil }

// Fsid returns the 8 fsid bytes, native endian, as OpenMount returns them.
func (h *Handle) Fsid() uint64 { return binary.NativeEndian.Uint64(h.Key) }

// Type returns handle_type.
func (h *Handle) Type() int32 {
	return int32(binary.NativeEndian.Uint32(h.Key[fidHandleType-fidFsid:]))
}

// Bytes returns f_handle.
func (h *Handle) Bytes() []byte { return h.Key[fidHandle-fidFsid:] }

// RawEvent is one decoded kernel event. Slices alias the read buffer.
type RawEvent struct {
	Off   int // byte offset of the event in the decoded buffer
	Mask  uint64
	FD    int32 // fd mode: the event's open fd, else negative
	Pid   int32
	PidFD int32 // -1 when there is no pidfd record

	FID     Handle // FAN_EVENT_INFO_TYPE_FID: the object itself
	Dir     Handle // DFID_NAME or DFID: the parent (or the dir itself)
	Name    []byte // DFID_NAME's name; "." for an event on Dir itself
	OldDir  Handle // FAN_RENAME: OLD_DFID_NAME
	OldName []byte
	NewDir  Handle // FAN_RENAME: NEW_DFID_NAME
	NewName []byte

	// Err is set when the event's framing was sound but an info record
	// was not; the event is kept so its FD and PidFD can still be closed.
	Err error
}

// Decode appends the events in buf (one read's worth) to dst. It stops at
// the first event whose framing (version, metadata_len, event_len) is bad
// and returns the events before it with a *DecodeError: past that point
// nothing can be trusted. An event with a bad info record is returned with
// Err set and decoding goes on. Decode never panics and allocates only when
// dst must grow.
func Decode(dst []RawEvent, buf []byte) ([]RawEvent, error) {
	off := 0
	for off < len(buf) {
		rest := buf[off:]
		if len(rest) < MetadataSize {
			return dst, &DecodeError{off, ErrShortMetadata}
		}
		evLen := int(binary.NativeEndian.Uint32(rest[metaEventLen:]))
		if rest[metaVers] != MetadataVersion {
			return dst, &DecodeError{off + metaVers, ErrVersion}
		}
		mdLen := int(binary.NativeEndian.Uint16(rest[metaMetadataLen:]))
		if mdLen < MetadataSize {
			return dst, &DecodeError{off + metaMetadataLen, ErrMetadataLen}
		}
		if evLen < mdLen || evLen > len(rest) {
			return dst, &DecodeError{off + metaEventLen, ErrEventLen}
		}
		dst = append(dst, RawEvent{
			Off:   off,
			Mask:  binary.NativeEndian.Uint64(rest[metaMask:]),
			FD:    int32(binary.NativeEndian.Uint32(rest[metaFD:])),
			Pid:   int32(binary.NativeEndian.Uint32(rest[metaPid:])),
			PidFD: -1,
		})
		if evLen > mdLen {
			ev := &dst[len(dst)-1]
			if err := decodeInfo(ev, rest[mdLen:evLen]); err != nil {
				err.Offset += off + mdLen
				ev.Err = err
			}
		}
		off += evLen
	}
	return dst, nil
}

// decodeInfo walks the info records that follow the metadata. Unknown
// record types are skipped so newer kernels don't break the decoder.
func decodeInfo(ev *RawEvent, b []byte) *DecodeError {
	off := 0
	for off < len(b) {
		r := b[off:]
		if len(r) < infoHdrLen {
			return &DecodeError{off, ErrInfoHeader}
		}
		n := int(binary.NativeEndian.Uint16(r[infoLen:]))
		if n < infoHdrLen || n > len(r) {
			return &DecodeError{off + infoLen, ErrInfoLen}
		}
		r = r[:n]
		var err error
		switch r[infoType] {
		case infoTypeFID:
			_, err = decodeFID(&ev.FID, r, false)
		case infoTypeDFID:
			_, err = decodeFID(&ev.Dir, r, false)
		case infoTypeDFIDName:
			ev.Name, err = decodeFID(&ev.Dir, r, true)
		case infoTypeOldDFIDName:
			ev.OldName, err = decodeFID(&ev.OldDir, r, true)
		case infoTypeNewDFIDName:
			ev.NewName, err = decodeFID(&ev.NewDir, r, true)
		case infoTypePidFD:
			if n < pidfdLen {
				return &DecodeError{off + infoLen, ErrInfoLen}
			}
			ev.PidFD = int32(binary.NativeEndian.Uint32(r[pidfdFD:]))
		}
		if err != nil {
			var de *DecodeError
			if errors.As(err, &de) {
				de.Offset += off
				return de
			}
			return &DecodeError{off, err}
		}
		off += n
	}
	return nil
}

// decodeFID fills h from an FID-type record r (already cut to its len) and
// returns the name when withName is set.
func decodeFID(h *Handle, r []byte, withName bool) ([]byte, error) {
	if len(r) < fidHandle {
		return nil, &DecodeError{infoLen, ErrInfoLen}
	}
	hb := int(binary.NativeEndian.Uint32(r[fidHandleBytes:]))
	if hb > MaxHandleSize || fidHandle+hb > len(r) {
		return nil, &DecodeError{fidHandleBytes, ErrHandleBytes}
	}
	end := fidHandle + hb
	var name []byte
	if withName {
		tail := r[end:]
		i := bytes.IndexByte(tail, 0)
		if i < 0 {
			return nil, &DecodeError{end, ErrNameNUL}
		}
		name = tail[:i:i]
	}
	h.Key = r[fidFsid:end:end]
	return name, nil
}
