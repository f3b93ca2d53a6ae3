package enrich

import (
	"github.com/fanaudit/fanaudit/audit"
	"github.com/fanaudit/fanaudit/internal/record"
)

// recordActions maps capture's actions to the record's event.action.
var recordActions = [...]record.Action{
	audit.ActionUnknown:      record.ActionUnknown,
	audit.ActionCreate:       record.ActionCreate,
	audit.ActionOpen:         record.ActionOpen,
	audit.ActionExec:         record.ActionExec,
	audit.ActionAccess:       record.ActionAccess,
	audit.ActionModify:       record.ActionModify,
	audit.ActionAttrib:       record.ActionAttrib,
	audit.ActionCloseWrite:   record.ActionCloseWrite,
	audit.ActionCloseNowrite: record.ActionCloseNowrite,
	audit.ActionRename:       record.ActionRename,
	audit.ActionMoveSelf:     record.ActionMoveSelf,
	audit.ActionDelete:       record.ActionDelete,
	audit.ActionDeleteSelf:   record.ActionDeleteSelf,
	audit.ActionEventsLost:   record.ActionEventsLost,
}

// RecordAction maps a capture action to the record's action.
func RecordAction(a audit.Action) record.Action {
	if int(a) < len(recordActions) {
		return recordActions[a]
	}
	return record.ActionUnknown
}

// CaptureActions maps the record actions a config asks for to the
// capture's, for audit.Options.Actions.
func CaptureActions(as []record.Action) []audit.Action {
	out := make([]audit.Action, 0, len(as))
	for _, a := range as {
		for ca, ra := range recordActions {
			if ra == a && audit.Action(ca) != audit.ActionUnknown {
				out = append(out, audit.Action(ca))
			}
		}
	}
	return out
}
