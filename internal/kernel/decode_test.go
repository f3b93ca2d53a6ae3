package kernel

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// ev builds one event for decoder tests.
type ev struct {
	mask    uint64
	fd, pid int32
	infos   [][]byte
	vers    byte // 0 = MetadataVersion
	mdLen   int  // 0 = MetadataSize
	lenAdj  int  // added to event_len
}

func (e ev) bytes() []byte {
	md := e.mdLen
	if md == 0 {
		md = MetadataSize
	}
	b := make([]byte, max(md, MetadataSize))
	for _, in := range e.infos {
		b = append(b, in...)
	}
	vers := e.vers
	if vers == 0 {
		vers = MetadataVersion
	}
	binary.NativeEndian.PutUint32(b[metaEventLen:], uint32(len(b)+e.lenAdj))
	b[metaVers] = vers
	binary.NativeEndian.PutUint16(b[metaMetadataLen:], uint16(md))
	binary.NativeEndian.PutUint64(b[metaMask:], e.mask)
	binary.NativeEndian.PutUint32(b[metaFD:], uint32(e.fd))
	binary.NativeEndian.PutUint32(b[metaPid:], uint32(e.pid))
	return b
}

func join(evs ...ev) []byte {
	var b []byte
	for _, e := range evs {
		b = append(b, e.bytes()...)
	}
	return b
}

// fidRec builds an FID-type info record, padded to 4 bytes like the kernel.
func fidRec(typ byte, fsid uint64, htype int32, handle []byte, name string) []byte {
	b := make([]byte, fidHandle, fidHandle+len(handle)+len(name)+4)
	b[infoType] = typ
	binary.NativeEndian.PutUint64(b[fidFsid:], fsid)
	binary.NativeEndian.PutUint32(b[fidHandleBytes:], uint32(len(handle)))
	binary.NativeEndian.PutUint32(b[fidHandleType:], uint32(htype))
	b = append(b, handle...)
	if typ == infoTypeDFIDName || typ == infoTypeOldDFIDName || typ == infoTypeNewDFIDName {
		b = append(b, name...)
		b = append(b, 0)
	}
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	binary.NativeEndian.PutUint16(b[infoLen:], uint16(len(b)))
	return b
}

func pidfdRec(fd int32) []byte {
	b := make([]byte, pidfdLen)
	b[infoType] = infoTypePidFD
	binary.NativeEndian.PutUint16(b[infoLen:], pidfdLen)
	binary.NativeEndian.PutUint32(b[pidfdFD:], uint32(fd))
	return b
}

func setLen(rec []byte, n int) []byte {
	binary.NativeEndian.PutUint16(rec[infoLen:], uint16(n))
	return rec
}

func setHandleBytes(rec []byte, n int) []byte {
	binary.NativeEndian.PutUint32(rec[fidHandleBytes:], uint32(n))
	return rec
}

