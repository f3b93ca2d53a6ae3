package bench

import (
	"strings"
	"testing"
)

// sample is a usable live sample of a run with n files.
func sample(round int, elapsed, cpu float64, n int, c Counts) Sample {
	return Sample{Round: round, WL: WLResult{N: int64(n), Ops: int64(n) * 11 / 2, Elapsed: elapsed}, CPU: cpu, MaxRSSKiB: 32 << 10, Counts: c}
}

func fullCounts(n int) Counts {
	c := newCounts()
	for op, v := range Expected(n, 1) {
		c.Ops[op] = v
	}
	return c
}

// burst sets the agent sibling row's burst check: missing ops, announced.
func burst(r *Report, missing, announced uint64) *Report {
	for _, c := range r.Sibling {
		if c.Name != nameSibAgent {
			continue
		}
		for i := range c.Samples {
			c.Samples[i].BurstOps = 10
			c.Samples[i].BurstMissing, c.Samples[i].BurstAnnounced = missing, announced
		}
	}
	return r
}

// TestTargetVerdicts checks that verdicts follow the figures of the run:
// the same report flips from PASS to FAIL when one figure moves.
func TestTargetVerdicts(t *testing.T) {
	const n = 1000
	build := func(agentElapsed, kafkaCPU float64, lost bool, scopeMissing uint64) *Report {
		r := &Report{N: n, Block: 1, Rounds: 3, ScopeFiles: 10}
		cfg := func(name string) *ConfigResult { return &ConfigResult{Name: name, Ops: allOps} }
		none, ref, run, watch, kafka := cfg(nameNone), cfg(nameRef), cfg(nameFile), cfg(nameWatch), cfg(nameKafka)
		none.Ops = nil
		sNone, sAgent := cfg(nameSibNone), cfg(nameSibAgent)
		for round := 1; round <= 3; round++ {
			none.Samples = append(none.Samples, sample(round, 1, 0, n, newCounts()))
			ref.Samples = append(ref.Samples, sample(round, 1.3, 0.1, n, fullCounts(n)))
			agent := fullCounts(n)
			if lost && round == 2 {
				agent.Ops[OpDelete]--
				agent.Overflows, agent.LossReports = 1, 1
			}
			run.Samples = append(run.Samples, sample(round, agentElapsed, 0.004, n, agent))
			watch.Samples = append(watch.Samples, sample(round, agentElapsed, 0.004, n, fullCounts(n)))
			kafka.Samples = append(kafka.Samples, sample(round, agentElapsed, kafkaCPU, n, fullCounts(n)))
			sNone.Samples = append(sNone.Samples, sample(round, 1, 0, n, newCounts()))
			s := sample(round, 1.01, 0.01, n, newCounts())
			s.ScopeChecked, s.ScopeOps, s.ScopeMissing = true, 110, scopeMissing
			sAgent.Samples = append(sAgent.Samples, s)
		}
		r.Live = []*ConfigResult{none, ref, run, watch, kafka}
		r.Sibling = []*ConfigResult{sNone, sAgent}
		r.SealNA = "n/a: sealing not on main (fanaudit has no seal-keygen command)"
		return r
	}
	// verdicts maps a target's prefix to the verdicts of the rows that
	// start with it.
	verdicts := func(r *Report) func(prefix string) string {
		rows := r.targetRows()
		return func(prefix string) string {
			var vs []string
			for _, row := range rows {
				if strings.HasPrefix(row.target, prefix) {
					vs = append(vs, row.verdict)
				}
			}
			return strings.Join(vs, ", ")
		}
	}
	good := verdicts(build(1.3, 0.005, false, 0))
	tests := []struct {
		name   string
		r      *Report
		target string // prefix of the target that flips
	}{
		{"slower than the reference", build(1.5, 0.005, false, 0), "live slowdown"},
		{"kafka CPU", build(1.3, 0.007, false, 0), "Kafka sink: agent CPU"},
		{"a lost op", build(1.3, 0.005, true, 0), "0 ops lost"},
		{"an unreported op in the subtree", build(1.3, 0.005, false, 1), "unwatched sibling"},
		{"a silent burst op", burst(build(1.3, 0.005, false, 0), 5, 4), "unwatched sibling"},
	}
	// Burst ops missing but announced by unwatched_window keep the verdict.
	if v := verdicts(burst(build(1.3, 0.005, false, 0), 5, 5))("unwatched sibling"); !strings.Contains(v, "PASS") {
		t.Errorf("burst ops missing and announced: %q, want PASS", v)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if v := good(tt.target); v == "" || strings.Contains(v, "FAIL") || strings.Contains(v, "not") {
				t.Fatalf("baseline %q = %q, want PASS", tt.target, v)
			}
			if got := verdicts(tt.r)(tt.target); !strings.Contains(got, "FAIL") {
				t.Errorf("%q = %q, want FAIL", tt.target, got)
			}
		})
	}
	if v := good("sealing"); !strings.HasPrefix(v, "n/a: sealing not on main") {
		t.Errorf("sealing verdict %q, want n/a", v)
	}
	if v := good("drain"); v != notMeasured {
		t.Errorf("drain verdict %q, want %q", v, notMeasured)
	}
}
