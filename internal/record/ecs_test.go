package record

import (
	"testing"

	"github.com/fanaudit/fanaudit/internal/ecs"
)

// TestECSConformance checks every golden record, and every action, against
// the ECS field table: 0 deviations. The agent's real records are checked
// the same way in e2e (TestFormatsMixedWorkload).
func TestECSConformance(t *testing.T) {
	tab, err := ecs.Table()
	if err != nil {
		t.Fatal(err)
	}
	recs := goldenCases()
	for _, a := range append(FileActions(), ActionEventsLost) {
		r := fullRecord()
		r.Action = a
		recs = append(recs, struct {
			name string
			rec  Record
		}{a.String(), r})
	}
	for _, tc := range recs {
		m, err := ecs.Decode(encode(&tc.rec))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		for _, d := range ecs.Check(tab, m) {
			t.Errorf("%s: %s", tc.name, d)
		}
	}
}
