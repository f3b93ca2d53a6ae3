package bench

import (
	"fmt"
	"strings"
)

// targetRow is one line of the Targets table. Every verdict is computed
// from this run's samples (medians of the per-round figures, or the worst
// round where a target says "0"), never written in.
type targetRow struct {
	issue, target, measured, ref, verdict string
}

const (
	notMeasured = "not measured"
	targetRSS   = 64.0 // MiB
)

func verdict(ok bool) string {
	if ok {
		return "**PASS**"
	}
	return "**FAIL**"
}

// opsPerCPU is operations captured per CPU-second of the monitor, in M.
func opsPerCPU(s Sample) (float64, bool) {
	return float64(s.Counts.total()) / s.CPU / 1e6, s.CPU > 0
}

// drainOps is operations per second of a drain, in M.
func drainOps(s Sample) (float64, bool) {
	return float64(s.Counts.total()) / s.DrainS / 1e6, s.DrainS > 0
}

func cpuOf(s Sample) (float64, bool) { return s.CPU, s.CPU > 0 }

// cpuPerOp is the monitor's CPU per operation captured: a configuration
// that loses operations does not look cheaper for it.
func cpuPerOp(s Sample) (float64, bool) {
	t := s.Counts.total()
	return s.CPU / float64(t), s.CPU > 0 && t > 0
}

func opsTotal(s Sample) (float64, bool) { return float64(s.Counts.total()), true }

func rssOf(s Sample) (float64, bool) { return mib(s.MaxRSSKiB), s.MaxRSSKiB > 0 }

// lossCheck is the worst round of a "0 ops lost, no overflow" target.
type lossCheck struct {
	rounds, failed               int
	missing, lost, overflows, nr uint64
}

func (r *Report) losses(c *ConfigResult) lossCheck {
	var lc lossCheck
	for _, s := range c.Samples {
		lc.rounds++
		if s.Err != "" {
			lc.failed++
			continue
		}
		lc.missing = max(lc.missing, Missing(s.Counts, c.Ops, int(s.WL.N), r.Block))
		lc.lost = max(lc.lost, s.Counts.Lost)
		lc.overflows = max(lc.overflows, s.Counts.Overflows)
		lc.nr = max(lc.nr, s.Counts.LossReports-s.Counts.Restarts)
	}
	return lc
}

func (lc lossCheck) ok() bool {
	return lc.rounds > 0 && lc.failed == 0 && lc.missing == 0 && lc.lost == 0 && lc.overflows == 0 && lc.nr == 0
}

func (lc lossCheck) String() string {
	s := fmt.Sprintf("worst of %d rounds: %d ops missing, %d records announced lost in %d loss records, %d kernel overflows",
		lc.rounds, lc.missing, lc.lost, lc.nr, lc.overflows)
	if lc.failed > 0 {
		s += fmt.Sprintf("; %d rounds failed", lc.failed)
	}
	return s
}

