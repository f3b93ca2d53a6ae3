package seal

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fanaudit/fanaudit/internal/safefile"
)

// stream builds a sealed stream: an open seal, n records with a seal
// after every `every` records, and a closing seal unless open is set.
type stream struct {
	k0    Key
	state string
	lines [][]byte
	runs  int
}

func record(seq int) []byte { return recordIn(0, seq) }

// runStart is when the run-th agent run starts; its seals come a second
// apart, its records a millisecond apart.
func runStart(run int) time.Time { return time.Unix(1e9+int64(run)*1000, 0) }

// recordIn is record seq of the run-th agent run.
func recordIn(run, seq int) []byte {
	ts := runStart(run).Add(time.Duration(seq) * time.Millisecond).UTC().Format(time.RFC3339Nano)
	return fmt.Appendf(nil, `{"@timestamp":%q,"event":{"action":"open","sequence":%d},"file":{"path":"/m/f%d"}}`, ts, seq, seq)
}

func newStream(t *testing.T) *stream {
	t.Helper()
	state := filepath.Join(t.TempDir(), "seal.state")
	k0, err := Keygen(state)
	if err != nil {
		t.Fatal(err)
	}
	return &stream{k0: k0, state: state}
}

// run appends one agent run: records seq from..to, a seal every `every`.
func (s *stream) run(t *testing.T, from, to, every int, clean bool) {
	t.Helper()
	sl, err := Open(s.state, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	now := runStart(s.runs)
	add := func(line []byte, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		s.lines = append(s.lines, bytes.TrimSuffix(line, []byte("\n")))
	}
	add(sl.Begin(now))
	defer func() { s.runs++ }()
	for seq := from; seq <= to; seq++ {
		l := recordIn(s.runs, seq)
		s.lines = append(s.lines, l)
		sl.Append(append(l, '\n'), uint64(seq))
		if (seq-from+1)%every == 0 {
			now = now.Add(time.Second)
			if !sl.Due(now) {
				t.Fatal("seal not due")
			}
			add(sl.Seal(now))
		}
	}
	if clean {
		add(sl.Close(now))
	} else {
		// A crash: the process's exit drops the lock and writes nothing.
		sl.lock.Close()
		sl.dir.Close()
	}
}

func source(files map[string][][]byte, order ...string) Source {
	return func(yield func(Line) bool) error {
		for _, name := range order {
			for i, l := range files[name] {
				if !yield(Line{Name: name, No: i + 1, Data: l}) {
					return nil
				}
			}
		}
		return nil
	}
}

func verify(t *testing.T, k Key, lines [][]byte, opt VerifyOptions) []string {
	t.Helper()
	fs, err := Verify(k, source(map[string][][]byte{"f": lines}, "f"), opt)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range fs {
		out = append(out, f.String())
	}
	return out
}

func TestIntact(t *testing.T) {
	s := newStream(t)
	s.run(t, 1, 100, 30, true)
	s.run(t, 1, 50, 7, true) // a restart: sequences start again
	if got := verify(t, s.k0, s.lines, VerifyOptions{}); len(got) != 0 {
		t.Fatalf("intact stream: %q", got)
	}
}

// lineOf returns the 1-based line number of the record with seq in the
// first run.
func lineOf(lines [][]byte, seq int) int {
	return slices.IndexFunc(lines, func(l []byte) bool { return bytes.Equal(l, record(seq)) }) + 1
}

func TestTamper(t *testing.T) {
	s := newStream(t)
	s.run(t, 1, 200, 60, true)
	other, _ := ParseKey(strings.Repeat("ab", 32))
	l50 := lineOf(s.lines, 50)
	cases := []struct {
		name   string
		edit   func(l [][]byte) [][]byte
		key    *Key
		opt    VerifyOptions
		line   int    // the finding's line, 0 = any
		within [2]int // or a range that must contain the altered line
		want   string
	}{
		{name: "byte changed", edit: func(l [][]byte) [][]byte {
			l[l50-1] = bytes.Replace(bytes.Clone(l[l50-1]), []byte("/m/f50"), []byte("/m/g50"), 1)
			return l
		}, within: [2]int{l50 - BlockLines + 1, l50}, want: "record changed"},
		{name: "line removed", edit: func(l [][]byte) [][]byte { return slices.Delete(l, l50-1, l50) }, line: l50, want: "removed"},
		{name: "lines swapped", edit: func(l [][]byte) [][]byte { l[l50-1], l[l50] = l[l50], l[l50-1]; return l }, line: l50, want: "reordered"},
		{name: "lines swapped across blocks", edit: func(l [][]byte) [][]byte {
			i := lineOf(l, BlockLines)
			l[i-1], l[i] = l[i], l[i-1]
			return l
		}, line: lineOf(s.lines, BlockLines), want: "reordered"},
		{name: "line inserted", edit: func(l [][]byte) [][]byte { return slices.Insert(l, l50, l[l50-1]) }, line: l50 + 1, want: "inserted"},
		{name: "line appended", edit: func(l [][]byte) [][]byte { return append(l, record(201)) }, line: len(s.lines) + 1, want: "not sealed"},
		{name: "forged seal", edit: func(l [][]byte) [][]byte {
			i := slices.IndexFunc(l, func(b []byte) bool { return bytes.Contains(b, []byte(`"epoch":2,`)) })
			l[i] = bytes.Replace(bytes.Clone(l[i]), []byte(`"lines":60`), []byte(`"lines":59`), 1)
			return l
		}, want: "does not verify"},
		{name: "tail cut after last seal", edit: func(l [][]byte) [][]byte {
			return l[:slices.IndexFunc(l, func(b []byte) bool { return bytes.Contains(b, []byte(`"epoch":3,`)) })+1]
		}, want: "without a closing seal"},
		{name: "wrong key", key: &other, line: 1, want: "wrong key"},
		{name: "start removed", edit: func(l [][]byte) [][]byte { return l[62:] }, want: "starts at the seal of epoch 2"},
		{name: "middle seal and records removed", edit: func(l [][]byte) [][]byte { return slices.Delete(l, 62, 123) }, want: "missing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lines := slices.Clone(s.lines)
			if tc.edit != nil {
				lines = tc.edit(lines)
			}
			k := s.k0
			if tc.key != nil {
				k = *tc.key
			}
			got := verify(t, k, lines, tc.opt)
			if len(got) == 0 {
				t.Fatal("verify accepted a tampered stream")
			}
			f := got[0]
			if !strings.Contains(f, tc.want) {
				t.Fatalf("finding %q, want it to say %q (all: %q)", f, tc.want, got)
			}
			var n int
			if _, err := fmt.Sscanf(f, "f:%d:", &n); err != nil && (tc.line != 0 || tc.within != [2]int{}) {
				t.Fatalf("finding %q names no line", f)
			}
			if tc.line != 0 && n != tc.line {
				t.Fatalf("finding %q: line %d, want %d", f, n, tc.line)
			}
			if tc.within != [2]int{} && (n < tc.within[0] || n > tc.within[1]) {
				t.Fatalf("finding %q: line %d outside %v", f, n, tc.within)
			}
			t.Log(got)
		})
	}
}

