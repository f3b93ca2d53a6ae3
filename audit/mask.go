package audit

import (
	"github.com/fanaudit/fanaudit/internal/kernel"
)

// actionBits maps each file action to the kernel mask bits that report
// it, in Action order, which is also the order split events are
// emitted in. rename lists FAN_RENAME and, for kernels before 5.17, the
// moved_from/moved_to pair.
var actionBits = [...]struct {
	action Action
	bits   uint64
}{
	{ActionCreate, kernel.FanCreate},
	{ActionOpen, kernel.FanOpen},
	{ActionExec, kernel.FanOpenExec},
	{ActionAccess, kernel.FanAccess},
	{ActionModify, kernel.FanModify},
	{ActionAttrib, kernel.FanAttrib},
	{ActionCloseWrite, kernel.FanCloseWrite},
	{ActionCloseNowrite, kernel.FanCloseNowrite},
	{ActionRename, kernel.FanRename | kernel.FanMovedFrom | kernel.FanMovedTo},
	{ActionMoveSelf, kernel.FanMoveSelf},
	{ActionDelete, kernel.FanDelete},
	{ActionDeleteSelf, kernel.FanDeleteSelf},
}

// fdModeBits are the events a group without FID reporting can deliver.
const fdModeBits = kernel.FanOpen | kernel.FanOpenExec | kernel.FanAccess | kernel.FanModify |
	kernel.FanCloseWrite | kernel.FanCloseNowrite

// allActionBits are all bits that map to an action.
const allActionBits = kernel.FanCreate | kernel.FanOpen | kernel.FanOpenExec | kernel.FanAccess |
	kernel.FanModify | kernel.FanAttrib | kernel.FanCloseWrite | kernel.FanCloseNowrite |
	kernel.FanRename | kernel.FanMovedFrom | kernel.FanMovedTo | kernel.FanMoveSelf |
	kernel.FanDelete | kernel.FanDeleteSelf

// dirEntryBits are reported on the parent directory only.
const dirEntryBits = kernel.FanCreate | kernel.FanDelete | kernel.FanRename | kernel.FanMovedFrom | kernel.FanMovedTo

// actionSet is a set of Action values.
type actionSet uint32

func (s actionSet) has(a Action) bool { return s&(1<<a) != 0 }

func setOf(actions []Action) actionSet {
	var s actionSet
	for _, a := range actions {
		s |= 1 << a
	}
	return s
}

// markMask returns the mask a group asks the kernel for: only the bits
// for wanted actions, plus bookkeeping bits that keep paths right:
// FAN_RENAME so directory renames update the handle→path cache, and
// FAN_DELETE so delete_self of a file can be named from the delete record
// (see Capture.unlinkedName).
// Events for bookkeeping bits that aren't wanted are counted as filtered.
func markMask(want actionSet, ft kernel.Features, fdMode bool) uint64 {
	var m uint64
	for _, ab := range actionBits {
		if !want.has(ab.action) {
			continue
		}
		b := ab.bits
		if ab.action == ActionRename {
			if ft.Rename {
				b = kernel.FanRename
			} else {
				b = kernel.FanMovedFrom | kernel.FanMovedTo
			}
		}
		m |= b
	}
	if fdMode {
		m &= fdModeBits
	} else if m != 0 {
		if ft.Rename {
			m |= kernel.FanRename
		}
		if want.has(ActionDeleteSelf) {
			m |= kernel.FanDelete
		}
	}
	if m != 0 {
		m |= kernel.FanOnDir
	}
	return m
}

// echoActions are the kernel's echoes of an operation reported on its own
// record: the link count attrib and the delete_self after an unlink (or a
// rename over the object), the move_self after a rename.
const echoActions = actionSet(1<<ActionAttrib | 1<<ActionDeleteSelf | 1<<ActionMoveSelf)

// foldable returns the actions to report and the echoes to fold: an echo
// is reported raw only when the caller asked for it by name (explicit).
// delete_self and move_self are never anything but echoes, so folding
// them means not asking the kernel for them; attrib also reports chmod and
// the like, so only its link-count events are folded (see Capture.emit).
func foldable(want, explicit actionSet) (actionSet, actionSet) {
	fold := want & echoActions &^ explicit
	return want &^ (fold &^ (1 << ActionAttrib)), fold
}