// targetRows computes the verdicts of issues #14, #13 and #16.
func (r *Report) targetRows() []targetRow {
	var rows []targetRow
	add := func(issue, target, measured, ref, v string) {
		rows = append(rows, targetRow{issue, target, measured, ref, v})
	}
	ref := r.find(r.Live, nameRef)
	run := r.find(r.Live, nameFile)
	watch := r.find(r.Live, nameWatch)
	agents := []*ConfigResult{run, watch}
	label := map[*ConfigResult]string{run: "run", watch: "watch"}
	measuredAll := func(format string, f func(c *ConfigResult) Stat) (cells []string, stats []Stat) {
		for _, c := range agents {
			if c == nil {
				continue
			}
			st := f(c)
			stats = append(stats, st)
			cells = append(cells, label[c]+" "+st.fmt(format))
		}
		return cells, stats
	}
	allOK := func(stats []Stat, ok func(Stat) bool) string {
		if len(stats) == 0 {
			return notMeasured
		}
		for _, st := range stats {
			if st.N == 0 {
				return notMeasured
			}
			if !ok(st) {
				return verdict(false)
			}
		}
		return verdict(true)
	}
	// statRow adds a #14 row of one statistic of every agent
	// configuration, with the reference reader's beside it.
	statRow := func(target, format, unit string, of func(*ConfigResult) Stat, ok func(Stat) bool, also ...*ConfigResult) {
		cells, stats := measuredAll(format, of)
		measured := notMeasured
		if len(cells) > 0 {
			measured = strings.Join(cells, ", ") + " " + unit
		}
		refCell := "—"
		if ref != nil {
			refCell = of(ref).fmt(format) + " " + unit
		}
		for _, c := range also {
			if c != nil {
				refCell += "; `" + c.Name + "` (the same work in C): " + of(c).fmt(format) + " " + unit + ", " + r.losses(c).String()
			}
		}
		add("#14", target, measured, refCell, allOK(stats, ok))
	}

	// #14: live slowdown against the reference reader's.
	{
		rel, stats := measuredAll("%.2f", func(c *ConfigResult) Stat { return r.relSlowdown(c, ref) })
		measured, refCell := notMeasured, "—"
		if ref != nil {
			refCell = "`fanread " + strings.Join(refArgs, " ") + " -S 1000`: " + r.slowdown(ref).fmt("%.2f") + "×"
			if w := r.find(r.Live, nameRefWork); w != nil {
				refCell += "; `" + w.Name + "` (the same work in C): " + r.slowdown(w).fmt("%.2f") + "×, " + r.relSlowdown(w, ref).fmt("%.2f") + " × the reference's"
			}
			var abs []string
			for _, c := range agents {
				if c != nil {
					abs = append(abs, label[c]+" "+r.slowdown(c).fmt("%.2f")+"×")
				}
			}
			if len(abs) > 0 {
				measured = strings.Join(abs, ", ") + "; that is " + strings.Join(rel, ", ") + " × the reference's"
			}
		} else {
			stats = nil
		}
		add("#14", "live slowdown ≤ 1.05 × that of `fanread -m dfid_name_target -e full -S 1000`", measured, refCell,
			allOK(stats, func(s Stat) bool { return s.Med <= 1.05 }))
	}
	// #14: agent CPU per operation, live; beside it, the C reader doing
	// the same work (paths, /proc, JSON to a file), the floor to read it
	// against.
	statRow("agent CPU ≥ 1.0 M ops per CPU-second, live", "%.2f", "M ops per CPU-s",
		func(c *ConfigResult) Stat { return c.stat(opsPerCPU) }, func(s Stat) bool { return s.Med >= 1.0 },
		r.find(r.Live, nameRefWork))
	// #14: drain against the C reader with paths, /proc and JSON.
	{
		fd, rd := r.find(r.Drain, nameFileDrain), r.find(r.Drain, nameRefDrain)
		measured, refCell, v := notMeasured, "—", notMeasured
		if rd != nil {
			refCell = "`fanread " + strings.Join(refArgs, " ") + " -r -p -C -o FILE -D -u`: " + rd.stat(drainOps).fmt("%.2f") + " M ops/s"
		}
		if fd != nil && rd != nil {
			ratio := paired(fd, rd, drainOps)
			if ratio.N > 0 {
				measured = fd.stat(drainOps).fmt("%.2f") + " M ops/s, " + ratio.fmt("%.2f") + " × the reference's"
				v = verdict(ratio.Med >= 0.8)
			}
		}
		add("#14", "drain to a file sink, default enrichment ≥ 0.8 × `fanread -r -p -C -o` in ops/s", measured, refCell, v)
	}
	// #14: no loss in watch and in the default run.
	for _, c := range agents {
		if c == nil {
			continue
		}
		lc := r.losses(c)
		what := "`fanaudit watch`"
		if c == run {
			what = "the default `run` (file sink)"
		}
		refCell := "—"
		if ref != nil {
			refCell = r.losses(ref).String()
		}
		add("#14", fmt.Sprintf("0 ops lost, no kernel overflow, in %s at N=%d", what, r.N), lc.String(), refCell, verdict(lc.ok()))
	}
	// #14: unwatched work on the same filesystem.
	{
		sa := r.find(r.Sibling, nameSibAgent)
		base := r.find(r.Sibling, nameSibNone)
		elapsed := func(s Sample) (float64, bool) { return s.WL.Elapsed, s.WL.Elapsed > 0 }
		measured, refCell, v := notMeasured, "—", notMeasured
		var refs []string
		for _, n := range []string{nameSibTree, nameSibFS} {
			if c := r.find(r.Sibling, n); c != nil {
				refs = append(refs, "`"+n+"`: "+paired(c, base, elapsed).fmt("%.2f")+"×")
			}
		}
		if len(refs) > 0 {
			refCell = strings.Join(refs, ", ")
		}
		if c := r.find(r.Sibling, nameSibSubtree); c != nil && base != nil {
			st := burstStat(c)
			refs = append(refs, fmt.Sprintf("`%s` (opt-in): %s×, burst worst round %d of %d ops missing, %d of them silent (not announced by unwatched_window)",
				c.Name, paired(c, base, elapsed).fmt("%.2f"), st.missing, st.ops, st.silent))
			refCell = strings.Join(refs, ", ")
		}
		if sa != nil && base != nil {
			sd := paired(sa, base, elapsed)
			checked, failed := 0, 0
			var missing, done, outside uint64
			for _, s := range sa.Samples {
				if s.Err != "" || !s.ScopeChecked {
					failed++
					continue
				}
				checked++
				missing = max(missing, s.ScopeMissing)
				done = max(done, s.ScopeOps)
				outside = max(outside, s.OutOfScope)
			}
			bs := burstStat(sa)
			exp := 2 * Missing(newCounts(), allOps, r.ScopeFiles, r.Block)
			measured = fmt.Sprintf("%s× no monitor (the default config, as users run it); in the watched subtree (%d ops per round, half in a directory made after the start) worst round %d missing, %d records outside the subtree; %d of %d rounds checked. Work started the instant its directory was made (burst): worst round %d of %d ops missing, %d announced (unwatched_window), %d silent",
				sd.fmt("%.2f"), exp, missing, outside, checked, len(sa.Samples), bs.missing, exp/2, bs.announced, bs.silent)
			if sd.N > 0 {
				// No silent loss: a burst op missing without its
				// unwatched_window record fails the row too.
				v = verdict(sd.Med <= 1.05 && failed == 0 && checked > 0 && missing == 0 && bs.silent == 0)
			}
		}
		add("#14", "unwatched sibling work on the same filesystem: slowdown ≤ 1.05 × no monitor, every in-subtree op reported", measured, refCell, v)
	}
	// #14: peak RSS at full speed.
	statRow("peak RSS ≤ 64 MiB at full speed", "%.1f", "MiB",
		func(c *ConfigResult) Stat { return c.stat(rssOf) }, func(s Stat) bool { return s.Med <= targetRSS })
	// #13: the live Kafka row.
	{
		k := r.find(r.Live, nameKafka)
		if k == nil {
			add("#13", fmt.Sprintf("Kafka sink: 0 ops lost, no overflow at N=%d", r.N), "not measured (no broker: FANAUDIT_KAFKA_BROKERS unset)", "—", notMeasured)
			add("#13", "Kafka sink: agent CPU ≤ 1.5 × the file sink's", notMeasured, "—", notMeasured)
		} else {
			lc := r.losses(k)
			refCell := "—"
			if run != nil {
				refCell = "file sink: " + r.losses(run).String()
			}
			add("#13", fmt.Sprintf("Kafka sink: 0 ops lost, no overflow at N=%d", r.N), lc.String(), refCell, verdict(lc.ok()))
			ratio := paired(k, run, cpuPerOp)
			measured, v := notMeasured, notMeasured
			if ratio.N > 0 {
				measured = k.stat(cpuOf).fmt("%.2f") + " CPU-s for " + k.stat(opsTotal).fmt("%.0f") + " ops: " + ratio.fmt("%.2f") + " × the file sink's CPU per op"
				v = verdict(ratio.Med <= 1.5)
			}
			refCell = "—"
			if run != nil {
				refCell = "file sink: " + run.stat(cpuOf).fmt("%.2f") + " CPU-s for " + run.stat(opsTotal).fmt("%.0f") + " ops"
			}
			add("#13", "Kafka sink: agent CPU ≤ 1.5 × the file sink's", measured, refCell, v)
		}
	}
	// #16: the cost of sealing.
	{
		sealed := r.find(r.Live, nameSealed)
		measured, refCell, v := notMeasured, "—", notMeasured
		switch {
		case r.SealNA != "":
			measured, v = r.SealNA, r.SealNA
		case sealed != nil && run != nil:
			ratio := paired(sealed, run, cpuPerOp)
			refCell = "unsealed file sink: " + run.stat(cpuOf).fmt("%.2f") + " CPU-s for " + run.stat(opsTotal).fmt("%.0f") + " ops"
			if ratio.N > 0 {
				measured = sealed.stat(cpuOf).fmt("%.2f") + " CPU-s for " + sealed.stat(opsTotal).fmt("%.0f") + " ops: " + ratio.fmt("%.3f") + " × the unsealed sink's CPU per op"
				v = verdict(ratio.Med <= 1.05)
			}
		}
		add("#16", "sealing (seal_state) adds ≤ 5 % agent CPU at full workload speed", measured, refCell, v)
	}
	return rows
}

