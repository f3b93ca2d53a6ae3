package audit

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/internal/kernel"
)

// hkey builds a handle the way a record lays it out: fsid, handle_bytes,
// handle_type, f_handle.
func hkey(id byte) kernel.Handle {
	k := make([]byte, 16, 20)
	binary.NativeEndian.PutUint64(k, 0x1234)
	binary.NativeEndian.PutUint32(k[8:], 4)
	binary.NativeEndian.PutUint32(k[12:], 1)
	return kernel.Handle{Key: append(k, id, id, id, id)}
}

// TestConvert runs the naming, splitting and filtering logic on synthetic
// decoded events, without a kernel: every directory handle is cached and
// the capture has no mount fd, so nothing is resolved by syscall.
func TestConvert(t *testing.T) {
	const self = 999
	d1, d2, out, sub, deep, x := hkey(1), hkey(2), hkey(3), hkey(4), hkey(5), hkey(6)
	ev := func(mask uint64, pid int32, dir kernel.Handle, name string) kernel.RawEvent {
		r := kernel.RawEvent{Mask: mask, Pid: pid, FD: -1, PidFD: -1, Dir: dir}
		if dir.Valid() {
			r.Name = []byte(name)
		}
		return r
	}
	withFID := func(r kernel.RawEvent, h kernel.Handle) kernel.RawEvent { r.FID = h; return r }
	rename := func(mask uint64, od kernel.Handle, on string, nd kernel.Handle, nn string) kernel.RawEvent {
		return kernel.RawEvent{Mask: mask, Pid: 7, FD: -1, PidFD: -1, OldDir: od, OldName: []byte(on), NewDir: nd, NewName: []byte(nn)}
	}
	tests := []struct {
		name     string
		noRename bool // kernel without FAN_RENAME
		raw      []kernel.RawEvent
		derr     error
		want     []string
	}{
		{
			name: "merged mask splits in action order",
			raw:  []kernel.RawEvent{ev(kernel.FanCloseWrite|kernel.FanModify|kernel.FanOpen|kernel.FanCreate, 7, d1, "f")},
			want: []string{"create /m/d1/f 7", "open /m/d1/f 7", "modify /m/d1/f 7", "close_write /m/d1/f 7"},
		},
		{
			name: "open with open_exec is exec",
			raw:  []kernel.RawEvent{ev(kernel.FanOpen|kernel.FanOpenExec, 7, d1, "bin")},
			want: []string{"exec /m/d1/bin 7"},
		},
		{
			name: "rename",
			raw:  []kernel.RawEvent{rename(kernel.FanRename, d1, "a", d2, "b")},
			want: []string{"rename /m/d2/b <- /m/d1/a 7"},
		},
		{
			name: "move_self named from the rename just before it",
			raw: []kernel.RawEvent{
				withFID(rename(kernel.FanRename, d1, "a", d2, "b"), x),
				withFID(ev(kernel.FanMoveSelf, 7, kernel.Handle{}, ""), x),
			},
			want: []string{"rename /m/d2/b <- /m/d1/a 7", "move_self /m/d2/b 7"},
		},
		{
			name:     "moved_from and moved_to pair into one rename",
			noRename: true,
			raw:      []kernel.RawEvent{ev(kernel.FanMovedFrom, 7, d1, "a"), ev(kernel.FanMovedTo, 7, d2, "b")},
			want:     []string{"rename /m/d2/b <- /m/d1/a 7"},
		},
		{
			name:     "unpaired moved_from and moved_to",
			noRename: true,
			raw:      []kernel.RawEvent{ev(kernel.FanMovedFrom, 7, d1, "a"), ev(kernel.FanMovedTo, 8, d2, "b")},
			want:     []string{"rename  <- /m/d1/a 7", "rename /m/d2/b <-  8"},
		},
		{
			name: "agent's own events are dropped, its delete_self kept without pid",
			raw: []kernel.RawEvent{
				ev(kernel.FanCreate, self, d1, "mine"),
				withFID(ev(kernel.FanAttrib|kernel.FanDeleteSelf, self, kernel.Handle{}, ""), x),
				withFID(ev(kernel.FanDelete, 7, d1, "x"), x),
			},
			want: []string{"delete_self /m/d1/x 0", "delete /m/d1/x 7"},
		},
		{
			name: "delete_self named from a delete that came first",
			raw: []kernel.RawEvent{
				withFID(ev(kernel.FanDelete, 7, d1, "x"), x),
				ev(kernel.FanOpen, 7, d1, "other"),
				ev(kernel.FanOpen, 7, d1, "other2"),
				withFID(ev(kernel.FanDeleteSelf, 8, kernel.Handle{}, ""), x),
			},
			want: []string{"delete /m/d1/x 7", "open /m/d1/other 7", "open /m/d1/other2 7", "delete_self /m/d1/x 8"},
		},
		{
			name: "attrib of a file whose delete came first",
			raw: []kernel.RawEvent{
				withFID(ev(kernel.FanCreate|kernel.FanDelete, 7, d1, "x"), x),
				withFID(ev(kernel.FanAttrib, 7, kernel.Handle{}, ""), x),
				withFID(ev(kernel.FanDeleteSelf, 7, kernel.Handle{}, ""), x),
			},
			want: []string{"create /m/d1/x 7", "delete /m/d1/x 7", "attrib /m/d1/x 7", "delete_self /m/d1/x 7"},
		},
		{
			name: "overflow and malformed events become events_lost",
			raw: []kernel.RawEvent{
				{Mask: kernel.FanQOverflow, FD: -1, PidFD: -1},
				{Mask: kernel.FanOpen, FD: -1, PidFD: -1, Err: errors.New("bad")},
			},
			derr: errors.New("framing"),
			want: []string{"events_lost kernel_queue_overflow", "events_lost decode_error", "events_lost decode_error"},
		},
		{
			name: "out of scope and ignored paths are filtered",
			raw:  []kernel.RawEvent{ev(kernel.FanOpen, 7, out, "f"), ev(kernel.FanOpen, 7, d1, "ignored")},
		},
		{
			name: "unresolvable directory keeps the event with an empty path",
			raw:  []kernel.RawEvent{ev(kernel.FanOpen, 7, hkey(99), "f")},
			want: []string{"open  7"},
		},
		{
			name: "directory rename moves cached subtree",
			raw: []kernel.RawEvent{
				withFID(rename(kernel.FanRename|kernel.FanOnDir, d1, "sub", d2, "sub2"), sub),
				ev(kernel.FanCreate, 7, sub, "f"),
				ev(kernel.FanCreate, 7, deep, "g"),
			},
			want: []string{"rename /m/d2/sub2 <- /m/d1/sub 7 dir", "create /m/d2/sub2/f 7", "create /m/d2/sub2/deeper/g 7"},
		},
		{
			name: "rm -rf of an uncached tree: children named by their directory's delete",
			raw: []kernel.RawEvent{
				withFID(ev(kernel.FanDelete, 7, hkey(20), "f"), hkey(30)),
				withFID(ev(kernel.FanDelete|kernel.FanOnDir, 7, hkey(21), "c"), hkey(20)),
				withFID(ev(kernel.FanDelete, 7, hkey(21), "g"), hkey(31)),
				ev(kernel.FanOpen, 7, d1, "unrelated"),
				withFID(ev(kernel.FanDelete|kernel.FanOnDir, 7, d1, "b"), hkey(21)),
			},
			want: []string{"open /m/d1/unrelated 7", "delete /m/d1/b/c/f 7", "delete /m/d1/b/c 7 dir", "delete /m/d1/b/g 7", "delete /m/d1/b 7 dir"},
		},
		{
			name: "merged delete_self of a cached directory keeps the cache for its children",
			raw: []kernel.RawEvent{
				withFID(ev(kernel.FanOpen|kernel.FanDeleteSelf|kernel.FanOnDir, 7, sub, "."), sub),
				withFID(ev(kernel.FanDelete, 7, sub, "f"), hkey(30)),
				withFID(ev(kernel.FanDelete|kernel.FanOnDir, 7, d1, "sub"), sub),
			},
			want: []string{"open /m/d1/sub 7 dir", "delete_self /m/d1/sub 7 dir", "delete /m/d1/sub/f 7", "delete /m/d1/sub 7 dir"},
		},
		{
			name: "directory through a temporary directory, then removed: delete_self has the final name",
			raw: []kernel.RawEvent{
				withFID(rename(kernel.FanRename|kernel.FanOnDir, d1, "s", d2, "s"), hkey(40)),
				withFID(ev(kernel.FanMoveSelf|kernel.FanDeleteSelf|kernel.FanOnDir, 7, kernel.Handle{}, ""), hkey(40)),
				withFID(rename(kernel.FanRename|kernel.FanOnDir, d2, "s", d1, "final"), hkey(40)),
				withFID(ev(kernel.FanDelete|kernel.FanOnDir, 7, d1, "final"), hkey(40)),
			},
			want: []string{"rename /m/d2/s <- /m/d1/s 7 dir", "move_self /m/d1/final 7 dir", "delete_self /m/d1/final 7 dir",
				"rename /m/d1/final <- /m/d2/s 7 dir", "delete /m/d1/final 7 dir"},
		},
		{
			name: "rename over a file names the replaced inode",
			raw: []kernel.RawEvent{
				withFID(rename(kernel.FanRename, d1, "t.tmp", d1, "t"), x),
				withFID(ev(kernel.FanAttrib, 7, kernel.Handle{}, ""), hkey(41)),
				withFID(ev(kernel.FanMoveSelf, 7, kernel.Handle{}, ""), x),
				withFID(ev(kernel.FanDeleteSelf, 7, kernel.Handle{}, ""), hkey(41)),
			},
			want: []string{"rename /m/d1/t <- /m/d1/t.tmp 7", "attrib /m/d1/t 7", "move_self /m/d1/t 7", "delete_self /m/d1/t 7"},
		},
		{
			name: "hardlinks: delete_self has the name last unlinked",
			raw: []kernel.RawEvent{
				withFID(ev(kernel.FanAttrib, 7, kernel.Handle{}, ""), x),
				withFID(ev(kernel.FanDelete, 7, d1, "b"), x),
				withFID(ev(kernel.FanAttrib|kernel.FanDeleteSelf, 7, kernel.Handle{}, ""), x),
				withFID(ev(kernel.FanDelete, 7, d1, "a"), x),
			},
			want: []string{"attrib /m/d1/b 7", "delete /m/d1/b 7", "attrib /m/d1/a 7", "delete_self /m/d1/a 7", "delete /m/d1/a 7"},
		},
		{
			// Both subtrees are forgotten: here nothing can resolve them
			// again (no mount fd); TestNames checks the real names.
			name: "RENAME_EXCHANGE of two directories forgets their subtrees",
			raw: []kernel.RawEvent{
				withFID(rename(kernel.FanRename|kernel.FanOnDir, d1, "sub", d1, "other"), sub),
				withFID(rename(kernel.FanRename|kernel.FanOnDir, d1, "other", d1, "sub"), hkey(42)),
				ev(kernel.FanCreate, 7, deep, "g"),
				ev(kernel.FanCreate, 7, hkey(43), "h"),
			},
			want: []string{"rename /m/d1/other <- /m/d1/sub 7 dir", "rename /m/d1/sub <- /m/d1/other 7 dir",
				"create  7", "create  7"},
		},
		{
			name:     "directory moved_from/moved_to pair moves cached subtree",
			noRename: true,
			raw: []kernel.RawEvent{
				ev(kernel.FanMovedFrom|kernel.FanOnDir, 7, d1, "sub"), ev(kernel.FanMovedTo|kernel.FanOnDir, 7, d2, "sub2"),
				ev(kernel.FanCreate, 7, sub, "f"),
			},
			want: []string{"rename /m/d2/sub2 <- /m/d1/sub 7 dir", "create /m/d2/sub2/f 7"},
		},
	}
	h43 := hkey(43)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Capture{
				log:   zerolog.Nop(),
				feat:  kernel.Features{FID: true, TargetFID: !tt.noRename, Rename: !tt.noRename},
				want:  setOf(FileActions()),
				dirs:  newPathCache(16),
				gone:  newPathCache(16),
				scope: scope{roots: []string{"/m"}, ignore: []string{"/m/d1/ignored"}},
				self:  self,
			}
			for h, p := range map[*kernel.Handle]string{&d1: "/m/d1", &d2: "/m/d2", &out: "/elsewhere", &sub: "/m/d1/sub", &deep: "/m/d1/sub/deeper", &h43: "/m/d1/other/x"} {
				c.dirs.put(h.Key, p)
			}
			var got []string
			evs := c.convert(tt.raw, tt.raw, tt.derr, time.Unix(1, 0))
			evs = append(evs, c.flushHeld()...) // the queue ran empty
			for _, e := range evs {
				s := e.Action.String()
				switch {
				case e.Action == ActionEventsLost:
					s += " " + e.LostReason
				default:
					s += " " + e.Path
					if e.Action == ActionRename {
						s += " <- " + e.OldPath
					}
					s += " " + itoa(int(e.Pid))
					if e.Dir {
						s += " dir"
					}
				}
				if e.PidFD != -1 {
					t.Errorf("%s: PidFD %d", s, e.PidFD)
				}
				got = append(got, s)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("events:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestHoldFrom(t *testing.T) {
	x, d := hkey(6), hkey(1)
	open := kernel.RawEvent{Mask: kernel.FanOpen, Dir: d, Name: []byte("a")}
	gone := kernel.RawEvent{Mask: kernel.FanAttrib | kernel.FanDeleteSelf, FID: x}
	del := kernel.RawEvent{Mask: kernel.FanDelete, Dir: d, Name: []byte("x"), FID: x}
	tests := []struct {
		name string
		raw  []kernel.RawEvent
		mask uint64
		want int
	}{
		{"named by a later delete", []kernel.RawEvent{open, gone, del}, kernel.FanDelete, 3},
		{"delete not read yet", []kernel.RawEvent{open, gone}, kernel.FanDelete, 1},
		{"held with what follows", []kernel.RawEvent{gone, open}, kernel.FanDelete, 0},
		{"no delete asked for", []kernel.RawEvent{open, gone}, kernel.FanDeleteSelf, 2},
		{"nothing to hold", []kernel.RawEvent{open, open}, kernel.FanDelete, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Capture{feat: kernel.Features{FID: true, TargetFID: true}, mask: tt.mask, gone: newPathCache(4)}
			if got := c.holdFrom(tt.raw); got != tt.want {
				t.Fatalf("holdFrom = %d, want %d", got, tt.want)
			}
		})
	}
}
