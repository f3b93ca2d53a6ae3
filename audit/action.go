package audit

// Action is what a captured event reports: one fanotify mask bit (or the
// moved pair) mapped to a name, or events_lost. It is capture's own type;
// enrichment maps it to the output record's action. One kernel event with
// several bits is split into one Event per action, in this order.
type Action uint8

// Actions.
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

// ReasonKernelOverflow is events_lost's reason for FAN_Q_OVERFLOW.
const ReasonKernelOverflow = "kernel_queue_overflow"

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

func (a Action) String() string {
	if a < numActions {
		return actionNames[a]
	}
	return "unknown"
}

// ParseAction maps an action's name back to it.
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
