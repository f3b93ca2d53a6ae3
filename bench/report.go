package bench

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
)

// Stat is a median with its range over the rounds.
type Stat struct {
	Med, Min, Max float64
	N             int
}

// Summarize returns median and min–max of vs.
func Summarize(vs []float64) Stat {
	if len(vs) == 0 {
		return Stat{}
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stat{Med: med, Min: s[0], Max: s[len(s)-1], N: len(s)}
}

func (s Stat) fmt(f string) string {
	if s.N == 0 {
		return "—"
	}
	if s.N == 1 || s.Min == s.Max {
		return fmt.Sprintf(f, s.Med)
	}
	return fmt.Sprintf(f+" ("+f+"–"+f+")", s.Med, s.Min, s.Max)
}

func (c *ConfigResult) ok() []Sample {
	var out []Sample
	for _, s := range c.Samples {
		if s.Err == "" {
			out = append(out, s)
		}
	}
	return out
}

func (c *ConfigResult) stat(f func(Sample) (float64, bool)) Stat {
	var vs []float64
	for _, s := range c.ok() {
		if v, ok := f(s); ok {
			vs = append(vs, v)
		}
	}
	return Summarize(vs)
}

func (r *Report) find(set []*ConfigResult, name string) *ConfigResult {
	for _, c := range set {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// slowdown is the workload time of c in each round over the no-monitor
// time of the same round: pairing within a round cancels slow drift.
func (r *Report) slowdown(c *ConfigResult) Stat {
	return paired(c, r.find(r.Live, nameNone), func(s Sample) (float64, bool) { return s.WL.Elapsed, s.WL.Elapsed > 0 })
}

// paired is f(c's sample) / f(base's sample of the same round), over the
// rounds where both are usable.
func paired(c, base *ConfigResult, f func(Sample) (float64, bool)) Stat {
	if c == nil || base == nil {
		return Stat{}
	}
	byRound := map[int]float64{}
	for _, s := range base.ok() {
		if v, ok := f(s); ok && v > 0 {
			byRound[s.Round] = v
		}
	}
	return c.stat(func(s Sample) (float64, bool) {
		b, ok := byRound[s.Round]
		v, ok2 := f(s)
		return v / b, ok && ok2
	})
}

// relSlowdown is c's slowdown over ref's, round by round.
func (r *Report) relSlowdown(c, ref *ConfigResult) Stat {
	return paired(c, ref, func(s Sample) (float64, bool) { return s.WL.Elapsed, s.WL.Elapsed > 0 })
}

func mib(kib int64) float64 { return float64(kib) / 1024 }

func countCell(c *ConfigResult, op Op) string {
	if !slices.Contains(c.Ops, op) {
		return "—"
	}
	st := c.stat(func(s Sample) (float64, bool) { return float64(s.Counts.Ops[op]), true })
	return st.fmt("%.0f")
}

func lossCell(c *ConfigResult) string {
	switch {
	case strings.HasPrefix(c.Name, "fatrace"):
		return "not reported"
	case strings.HasPrefix(c.Name, "no monitor"):
		return "—"
	}
	lost := c.stat(func(s Sample) (float64, bool) { return float64(s.Counts.Lost), true })
	rep := c.stat(func(s Sample) (float64, bool) { return float64(s.Counts.LossReports), true })
	if strings.HasPrefix(c.Name, "fanread") {
		return "? / " + rep.fmt("%.0f")
	}
	cell := lost.fmt("%.0f") + " / " + rep.fmt("%.0f")
	if ov := c.stat(func(s Sample) (float64, bool) { return float64(s.Counts.Overflows), true }); ov.Max > 0 {
		cell += ", " + ov.fmt("%.0f") + " overflows"
	}
	if ws := c.stat(func(s Sample) (float64, bool) { return float64(s.Counts.Windows), true }); ws.Max > 0 {
		cell += ", " + ws.fmt("%.0f") + " unwatched_window"
	}
	if rs := c.stat(func(s Sample) (float64, bool) { return float64(s.Counts.Restarts), true }); rs.Max > 0 {
		cell += " (+" + rs.fmt("%.0f") + " agent_restart, not counted)"
	}
	return cell
}

// Markdown writes the report.
func (r *Report) Markdown(w io.Writer) error {
	var b strings.Builder
	p := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	m := r.Machine
	p("# fanaudit benchmark results\n\n")
	p("Written by `make bench` (bench/run.sh → bench/cmd/fabench). Do not edit by hand; rerun and commit with each change that moves a figure.\n\n")
	p("- date: %s – %s UTC\n", r.Start.Format("2006-01-02 15:04:05"), r.End.Format("15:04:05"))
	p("- machine: %d CPUs (%s), %s RAM, Linux %s, %s\n", m.CPUs, m.CPU, m.MemTotal, m.Kernel, m.Go)
	p("- load average at start / end: %s / %s; CPU time stolen by the hypervisor during the run: %s\n", m.LoadStart, m.LoadEnd, orDash(m.Steal))
	p("- fanaudit %s, fatrace %s\n", orDash(m.Fanaudit), orDash(m.Fatrace))
	p("- workload: `wl DIR %d %d` on a private tmpfs (%d files: open+create, write %d B, close; rename every second; unlink all); monitor outputs on a second tmpfs\n",
		r.N, r.Block, r.N, r.Block)
	p("- %d rounds, configurations interleaved in each round; cells are median (min–max) over rounds\n\n", r.Rounds)
	r.targets(&b)

	exp := Expected(r.N, r.Block)
	p("## Live: workload under each monitor\n\n")
	p("Operations are counted by type (fanread: mask bits; fatrace: its letters; fanaudit: `event.action` of each record), because the kernel merges queued events. ")
	p("*missing* is expected minus captured over the types the configuration subscribes to (— = not subscribed). ")
	p("*lost / reports*: records a monitor says it lost / the loss announcements it made (fanread: overflow events, with no count). ")
	p("*monitor CPU*: fanread's and fatrace's from wait4 (their start-up and idle cost nothing); fanaudit's from /proc/PID/stat, from the workload's start to the last record delivered, so neither its start-up nor the idle second the harness waits for quiet counts (its whole-process CPU is listed below the table). Peak RSS comes from the monitor's VmHWM. *tail* is the time from the workload's end to the monitor's exit (fanread, fatrace) or to the last record delivered (fanaudit: file size or topic end offset stable for 1 s, then SIGTERM; a slow shutdown is not counted as catching up). *ops per CPU-s* is operations captured per CPU-second of the monitor.\n\n")
	p("| configuration | workload s | slowdown × | open | create | modify | close_write | rename | delete | missing | lost / reports | monitor CPU s | ops per CPU-s | peak RSS MiB | tail s |\n")
	p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	p("| *expected* | | | %d | %d | %d | %d | %d | %d | | | | | | |\n",
		exp[OpOpen], exp[OpCreate], exp[OpModify], exp[OpCloseWrite], exp[OpRename], exp[OpDelete])
	for _, c := range r.Live {
		wl := c.stat(func(s Sample) (float64, bool) { return s.WL.Elapsed, true })
		if c.Name == "no monitor" {
			p("| %s | %s | 1 | | | | | | | | | | | | |\n", c.Name, wl.fmt("%.3f"))
			continue
		}
		miss := c.stat(func(s Sample) (float64, bool) { return float64(Missing(s.Counts, c.Ops, int(s.WL.N), r.Block)), true })
		cpu := c.stat(func(s Sample) (float64, bool) { return s.CPU, true })
		eff := c.stat(func(s Sample) (float64, bool) { return float64(s.Counts.total()) / s.CPU / 1e3, s.CPU > 0 })
		rss := c.stat(func(s Sample) (float64, bool) { return mib(s.MaxRSSKiB), true })
		tail := c.stat(func(s Sample) (float64, bool) { return s.Tail, true })
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s k | %s | %s |\n",
			c.Name, wl.fmt("%.3f"), r.slowdown(c).fmt("%.2f"),
			countCell(c, OpOpen), countCell(c, OpCreate), countCell(c, OpModify),
			countCell(c, OpCloseWrite), countCell(c, OpRename), countCell(c, OpDelete),
			miss.fmt("%.0f"), lossCell(c), cpu.fmt("%.2f"), eff.fmt("%.0f"), rss.fmt("%.1f"), tail.fmt("%.2f"))
	}
	p("\nCommands:\n\n")
	for _, c := range r.Live {
		p("- %s: `%s`\n", c.Name, c.Command)
	}
	var whole []string
	for _, c := range r.Live {
		if st := c.stat(func(s Sample) (float64, bool) { return s.CPUTotal, s.CPUTotal > 0 }); st.N > 0 {
			whole = append(whole, c.Name+" "+st.fmt("%.2f"))
		}
	}
	if len(whole) > 0 {
		p("\nfanaudit's whole-process CPU s (start-up, the wait for quiet and the shutdown included): %s.\n", strings.Join(whole, "; "))
	}
	r.errors(&b, r.Live)

	if len(r.Drain) > 0 && len(r.Drain[0].Samples) > 0 {
		p("\n## Drain: reading a pre-filled unlimited queue\n\n")
		p("The workload runs first with the monitor not reading; then the monitor drains. *units*: kernel events for fanread (its own count), records for fanaudit (one per action, so comparable with *ops*). ")
		p("fanread -D times its own read loop. fanaudit's drain (FANAUDIT_BENCH_DRAIN=1) is timed from SIGUSR1 to its exit, after the queue is read to empty and the sink flushed (without the hook: from SIGCONT to the last record written); its CPU is what the process used in that time.\n\n")
		p("*kernel events/s*: events read from fanotify (fanread's count, fanaudit's capture stats), the unit of the C reader's limit.\n\n")
		p("| configuration | drain s | kernel events/s | units | units/s | ops | ops/s | missing | drain CPU s | ops per CPU-s | peak RSS MiB |\n")
		p("|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, c := range r.Drain {
			d := c.stat(func(s Sample) (float64, bool) { return s.DrainS, s.DrainS > 0 })
			units := c.stat(func(s Sample) (float64, bool) { return float64(s.Counts.Events), true })
			ups := c.stat(func(s Sample) (float64, bool) { return float64(s.Counts.Events) / s.DrainS / 1e6, s.DrainS > 0 })
			ops := c.stat(func(s Sample) (float64, bool) { return float64(s.Counts.total()), true })
			opss := c.stat(func(s Sample) (float64, bool) { return float64(s.Counts.total()) / s.DrainS / 1e6, s.DrainS > 0 })
			miss := c.stat(func(s Sample) (float64, bool) { return float64(Missing(s.Counts, c.Ops, int(s.WL.N), r.Block)), true })
			cpu := c.stat(func(s Sample) (float64, bool) { return s.DrainCPU, true })
			eff := c.stat(func(s Sample) (float64, bool) { return float64(s.Counts.total()) / s.DrainCPU / 1e6, s.DrainCPU > 0 })
			rss := c.stat(func(s Sample) (float64, bool) { return mib(s.MaxRSSKiB), true })
			kev := c.stat(func(s Sample) (float64, bool) {
				return float64(s.KernelEvents) / s.DrainS / 1e6, s.DrainS > 0 && s.KernelEvents > 0
			})
			p("| %s | %s | %s M | %s | %s M | %s | %s M | %s | %s | %s M | %s |\n", c.Name, d.fmt("%.3f"), kev.fmt("%.2f"), units.fmt("%.0f"), ups.fmt("%.2f"),
				ops.fmt("%.0f"), opss.fmt("%.2f"), miss.fmt("%.0f"), cpu.fmt("%.2f"), eff.fmt("%.2f"), rss.fmt("%.1f"))
		}
		p("\nCommands:\n\n")
		for _, c := range r.Drain {
			p("- %s: `%s`\n", c.Name, c.Command)
		}
		r.errors(&b, r.Drain)
	}

	if len(r.Paced) > 0 {
		p("\n## Paced: peak RSS at %.0f k ops/s\n\n", r.PacedRate/1e3)
		p("wl runs in batches every 100 ms, each sized to keep the average at %.0f k operations/s (%.1f per file: open, create, modify, close_write, delete, half a rename); run once, after the rounds. Rates are over the whole run; *units/s* is the monitor's own unit (fanread: kernel events; fanaudit: records, which add attrib, delete_self and move_self). Each batch runs in a directory of its own, made just before it: under inode marks (scope subtree, or auto below subtree_max_dirs; not the default, which these rows run) the batch would race the agent's mark on that directory, and what it loses is announced by an unwatched_window loss record except work done within the directory's birth tick; ops *missing* with no loss record are lost silently (fanread here holds a filesystem mark).\n\n",
			r.PacedRate/1e3, recordsPerFile)
		p("| configuration | seconds | files | ops captured per s | units/s | missing | lost / reports | monitor CPU s | CPU %% | peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for _, c := range r.Paced {
			for _, s := range c.Samples {
				if s.Err != "" {
					p("| %s | failed: %s | | | | | | | | |\n", c.Name, oneLine(s.Err))
					continue
				}
				p("| %s | %.1f | %d | %.0f k | %.0f k | %d | %s | %.2f | %.0f | %.1f |\n", c.Name, s.WL.Elapsed, s.WL.N,
					float64(s.Counts.total())/s.WL.Elapsed/1e3, float64(s.Counts.Events)/s.WL.Elapsed/1e3,
					Missing(s.Counts, c.Ops, int(s.WL.N), r.Block),
					lossCell(c), s.CPU, s.CPU/s.WL.Elapsed*100, mib(s.MaxRSSKiB))
			}
		}
		r.errors(&b, r.Paced)
	}

	r.sibling(&b)

	if len(r.GoBench) > 0 || len(r.GoBenchErr) > 0 {
		p("\n## Go microbenchmarks\n\n`go test -run '^$' -bench . -benchmem` per package, one run each.\n\n")
		p("| package | benchmark | ns/op | B/op | allocs/op | other |\n|---|---|---|---|---|---|\n")
		for _, gb := range r.GoBench {
			cells := map[string]string{}
			var other []string
			for _, mt := range gb.Metrics {
				switch mt.Unit {
				case "ns/op", "B/op", "allocs/op":
					cells[mt.Unit] = trimFloat(mt.Value)
				default:
					other = append(other, trimFloat(mt.Value)+" "+mt.Unit)
				}
			}
			p("| %s | %s | %s | %s | %s | %s |\n", strings.TrimPrefix(gb.Pkg, "github.com/fanaudit/fanaudit/"), gb.Name,
				orDash(cells["ns/op"]), orDash(cells["B/op"]), orDash(cells["allocs/op"]), strings.Join(other, ", "))
		}
		pkgs := make([]string, 0, len(r.GoBenchErr))
		for k := range r.GoBenchErr {
			pkgs = append(pkgs, k)
		}
		sort.Strings(pkgs)
		for _, k := range pkgs {
			p("\n- %s: %s\n", k, oneLine(r.GoBenchErr[k]))
		}
	}
	r.profiles(&b)
	p("\n## Notes\n\n")
	p("- fatrace %s (Debian) reports with FAN_REPORT_FID but no names: create, delete and rename are reported against the directory, where the kernel merges them, so most of those operations never reach its output; it reports no losses at all. fatrace 0.19's JSON mode is not packaged.\n", orDash(r.Machine.Fatrace))
	p("- fanaudit also emits attrib (unlink changes the link count), delete_self and move_self records; they count in *units*, not in *ops*.\n")
	p("- On %d CPUs a monitor that needs more than about one CPU for the workload's event rate competes with the workload itself: the slowdown then follows the monitor's CPU per operation.\n", r.Machine.CPUs)
	p("- The machine is shared; see the load average above. Ratios are taken within a round to cancel slow drift, but single rounds can still be off by 2×: read the ranges.\n")
	for _, n := range r.Notes {
		p("\n%s\n", n)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (r *Report) errors(b *strings.Builder, set []*ConfigResult) {
	for _, c := range set {
		for _, s := range c.Samples {
			if s.Err != "" {
				fmt.Fprintf(b, "- **failed**: %s, round %d: %s\n", c.Name, s.Round, oneLine(s.Err))
			}
			if s.Warn != "" {
				fmt.Fprintf(b, "- warning: %s, round %d: %s\n", c.Name, s.Round, oneLine(s.Warn))
			}
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func trimFloat(v float64) string {
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.4g", v)
}

func (r *Report) profiles(b *strings.Builder) {
	if len(r.Profiles) == 0 {
		return
	}
	p := func(f string, a ...any) { fmt.Fprintf(b, f, a...) }
	p("\n## Where fanaudit's CPU goes (perf)\n\n")
	p("`perf record -F 999 -g -p PID` on one extra run of each kind, outside the timed rounds; `perf report --sort symbol`, percentages of all samples of the process (user and kernel).\n")
	for _, pr := range r.Profiles {
		if pr.Err != "" {
			p("\n- %s: **no profile**: %s\n", pr.Name, oneLine(pr.Err))
			continue
		}
		p("\n### %s: %d records in %.2f s (%.2f M records/s while profiled), `%s`\n\n", pr.Name, pr.Records, pr.Seconds, float64(pr.Records)/pr.Seconds/1e6, pr.Data)
		p("Garbage collector's share of the samples (inclusive: %s): %.1f %% (issue #14 wants < 5 %%).\n\n", strings.Join(gcRoots, ", "), pr.GC)
		p("| inclusive %% | symbol | | self %% | symbol |\n|---|---|---|---|---|\n")
		for i := range max(len(pr.Inclusive), len(pr.Self)) {
			var a, bb ProfileLine
			if i < len(pr.Inclusive) {
				a = pr.Inclusive[i]
			}
			if i < len(pr.Self) {
				bb = pr.Self[i]
			}
			p("| %s | %s | | %s | %s |\n", pct(a.Percent, a.Symbol), mdCode(a.Symbol), pct(bb.Percent, bb.Symbol), mdCode(bb.Symbol))
		}
	}
}

func pct(v float64, sym string) string {
	if sym == "" {
		return ""
	}
	return fmt.Sprintf("%.1f", v)
}

func mdCode(s string) string {
	if s == "" {
		return ""
	}
	return "`" + strings.ReplaceAll(strings.TrimPrefix(s, "github.com/fanaudit/fanaudit/"), "|", "\\|") + "`"
}
