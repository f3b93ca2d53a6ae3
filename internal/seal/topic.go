package seal

import (
	"cmp"
	"slices"
)

// Reorder restores the order a Kafka sink sealed its records in, from a
// topic dump (kcat -C -e, one value per line, partitions one after the
// other or interleaved). At-least-once delivery duplicates records, and
// partitions, retries and the spool reorder them, none of which is
// tampering: exact duplicates are dropped, and within each run (which
// starts with its open seal) seals are put in epoch order and each record
// just before the first seal whose event.sequence range reaches it.
// Records without an event.sequence keep their place before the seals.
// The verifier then checks this order as it checks a file.
func Reorder(lines []Line) []Line {
	type item struct {
		l   Line
		seq int64
		rec *Record
	}
	var runs [][]item
	seen := map[string]bool{}
	for _, l := range lines {
		if len(l.Data) == 0 || seen[string(l.Data)] {
			continue
		}
		seen[string(l.Data)] = true
		it := item{l: l, seq: -1}
		if IsSeal(l.Data) {
			if r, err := ParseRecord(l.Data); err == nil {
				it.rec = r
			}
		}
		if it.rec == nil {
			it.seq = SequenceOf(l.Data)
		}
		if len(runs) == 0 || it.rec != nil && it.rec.Kind == KindOpen {
			runs = append(runs, nil)
		}
		runs[len(runs)-1] = append(runs[len(runs)-1], it)
	}
	out := make([]Line, 0, len(lines))
	for _, run := range runs {
		var seals, data []item
		for _, it := range run {
			if it.rec != nil {
				seals = append(seals, it)
			} else {
				data = append(data, it)
			}
		}
		slices.SortStableFunc(seals, func(a, b item) int { return cmp.Compare(a.rec.Epoch, b.rec.Epoch) })
		slices.SortStableFunc(data, func(a, b item) int { return cmp.Compare(a.seq, b.seq) })
		for _, s := range seals {
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
