package enrich

import (
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/audit"
)

type dbgObs struct {
	mu     sync.Mutex
	delays []time.Duration
	alive  map[string]int
}

func (d *dbgObs) Observe(ev *audit.Event) {
	dl := time.Since(ev.Time)
	_, err := os.Stat("/proc/" + strconv.Itoa(int(ev.Pid)) + "/stat")
	d.mu.Lock()
	d.delays = append(d.delays, dl)
	k := ev.Action.String()
	if err == nil {
		k += "-alive"
	} else {
		k += "-gone"
	}
	d.alive[k]++
	d.mu.Unlock()
}

func TestDebugLatency(t *testing.T) {
	_ = runAttribution
	t.Skip()
}

func TestDebugLatency2(t *testing.T) {
	dbg = &dbgObs{alive: map[string]int{}}
	defer func() { dbg = nil }()
	a := runAttribution(t, variant{name: "x", observe: true, exec: true}, 0, 500)
	t.Logf("%+v", a.right)
	var max, sum time.Duration
	for _, d := range dbg.delays {
		sum += d
		if d > max {
			max = d
		}
	}
	t.Logf("n=%d avg=%v max=%v alive=%v", len(dbg.delays), sum/time.Duration(len(dbg.delays)), max, dbg.alive)
}
