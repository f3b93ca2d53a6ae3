package seal

import (
	"bytes"
	"crypto/cipher"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Line is one line of a sealed stream, without its '\n'.
type Line struct {
	Name string // file the line is in
	No   int    // 1-based line number in that file
	Data []byte // valid only during the callback
}

// Source yields a stream's lines in order; Verify calls it twice.
type Source func(yield func(Line) bool) error

// Finding is one problem Verify found, located in a file and line.
type Finding struct {
	Name string
	Line int
	Msg  string
}

func (f Finding) String() string {
	if f.Name == "" {
		return f.Msg
	}
	return fmt.Sprintf("%s:%d: %s", f.Name, f.Line, f.Msg)
}

// VerifyOptions tune Verify.
type VerifyOptions struct {
	// AllowPruned accepts a stream that starts after epoch 0 (older
	// rotated files pruned by max_backups): its first seal is trusted as
	// the start.
	AllowPruned bool
}

// maxEpochStep bounds how far past the last epoch a seal may claim to be
// before it is called a forgery without deriving its key (a forged huge
// epoch would otherwise cost a derivation per epoch).
const maxEpochStep = 1 << 24

// windowBytesCap bounds the record bytes kept to locate a problem.
const windowBytesCap = 8 << 20

type sealAt struct {
	pos   Line // Data is a copy
	idx   int  // index in the stream
	rec   *Record
	lines int  // data lines between the previous valid seal and this one
	after bool // a forged seal lies between the previous valid seal and this one
}

// Verify checks a sealed stream with the verification key k0 and returns
// its findings: none means intact and closed by a clean stop's seal. The
// error is for a source that cannot be read.
func Verify(k0 Key, src Source, opt VerifyOptions) ([]Finding, error) {
	r, err := VerifyReport(k0, src, opt)
	return r.Findings, err
}

// Report is what Verify found, with what an auditor compares against the
// stream's expected end: a stream cut back to an earlier clean stop looks
// intact, and only its last epoch and time tell (docs/sealing.md).
type Report struct {
	Findings   []Finding
	Records    int // record lines, seals not counted
	Seals      int // valid seal records
	FirstEpoch uint64
	LastEpoch  uint64
	LastTime   time.Time
}

// VerifyReport is Verify with the report.
func VerifyReport(k0 Key, src Source, opt VerifyOptions) (Report, error) {
	v := &verifier{k0: k0, keyID: k0.ID(), cacheKey: k0, opt: opt, forged: map[int]bool{}}
	if err := v.scan(src); err != nil {
		return Report{}, err
	}
	if v.wrongKey != nil {
		return Report{Findings: []Finding{*v.wrongKey}}, nil
	}
	if err := v.check(src); err != nil {
		return Report{}, err
	}
	r := Report{Findings: v.findings, Records: v.records, Seals: len(v.seals)}
	if n := len(v.seals); n > 0 {
		r.FirstEpoch, r.LastEpoch, r.LastTime = v.seals[0].rec.Epoch, v.seals[n-1].rec.Epoch, v.seals[n-1].rec.Time
	}
	return r, nil
}

type verifier struct {
	k0       Key
	keyID    string
	opt      VerifyOptions
	cacheKey Key
	cacheEp  uint64

	seals    []sealAt
	records  int
	forged   map[int]bool
	wrongKey *Finding
	findings []Finding
}

func (v *verifier) add(pos Line, format string, a ...any) {
	v.findings = append(v.findings, Finding{Name: pos.Name, Line: pos.No, Msg: fmt.Sprintf(format, a...)})
}

func (v *verifier) key(epoch uint64) Key {
	if epoch < v.cacheEp {
		v.cacheKey, v.cacheEp = v.k0, 0
	}
	for v.cacheEp < epoch {
		v.cacheKey.evolve()
		v.cacheEp++
	}
	return v.cacheKey
}

// scan is the first pass: it finds the seal records, checks their MACs
// and counts the record lines between the valid ones.
func (v *verifier) scan(src Source) error {
	idx := -1
	data := 0
	forged := false
	var maxEp uint64
	return src(func(l Line) bool {
		idx++
		if !IsSeal(l.Data) {
			data++
			v.records++
			return true
		}
		r, err := ParseRecord(l.Data)
		if err != nil {
			v.forged[idx], forged = true, true
			v.add(l, "malformed seal record (%v): a forged or altered seal", err)
			return true
		}
		if r.KeyID != v.keyID {
			v.wrongKey = &Finding{Name: l.Name, Line: l.No, Msg: fmt.Sprintf("wrong key: the stream is sealed under key id %s, the given key has id %s", r.KeyID, v.keyID)}
			return false
		}
		if r.Version != Version || r.Epoch > maxEp+maxEpochStep {
			v.forged[idx], forged = true, true
			v.add(l, "seal record with version %d, epoch %d: forged", r.Version, r.Epoch)
			return true
		}
		k := v.key(r.Epoch)
		if !checkMAC(l.Data, &k) {
			v.forged[idx], forged = true, true
			v.add(l, "seal of epoch %d does not verify (its MAC is wrong): a forged or altered seal", r.Epoch)
			return true
		}
		maxEp = max(maxEp, r.Epoch)
		pos := l
		pos.Data = bytes.Clone(l.Data)
		v.seals = append(v.seals, sealAt{pos: pos, idx: idx, rec: r, lines: data, after: forged})
		data, forged = 0, false
		return true
	})
}

// check is the second pass: each segment of record lines against the
// seal that closes it, and the seals against each other.
func (v *verifier) check(src Source) error {
	idx := -1
	si := 0 // the seal that closes the current segment
	var seg *segment
	var first, last Line // first and last data line after the last seal
	tailLines := 0
	err := src(func(l Line) bool {
		idx++
		if v.forged[idx] {
			return true
		}
		if si < len(v.seals) && idx == v.seals[si].idx {
			if seg == nil {
				seg = v.newSegment(si, l)
			}
			v.closeSegment(si, seg)
			seg = nil
			si++
			return true
		}
		if si == len(v.seals) {
			if tailLines == 0 {
				first = Line{Name: l.Name, No: l.No}
			}
			last = Line{Name: l.Name, No: l.No}
			tailLines++
			return true
		}
		if seg == nil {
			seg = v.newSegment(si, l)
		}
		seg.add(l)
		return true
	})
	if err != nil {
		return err
	}
	if len(v.seals) == 0 {
		v.findings = append(v.findings, Finding{Msg: "no valid seal record in the stream: it is not sealed, or sealed under another key, or every seal was removed"})
		return nil
	}
	ls := v.seals[len(v.seals)-1]
	if tailLines > 0 {
		v.add(first, "%d record(s) in lines %s after the last seal (epoch %d) are not sealed: appended, or written after the last seal by an agent that stopped uncleanly or still runs", tailLines, span(first, last), ls.rec.Epoch)
	}
	if ls.rec.Kind != KindClose {
		v.add(ls.pos, "the stream ends without a closing seal (the last seal, epoch %d, is an %s seal): records after it were cut off, or the agent did not stop cleanly or still runs", ls.rec.Epoch, ls.rec.Kind)
	}
	return nil
}

func epochs(a, b uint64) string {
	if a == b {
		return fmt.Sprintf("the seal of epoch %d is", a)
	}
	return fmt.Sprintf("the seals of epochs %d-%d are", a, b)
}

func span(a, b Line) string {
	if a.Name != b.Name {
		return fmt.Sprintf("%s:%d to %s:%d", a.Name, a.No, b.Name, b.No)
	}
	if a.No == b.No {
		return strconv.Itoa(a.No)
	}
	return fmt.Sprintf("%d-%d", a.No, b.No)
}

// segment checks the record lines closed by one seal. When there are more
// lines than the seal covers it also tries the hypothesis that the extra
// lines come first (left by an unclean stop before an open seal, or
// inserted), in a second checker.
type segment struct {
	start     Line
	found     int
	main      *checker
	skip      *checker
	extra     int
	n         int
	extraLast Line
}

func (v *verifier) newSegment(si int, first Line) *segment {
	s := v.seals[si]
	r := s.rec
	seg := &segment{start: Line{Name: first.Name, No: first.No}, found: s.lines}
	prev, _ := decodeHead(r.Prev)
	k := v.key(r.Epoch)
	seg.main = newChecker(&k, prev, r)
	if s.lines > int(r.Lines) {
		seg.extra = s.lines - int(r.Lines)
		seg.skip = newChecker(&k, prev, r)
	}
	return seg
}

func (g *segment) add(l Line) {
	g.n++
	g.main.add(l)
	if g.skip != nil {
		if g.n <= g.extra {
			g.extraLast = Line{Name: l.Name, No: l.No}
		} else {
			g.skip.add(l)
		}
	}
}

func decodeHead(s string) ([32]byte, bool) {
	var h [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return h, false
	}
	copy(h[:], b)
	return h, true
}

func (v *verifier) closeSegment(si int, seg *segment) {
	s := v.seals[si]
	r := s.rec
	// The seal against the one before it.
	if si == 0 {
		switch {
		case r.Epoch != 0 && !v.opt.AllowPruned:
			v.add(s.pos, "the stream starts at the seal of epoch %d: the records of epochs 0-%d are missing (removed, or rotated files pruned: --allow-pruned accepts that)", r.Epoch, r.Epoch-1)
		case r.Epoch == 0 && r.Prev != hex.EncodeToString(make([]byte, 32)):
			v.add(s.pos, "the seal of epoch 0 does not start the chain")
		}
	} else {
		p := v.seals[si-1]
		ph, _ := decodeHead(p.rec.Head)
		chainSeal(&ph, p.pos.Data)
		switch {
		case r.Epoch <= p.rec.Epoch:
			v.add(s.pos, "seal of epoch %d follows the seal of epoch %d at %s:%d: seals reordered or duplicated", r.Epoch, p.rec.Epoch, p.pos.Name, p.pos.No)
		case r.Epoch > p.rec.Epoch+1 && s.after:
			// The forged seal between them is the finding.
		case r.Epoch > p.rec.Epoch+1:
			where := "before this seal"
			if seg.start.Name != p.pos.Name {
				where = fmt.Sprintf("between %s and %s (a rotated file removed?)", p.pos.Name, seg.start.Name)
			}
			v.add(seg.start, "%s missing %s: records or files were removed", epochs(p.rec.Epoch+1, r.Epoch-1), where)
		case r.Prev != hex.EncodeToString(ph[:]):
			v.add(s.pos, "seal of epoch %d does not continue the chain of the seal at %s:%d: seals or records were replaced or reordered", r.Epoch, p.pos.Name, p.pos.No)
		}
	}
	// The records against the seal.
	if seg.skip != nil && seg.skip.ok() {
		v.add(seg.start, "%d record(s) in lines %s are not covered by any seal: inserted, or written after the previous seal by an agent that stopped uncleanly", seg.extra, span(seg.start, seg.extraLast))
		return
	}
	if !seg.main.ok() {
		pos, msg := seg.main.diagnose(int(r.Lines))
		if pos.Name == "" {
			pos = s.pos
		}
		v.add(pos, "%s (sealed by the seal of epoch %d at %s:%d)", msg, r.Epoch, s.pos.Name, s.pos.No)
	}
}

// checker recomputes one segment's chain and compares it with the
// seal's marks, keeping the lines since the last matching mark so that a
// mismatch can be located.
type checker struct {
	r        *Record
	aead     cipher.AEAD
	head     [32]byte
	marks    []byte
	block    []byte
	blockN   int
	blocks   uint64
	lines    int
	nonce    [12]byte
	tag      []byte
	bad      bool    // a mark did not match
	after    int     // lines added to the window after the mismatch
	window   []wline // lines since the last matching mark
	winBytes int
}

type wline struct {
	pos  Line
	data []byte // nil past windowBytesCap
}

func newChecker(k *Key, prev [32]byte, r *Record) *checker {
	c := &checker{r: r, head: prev}
	c.aead, _ = blockAEAD(k)
	c.marks, _ = decodeMarks(r.Marks)
	if r.MarkEvery == 0 {
		r.MarkEvery = 1
	}
	return c
}

func (c *checker) add(l Line) {
	c.lines++
	c.block = append(c.block, l.Data...)
	c.block = append(c.block, '\n')
	c.blockN++
	// After a mismatch the window takes one more block: a swap across
	// a block boundary shows in the order of the lines on both sides.
	if !c.bad || c.after < BlockLines {
		if c.bad {
			c.after++
		}
		w := wline{pos: Line{Name: l.Name, No: l.No}}
		if c.winBytes+len(l.Data) <= windowBytesCap {
			w.data = bytes.Clone(l.Data)
			c.winBytes += len(l.Data)
		}
		c.window = append(c.window, w)
	}
	if c.blockN == BlockLines {
		c.finish()
	}
}

func (c *checker) finish() {
	blockNonce(c.blocks, &c.nonce)
	c.tag = c.aead.Seal(c.tag[:0], c.nonce[:], nil, c.block)
	chainBlock(&c.head, c.tag)
	c.blocks++
	c.block, c.blockN = c.block[:0], 0
	if c.bad || c.blocks%c.r.MarkEvery != 0 {
		return
	}
	i := int(c.blocks/c.r.MarkEvery-1) * markSize
	if i+markSize > len(c.marks) {
		return
	}
	if bytes.Equal(c.marks[i:i+markSize], c.head[:markSize]) {
		c.window, c.winBytes = c.window[:0], 0
		return
	}
	c.bad = true
}

func (c *checker) ok() bool {
	if c.blockN > 0 {
		c.finish()
	}
	return !c.bad && c.lines == int(c.r.Lines) && c.blocks == c.r.Blocks && hex.EncodeToString(c.head[:]) == c.r.Head
}

// diagnose names the line a mismatch is located at and what happened
// there, as far as the record lines themselves tell: the window of lines
// since the last matching mark contains the first difference.
func (c *checker) diagnose(want int) (Line, string) {
	w := c.window
	cut := len(w) - c.after // the mismatching lines, before the extra block
	if len(w) == 0 {
		return Line{}, fmt.Sprintf("record(s) removed at the end of the segment %s", c.countNote(want))
	}
	first, last := w[0].pos, w[len(w)-1].pos
	rng := span(first, last)
	var seqs []int64
	for _, x := range w {
		seqs = append(seqs, SequenceOf(x.data))
	}
	for i, x := range w {
		if x.data != nil && !json.Valid(x.data) {
			return x.pos, fmt.Sprintf("record changed: not valid JSON any more %s", c.countNote(want))
		}
		if i > 0 && seqs[i] >= 0 && seqs[i-1] >= 0 {
			switch {
			case seqs[i] < seqs[i-1]:
				return w[i-1].pos, fmt.Sprintf("records reordered: event.sequence %d at line %d comes before %d at line %d %s", seqs[i-1], w[i-1].pos.No, seqs[i], x.pos.No, c.countNote(want))
			case seqs[i] == seqs[i-1]:
				return x.pos, fmt.Sprintf("record inserted: event.sequence %d repeats %s", seqs[i], c.countNote(want))
			case c.lines < want && seqs[i] > seqs[i-1]+1:
				return x.pos, fmt.Sprintf("record(s) removed before this line: event.sequence jumps from %d to %d %s", seqs[i-1], seqs[i], c.countNote(want))
			}
		}
	}
	if cut > 0 {
		last = w[cut-1].pos
		rng = span(first, last)
		w = w[:cut]
	}
	switch {
	case c.lines < want:
		return first, fmt.Sprintf("record(s) removed in lines %s %s", rng, c.countNote(want))
	case c.lines > want:
		return first, fmt.Sprintf("record(s) inserted in lines %s %s", rng, c.countNote(want))
	}
	if len(w) == 1 {
		return first, "record changed"
	}
	return first, fmt.Sprintf("record changed: one of lines %s differs from what was sealed", rng)
}

func (c *checker) countNote(want int) string {
	if c.lines == want {
		return ""
	}
	return fmt.Sprintf("(%d lines where %d were sealed)", c.lines, want)
}

// SequenceOf returns a record line's event.sequence, or -1.
func SequenceOf(b []byte) int64 {
	i := bytes.Index(b, []byte(`"sequence":`))
	if i < 0 {
		return -1
	}
	b = b[i+len(`"sequence":`):]
	n := 0
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		n++
	}
	v, err := strconv.ParseInt(string(b[:n]), 10, 64)
	if err != nil {
		return -1
	}
	return v
}