func (r *Report) targets(b *strings.Builder) {
	p := func(f string, a ...any) { fmt.Fprintf(b, f, a...) }
	p("## Targets\n\n")
	p("Verdicts are computed by the harness from this run: ratios are paired within a round and the verdict takes their median over the rounds; a \"0 lost\" target takes the worst round. *reference* is the C reader (or the configuration named) in the same rounds. Agent CPU is counted from the workload's start to the last record delivered; the Kafka and sealing costs compare CPU per operation captured, so a configuration that loses operations does not look cheaper.\n\n")
	p("| issue | target | fanaudit | reference | verdict |\n|---|---|---|---|---|\n")
	for _, t := range r.targetRows() {
		p("| %s | %s | %s | %s | %s |\n", t.issue, t.target, t.measured, t.ref, t.verdict)
	}
	p("\n")
}

// burstTally is the worst round of a sibling row's burst check.
type burstTally struct{ ops, missing, announced, silent uint64 }

func burstStat(c *ConfigResult) burstTally {
	var t burstTally
	for _, s := range c.Samples {
		if s.Err != "" || !s.ScopeChecked {
			continue
		}
		t.ops = max(t.ops, s.BurstOps)
		t.missing = max(t.missing, s.BurstMissing)
		t.announced = max(t.announced, s.BurstAnnounced)
		t.silent = max(t.silent, s.BurstMissing-s.BurstAnnounced)
	}
	return t
}