func TestDecode(t *testing.T) {
	h1 := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	h2 := []byte{9, 9, 9, 9}
	dirName := fidRec(infoTypeDFIDName, 0xabc, 1, h1, "name")
	fid := fidRec(infoTypeFID, 0xabc, 1, h2, "")
	tests := []struct {
		name  string
		buf   []byte
		n     int   // events returned
		err   error // framing error, nil if none
		evErr error // Err of the last event
		check func(t *testing.T, r []RawEvent)
	}{
		{name: "empty", buf: nil, n: 0},
		{name: "overflow", buf: join(ev{mask: FanQOverflow, fd: -1}), n: 1, check: func(t *testing.T, r []RawEvent) {
			if r[0].Mask != FanQOverflow || r[0].FD != -1 || r[0].PidFD != -1 || r[0].Dir.Valid() {
				t.Errorf("%+v", r[0])
			}
		}},
		{name: "fd mode", buf: join(ev{mask: FanOpen, fd: 7, pid: 42}, ev{mask: FanCloseWrite, fd: 8, pid: 43}), n: 2, check: func(t *testing.T, r []RawEvent) {
			if r[0].FD != 7 || r[0].Pid != 42 || r[1].FD != 8 || r[1].Mask != FanCloseWrite {
				t.Errorf("%+v", r)
			}
		}},
		{name: "dfid name and fid and pidfd", buf: join(ev{mask: FanCreate, fd: -1, pid: 5, infos: [][]byte{dirName, fid, pidfdRec(11)}}), n: 1,
			check: func(t *testing.T, r []RawEvent) {
				e := r[0]
				if string(e.Name) != "name" || string(e.Dir.Bytes()) != string(h1) || e.Dir.Type() != 1 || e.Dir.Fsid() != 0xabc ||
					string(e.FID.Bytes()) != string(h2) || e.PidFD != 11 || len(e.Dir.Key) != 16+len(h1) {
					t.Errorf("%+v", e)
				}
			}},
		{name: "rename", buf: join(ev{mask: FanRename, fd: -1, infos: [][]byte{
			fidRec(infoTypeOldDFIDName, 1, 1, h1, "old"), fidRec(infoTypeNewDFIDName, 1, 1, h2, "new"), fid}}), n: 1,
			check: func(t *testing.T, r []RawEvent) {
				e := r[0]
				if string(e.OldName) != "old" || string(e.NewName) != "new" || !e.OldDir.Valid() || !e.NewDir.Valid() || e.Dir.Valid() {
					t.Errorf("%+v", e)
				}
			}},
		{name: "unknown info type skipped", buf: join(ev{mask: FanOpen, fd: -1, infos: [][]byte{{99, 0, 8, 0, 1, 2, 3, 4}, fid}}), n: 1,
			check: func(t *testing.T, r []RawEvent) {
				if !r[0].FID.Valid() || r[0].Err != nil {
					t.Errorf("%+v", r[0])
				}
			}},
		{name: "metadata longer than struct", buf: join(ev{mask: FanOpen, fd: 3, mdLen: 32}), n: 1},
		{name: "short metadata", buf: join(ev{mask: FanOpen, fd: 3})[:20], err: ErrShortMetadata},
		{name: "second event short", buf: append(join(ev{mask: FanOpen, fd: 3}), 1, 2, 3), n: 1, err: ErrShortMetadata},
		{name: "bad version", buf: join(ev{mask: FanOpen, vers: 2}), err: ErrVersion},
		{name: "metadata_len too small", buf: join(ev{mask: FanOpen, mdLen: 8}), err: ErrMetadataLen},
		{name: "event_len beyond buffer", buf: join(ev{mask: FanOpen, lenAdj: 4}), err: ErrEventLen},
		{name: "event_len below metadata_len", buf: join(ev{mask: FanOpen, lenAdj: -4}), err: ErrEventLen},
		{name: "info header truncated", buf: join(ev{mask: FanOpen, fd: 3, infos: [][]byte{{1, 0}}}), n: 1, evErr: ErrInfoHeader},
		{name: "info len zero", buf: join(ev{mask: FanOpen, fd: 3, infos: [][]byte{setLen(fidRec(infoTypeFID, 1, 1, h1, ""), 0)}}), n: 1, evErr: ErrInfoLen},
		{name: "info len beyond event", buf: join(ev{mask: FanOpen, fd: 3, infos: [][]byte{setLen(fidRec(infoTypeFID, 1, 1, h1, ""), 200)}}), n: 1, evErr: ErrInfoLen},
		{name: "fid record too short", buf: join(ev{mask: FanOpen, fd: 3, infos: [][]byte{setLen(fidRec(infoTypeFID, 1, 1, nil, ""), 12)}}), n: 1, evErr: ErrInfoLen},
		{name: "pidfd record too short", buf: join(ev{mask: FanOpen, fd: 3, infos: [][]byte{{infoTypePidFD, 0, 4, 0}}}), n: 1, evErr: ErrInfoLen},
		{name: "handle_bytes beyond record", buf: join(ev{mask: FanOpen, fd: 3, infos: [][]byte{setHandleBytes(fidRec(infoTypeFID, 1, 1, h1, ""), 9)}}), n: 1, evErr: ErrHandleBytes},
		{name: "handle_bytes over MAX_HANDLE_SZ", buf: join(ev{mask: FanOpen, fd: 3, infos: [][]byte{setHandleBytes(fidRec(infoTypeFID, 1, 1, make([]byte, 200), ""), 200)}}), n: 1, evErr: ErrHandleBytes},
		{name: "name without NUL", buf: join(ev{mask: FanCreate, fd: -1, infos: [][]byte{noNUL(fidRec(infoTypeDFIDName, 1, 1, h1, "abc"))}}), n: 1, evErr: ErrNameNUL},
		{name: "bad event then good", buf: join(ev{mask: FanOpen, fd: 3, infos: [][]byte{{1, 0}}}, ev{mask: FanModify, fd: 4}), n: 2,
			check: func(t *testing.T, r []RawEvent) {
				if r[0].Err == nil || r[0].FD != 3 || r[1].Err != nil || r[1].FD != 4 {
					t.Errorf("%+v", r)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Decode(nil, tt.buf)
			if len(r) != tt.n {
				t.Fatalf("%d events, want %d (err %v)", len(r), tt.n, err)
			}
			if !errors.Is(err, tt.err) || (err == nil) != (tt.err == nil) {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			var de *DecodeError
			if err != nil && !errors.As(err, &de) {
				t.Fatalf("err %T is not a *DecodeError", err)
			}
			if tt.evErr != nil {
				if !errors.Is(r[len(r)-1].Err, tt.evErr) {
					t.Fatalf("event err %v, want %v", r[len(r)-1].Err, tt.evErr)
				}
			} else if tt.check == nil {
				for _, e := range r {
					if e.Err != nil {
						t.Fatalf("event err %v", e.Err)
					}
				}
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
}

// noNUL overwrites the name's terminator and padding.
func noNUL(rec []byte) []byte {
	for i := fidHandle + int(binary.NativeEndian.Uint32(rec[fidHandleBytes:])); i < len(rec); i++ {
		if rec[i] == 0 {
			rec[i] = 'x'
		}
	}
	return rec
}

// FuzzDecode: the decoder never panics, and what it returns stays inside
// the buffer and is consistent with the lengths it checked. The seeds in
// testdata/fuzz/FuzzDecode are buffers captured from real reads
// (go test ./internal/kernel -run TestCaptureSeeds -capture, as root).
func FuzzDecode(f *testing.F) {
	f.Add(join(ev{mask: FanQOverflow, fd: -1}))
	f.Add(join(ev{mask: FanCreate, fd: -1, infos: [][]byte{fidRec(infoTypeDFIDName, 1, 1, []byte{1, 2, 3, 4, 5, 6, 7, 8}, "n"), fidRec(infoTypeFID, 1, 1, []byte{1, 2, 3, 4}, ""), pidfdRec(3)}}))
	f.Fuzz(func(t *testing.T, buf []byte) {
		r, err := Decode(nil, buf)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) || de.Offset < 0 || de.Offset > len(buf) {
				t.Fatalf("bad error %#v", err)
			}
		}
		for _, e := range r {
			for _, h := range []Handle{e.FID, e.Dir, e.OldDir, e.NewDir} {
				if h.Valid() && (len(h.Bytes()) > MaxHandleSize || len(h.Key) != 8+8+int(binary.NativeEndian.Uint32(h.Key[8:]))) {
					t.Fatalf("bad handle %+v", h)
				}
			}
		}
		if len(r) > len(buf)/MetadataSize {
			t.Fatalf("%d events from %d bytes", len(r), len(buf))
		}
	})
}

// BenchmarkDecode decodes the captured real buffers; ns/op and allocs
// are per event (b.N counts events).
func BenchmarkDecode(b *testing.B) {
	files, _ := filepath.Glob("testdata/fuzz/FuzzDecode/*")
	var bufs [][]byte
	for _, f := range files {
		if buf, err := readSeed(f); err == nil {
			bufs = append(bufs, buf)
		}
	}
	if len(bufs) == 0 {
		b.Skip("no seeds")
	}
	var all []byte
	for _, buf := range bufs {
		if _, err := Decode(nil, buf); err == nil {
			all = append(all, buf...)
		}
	}
	for len(all) < 200<<10 {
		all = append(all, all...)
	}
	events, _ := Decode(nil, all)
	n := len(events)
	b.SetBytes(int64(len(all) / n))
	b.ReportAllocs()
	b.ResetTimer()
	dst := make([]RawEvent, 0, n)
	for i := 0; i < b.N; i += n {
		var err error
		dst, err = Decode(dst[:0], all)
		if err != nil {
			b.Fatal(err)
		}
	}
}

var _ = os.Getpid