func TestAllowPruned(t *testing.T) {
	s := newStream(t)
	s.run(t, 1, 200, 60, true)
	if got := verify(t, s.k0, s.lines[62:], VerifyOptions{AllowPruned: true}); len(got) != 0 {
		t.Fatalf("pruned start with --allow-pruned: %q", got)
	}
}

// An unclean stop leaves records after the last seal; the next run's
// open seal makes them visible, and the rest still verifies.
func TestUncleanRestart(t *testing.T) {
	s := newStream(t)
	s.run(t, 1, 50, 20, false) // 10 records after the last seal, no close
	n := len(s.lines)
	s.run(t, 1, 30, 10, true)
	got := verify(t, s.k0, s.lines, VerifyOptions{})
	if len(got) != 1 || !strings.Contains(got[0], fmt.Sprintf("f:%d: 10 record(s) in lines %d-%d are not covered", n-9, n-9, n)) {
		t.Fatalf("findings %q", got)
	}
}

// One chain, one writer: a second Open of a state in use is refused
// (a second agent would fork the chain), and the state is free again
// after the first writer's clean stop.
func TestOneWriter(t *testing.T) {
	s := newStream(t)
	first, err := Open(s.state, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Begin(runStart(0)); err != nil {
		t.Fatal(err)
	}
	second, err := Open(s.state, time.Second)
	if !errors.Is(err, ErrState) || !errors.Is(err, safefile.ErrLocked) {
		t.Fatalf("second Open: %v, %v; want ErrState and safefile.ErrLocked", second, err)
	}
	if _, err := first.Close(runStart(0)); err != nil {
		t.Fatal(err)
	}
	again, err := Open(s.state, time.Second)
	if err != nil {
		t.Fatalf("Open after the first writer's Close: %v", err)
	}
	if _, err := again.Close(runStart(1)); err != nil {
		t.Fatal(err)
	}
}

// Forward security: whoever copies the state file after a run gets the
// current epoch key. From it they cannot recompute any earlier epoch's
// keys, so altered early records resealed with what they have fail.
func TestForwardSecurity(t *testing.T) {
	s := newStream(t)
	s.run(t, 1, 100, 25, true)
	stolen, err := os.ReadFile(s.state)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(stolen, []byte(s.k0.String())) {
		t.Fatal("the state file still holds the verification key")
	}
	d, name, err := stateDir(s.state, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	st, k, _, err := loadState(d, name)
	if err != nil {
		t.Fatal(err)
	}
	for e := range st.Epoch {
		ek := epochKey(s.k0, e)
		if bytes.Contains(stolen, []byte(ek.String())) {
			t.Fatalf("the state file holds the key of past epoch %d", e)
		}
	}
	// The attacker rewrites record 10 and reseals the whole stream from
	// the start with the only key they have, relabelling epochs.
	forged := newStream(t)
	forged.k0 = k // what they hold
	attack := filepath.Join(t.TempDir(), "attacker.state")
	if err := os.WriteFile(attack, stolen, 0o600); err != nil {
		t.Fatal(err)
	}
	sl, err := Open(attack, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	now := time.Unix(2e9, 0)
	for _, l := range s.lines {
		if IsSeal(l) {
			continue
		}
		if bytes.Equal(l, record(10)) {
			l = bytes.Replace(l, []byte("/m/f10"), []byte("/m/xxx"), 1)
		}
		out = append(out, l)
		sl.Append(l, 0)
		if len(out)%25 == 0 {
			seal, _ := sl.Seal(now)
			out = append(out, bytes.TrimSuffix(seal, []byte("\n")))
		}
	}
	seal, _ := sl.Close(now)
	out = append(out, bytes.TrimSuffix(seal, []byte("\n")))
	got := verify(t, s.k0, out, VerifyOptions{})
	if len(got) == 0 {
		t.Fatal("resealed stream accepted")
	}
	t.Log(got)
	// Splicing the attacker's seals onto the original epochs fails too:
	// every seal they can make carries an epoch at or after the stolen one.
	for _, f := range got {
		if strings.Contains(f, "wrong key") {
			return
		}
	}
	if !strings.Contains(strings.Join(got, "\n"), "does not verify") && !strings.Contains(strings.Join(got, "\n"), "starts at the seal") {
		t.Fatalf("unexpected findings %q", got)
	}
}

func TestKeygenRefusesExisting(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s")
	if _, err := Keygen(p); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state mode %v, %v", fi.Mode(), err)
	}
	if _, err := Keygen(p); err == nil {
		t.Fatal("Keygen overwrote an existing state")
	}
	l := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(filepath.Join(t.TempDir(), "target"), l); err != nil {
		t.Fatal(err)
	}
	if _, err := Keygen(l); err == nil {
		t.Fatal("Keygen followed a symlink")
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p, 0); err == nil {
		t.Fatal("Open accepted a state readable by others")
	}
}

func TestManyMarks(t *testing.T) {
	s := newStream(t)
	s.run(t, 1, BlockLines*maxMarks*3+5, BlockLines*maxMarks*3+5, true)
	if got := verify(t, s.k0, s.lines, VerifyOptions{}); len(got) != 0 {
		t.Fatalf("intact: %q", got)
	}
	l := slices.Clone(s.lines)
	i := lineOf(l, 5000)
	l[i-1] = bytes.Replace(bytes.Clone(l[i-1]), []byte("f5000"), []byte("g5000"), 1)
	got := verify(t, s.k0, l, VerifyOptions{})
	var n int
	if len(got) == 0 {
		t.Fatal("accepted")
	}
	fmt.Sscanf(got[0], "f:%d:", &n)
	if n > i || i-n >= 4*BlockLines {
		t.Fatalf("finding %q does not locate line %d within %d lines", got[0], i, 4*BlockLines)
	}
}

func benchSealer(b *testing.B) *Sealer {
	b.Helper()
	state := filepath.Join(b.TempDir(), "s")
	if _, err := Keygen(state); err != nil {
		b.Fatal(err)
	}
	sl, err := Open(state, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	return sl
}

// BenchmarkAppend seals 600-byte lines one at a time (Append: the Kafka
// and stdout sinks).
func BenchmarkAppend(b *testing.B) {
	sl := benchSealer(b)
	line := append(bytes.Repeat([]byte("x"), 599), '\n')
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		sl.Append(line, uint64(i))
	}
}

// BenchmarkAppendRun seals 600-byte lines a written batch at a time
// (AppendRun: the file sink), for batch sizes around a block's; a batch
// here is not a multiple of BlockLines, so blocks span batches too.
func BenchmarkAppendRun(b *testing.B) {
	const lineLen = 600
	for _, n := range []int{1, 7, 50, 250} {
		b.Run(fmt.Sprintf("lines=%d", n), func(b *testing.B) {
			sl := benchSealer(b)
			run := bytes.Repeat(append(bytes.Repeat([]byte("x"), lineLen-1), '\n'), n)
			ends := make([]int, n)
			for i := range ends {
				ends[i] = (i + 1) * lineLen
			}
			b.SetBytes(int64(len(run)))
			b.ReportAllocs()
			seq := uint64(0)
			for b.Loop() {
				sl.AppendRun(run, ends, seq+1, seq+uint64(n))
				seq += uint64(n)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(seq), "ns/line")
		})
	}
}

// A topic dump: two runs, records duplicated and shuffled within each
// run (partitions, retries). Reorder restores what verify needs; a
// removed record is still found.
func TestReorderTopicDump(t *testing.T) {
	s := newStream(t)
	s.run(t, 1, 100, 30, true)
	n1 := len(s.lines)
	s.run(t, 1, 40, 15, true)
	var dump []Line
	add := func(part [][]byte, off int) {
		for i, l := range part {
			dump = append(dump, Line{Name: "dump", No: off + i + 1, Data: l})
		}
	}
	shuffle := func(part [][]byte) [][]byte {
		p := slices.Clone(part)
		// The open seal stays first; the rest is reversed in pairs and
		// every fifth record duplicated.
		for i := 1; i+1 < len(p); i += 2 {
			p[i], p[i+1] = p[i+1], p[i]
		}
		for i := 1; i < len(p); i += 5 {
			p = append(p, p[i])
		}
		return p
	}
	// Partitions interleave: the second run's open seal shows before the
	// first run's last records.
	first, second := shuffle(s.lines[:n1]), shuffle(s.lines[n1:])
	add(first[:len(first)-10], 0)
	add(second[:1], len(dump))
	add(first[len(first)-10:], len(dump))
	add(second[1:], len(dump))
	fs, err := Verify(s.k0, SliceSource(Reorder(dump)), VerifyOptions{})
	if err != nil || len(fs) != 0 {
		t.Fatalf("reordered dump: %v %v", fs, err)
	}
	i := slices.IndexFunc(dump, func(l Line) bool { return bytes.Equal(l.Data, record(50)) })
	gone := slices.DeleteFunc(slices.Clone(dump), func(l Line) bool {
		return bytes.Equal(l.Data, record(50)) && l.No != dump[i].No || bytes.Equal(l.Data, record(50))
	})
	fs, err = Verify(s.k0, SliceSource(Reorder(gone)), VerifyOptions{})
	if err != nil || len(fs) == 0 || !strings.Contains(fs[0].Msg, "removed") {
		t.Fatalf("dump without record 50: %v %v", fs, err)
	}
}

// BenchmarkBlockGMAC is the floor of the above: GMAC alone over one
// block of 16 600-byte lines, under the same key schedule.
func BenchmarkBlockGMAC(b *testing.B) {
	var k Key
	aead, err := blockAEAD(&k)
	if err != nil {
		b.Fatal(err)
	}
	block := make([]byte, BlockLines*600)
	var nonce [12]byte
	tag := make([]byte, 0, 16)
	b.SetBytes(int64(len(block)))
	for i := uint64(0); b.Loop(); i++ {
		blockNonce(i, &nonce)
		tag = aead.Seal(tag[:0], nonce[:], nil, block)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*BlockLines), "ns/line")
}

// AppendRun seals exactly what Append does, however the lines are split
// into runs and wherever the seals fall: the same seal lines, byte for
// byte, from two copies of one state.
func TestAppendRunSameAsAppend(t *testing.T) {
	dir := t.TempDir()
	one := filepath.Join(dir, "one")
	if _, err := Keygen(one); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(one)
	if err != nil {
		t.Fatal(err)
	}
	two := filepath.Join(dir, "two")
	if err := os.WriteFile(two, b, 0o600); err != nil {
		t.Fatal(err)
	}
	byLine, err := Open(one, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	byRun, err := Open(two, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1e9, 0)
	same := func(what string, a, b []byte, ea, eb error) {
		t.Helper()
		if ea != nil || eb != nil {
			t.Fatal(ea, eb)
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("%s differs:\n%s\n%s", what, a, b)
		}
	}
	l1, e1 := byLine.Begin(now)
	l2, e2 := byRun.Begin(now)
	same("open seal", l1, l2, e1, e2)
	rng := rand.New(rand.NewPCG(1, 2))
	seq := uint64(0)
	var run []byte
	var ends []int
	for batch := range 400 {
		n := rng.IntN(3 * BlockLines) // 0 lines too
		switch batch % 50 {
		case 10:
			n = BlockLines
		case 20:
			n = 4*BlockLines + 1
		}
		run, ends = run[:0], ends[:0]
		first := seq + 1
		for range n {
			seq++
			l := fmt.Appendf(nil, `{"event":{"sequence":%d},"pad":"%s"}`+"\n", seq, bytes.Repeat([]byte("p"), rng.IntN(2000)))
			byLine.Append(l, seq)
			run = append(run, l...)
			ends = append(ends, len(run))
		}
		byRun.AppendRun(run, ends, first, seq)
		if rng.IntN(8) == 0 {
			now = now.Add(time.Second)
			l1, e1 := byLine.Seal(now)
			l2, e2 := byRun.Seal(now)
			same(fmt.Sprintf("seal after batch %d", batch), l1, l2, e1, e2)
		}
	}
	now = now.Add(time.Second)
	l1, e1 = byLine.Close(now)
	l2, e2 = byRun.Close(now)
	same("closing seal", l1, l2, e1, e2)
}