// sibling writes the unwatched-sibling table.
func (r *Report) sibling(b *strings.Builder) {
	if len(r.Sibling) == 0 || len(r.Sibling[0].Samples) == 0 {
		return
	}
	p := func(f string, a ...any) { fmt.Fprintf(b, f, a...) }
	p("\n## Unwatched work on the same filesystem\n\n")
	p("DIR/watched and DIR/other on the same tmpfs: the monitor watches DIR/watched while `wl DIR/other %d %d` runs. *slowdown* is against this table's own no-monitor row, round by round. *units* is what the monitor reported (fanread: kernel events; fanaudit: records). ", r.N, r.Block)
	p("For the agent, a scripted workload inside the watched subtree runs meanwhile (`wl` with %d files in DIR/watched/%s, made before the start, and in DIR/watched/%s, made after the agent marked and once its record was written): *in-subtree ops* are the operations of those files it reported, *missing* the ones it did not; *outside* counts records about paths outside DIR/watched (should be 0). *CPU per sibling op* is the monitor's CPU over wl's operations in DIR/other.\n\n", r.ScopeFiles, sibOld, sibNew)
	p("*burst*: then DIR/watched/%s is made and `wl` with %d files runs in it at once, racing the agent's mark on the new directory (under inode marks); its ops reported, missing, and of the missing ones those *announced* by an `events_lost` record with reason `unwatched_window` naming the directory (the rest were lost silently); *lost / reports* are the run's loss records. The target is judged on the default configuration's row: its in-subtree ops, and no silent burst loss.\n\n", sibBurst, r.ScopeFiles)
	p("| configuration | workload s | slowdown × | units | in-subtree ops | missing | outside | burst ops | burst missing | burst announced | lost / reports | monitor CPU s | µs CPU per sibling op | peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	base := r.find(r.Sibling, nameSibNone)
	elapsed := func(s Sample) (float64, bool) { return s.WL.Elapsed, s.WL.Elapsed > 0 }
	for _, c := range r.Sibling {
		wl := c.stat(elapsed)
		if c == base {
			p("| %s | %s | 1 | | | | | | | | | | | |\n", c.Name, wl.fmt("%.3f"))
			continue
		}
		units := c.stat(func(s Sample) (float64, bool) { return float64(s.Counts.Events), true })
		scope := func(f func(Sample) float64) string {
			st := c.stat(func(s Sample) (float64, bool) { return f(s), s.ScopeChecked })
			return st.fmt("%.0f")
		}
		cpu := c.stat(cpuOf)
		per := c.stat(func(s Sample) (float64, bool) { return s.CPU / float64(s.WL.Ops) * 1e6, s.WL.Ops > 0 })
		lost := "—"
		if c.Name == nameSibAgent || c.Name == nameSibSubtree {
			lost = lossCell(c)
		}
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c.Name, wl.fmt("%.3f"), paired(c, base, elapsed).fmt("%.2f"), units.fmt("%.0f"),
			scope(func(s Sample) float64 { return float64(s.ScopeOps) }),
			scope(func(s Sample) float64 { return float64(s.ScopeMissing) }),
			scope(func(s Sample) float64 { return float64(s.OutOfScope) }),
			scope(func(s Sample) float64 { return float64(s.BurstOps) }),
			scope(func(s Sample) float64 { return float64(s.BurstMissing) }),
			scope(func(s Sample) float64 { return float64(s.BurstAnnounced) }),
			lost, cpu.fmt("%.2f"), per.fmt("%.2f"), c.stat(rssOf).fmt("%.1f"))
	}
	p("\nCommands:\n\n")
	for _, c := range r.Sibling {
		p("- %s: `%s`\n", c.Name, c.Command)
	}
	r.errors(b, r.Sibling)
}
