package seal

import (
	"bytes"
	"cmp"
	"slices"
	"time"
)

// Reorder restores the order a Kafka sink sealed its records in, from a
// topic dump (kcat -C -e, one value per line, partitions one after the
// other or interleaved). At-least-once delivery duplicates records, and
// partitions, retries and the spool reorder them, none of which is
// tampering: exact duplicates are dropped; seals are put in epoch order;
// each agent run starts at its open seal, and a record belongs to the run
// its @timestamp falls in (after the previous run's closing seal), or,
// without a timestamp, to the run whose open seal came before it in the
// dump; within a run a record goes just before the first seal whose
// event.sequence range reaches it. The verifier then checks this order as
// it checks a file; the reordering decides nothing, the MACs do.
func Reorder(lines []Line) []Line {
	type item struct {
		l   Line
		seq int64
		ts  time.Time
		rec *Record
		run int // by dump position: open seals seen before it
	}
	var seals, data []item
	seen := map[string]bool{}
	opens := 0
	for _, l := range lines {
		if len(l.Data) == 0 || seen[string(l.Data)] {
			continue
		}
		seen[string(l.Data)] = true
		it := item{l: l, seq: -1}
		if IsSeal(l.Data) {
			if r, err := ParseRecord(l.Data); err == nil {
				it.rec = r
				if r.Kind == KindOpen {
					opens++
				}
				it.run = opens
				seals = append(seals, it)
				continue
			}
		}
		it.seq = SequenceOf(l.Data)
		it.ts = timestampOf(l.Data)
		it.run = opens
		data = append(data, it)
	}
	slices.SortStableFunc(seals, func(a, b item) int { return cmp.Compare(a.rec.Epoch, b.rec.Epoch) })
	// Runs in epoch order, each with the time after which its records
	// were read, and the dump-position number of its open seal.
	type run struct {
		seals []item
		after time.Time
		open  int
		data  []item
	}
	var runs []*run
	for _, s := range seals {
		if len(runs) == 0 || s.rec.Kind == KindOpen {
			r := &run{open: s.run}
			if n := len(runs); n > 0 {
				prev := runs[n-1].seals[len(runs[n-1].seals)-1]
				r.after = s.rec.Time
				if prev.rec.Kind == KindClose {
					r.after = prev.rec.Time
				}
			}
			runs = append(runs, r)
		}
		runs[len(runs)-1].seals = append(runs[len(runs)-1].seals, s)
	}
	if len(runs) == 0 {
		runs = append(runs, &run{})
	}
	for _, d := range data {
		i := 0
		for j, r := range runs {
			if d.ts.IsZero() && r.open <= d.run || !d.ts.IsZero() && (j == 0 || d.ts.After(r.after)) {
				i = j
			}
		}
		runs[i].data = append(runs[i].data, d)
	}
	out := make([]Line, 0, len(lines))
	for _, r := range runs {
		data := r.data
		slices.SortStableFunc(data, func(a, b item) int { return cmp.Compare(a.seq, b.seq) })
		for _, s := range r.seals {
			for len(data) > 0 && s.rec.Lines > 0 && data[0].seq <= int64(s.rec.LastSeq) {
				out = append(out, data[0].l)
				data = data[1:]
			}
			out = append(out, s.l)
		}
		for _, d := range data {
			out = append(out, d.l)
		}
	}
	return out
}

// timestampOf returns a record line's @timestamp, or the zero time.
func timestampOf(b []byte) time.Time {
	const key = `"@timestamp":"`
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return time.Time{}
	}
	b = b[i+len(key):]
	j := bytes.IndexByte(b, '"')
	if j < 0 {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, string(b[:j]))
	if err != nil {
		return time.Time{}
	}
	return t
}

// SliceSource is a Source over lines held in memory.
func SliceSource(lines []Line) Source {
	return func(yield func(Line) bool) error {
		for _, l := range lines {
			if !yield(l) {
				return nil
			}
		}
		return nil
	}
}
