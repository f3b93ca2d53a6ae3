package seal

import (
	"crypto/cipher"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/fanaudit/fanaudit/internal/safefile"
)

// lockSuffix names the lock file beside a state file (NAME.lock). The
// state file itself cannot carry the lock: each seal replaces it.
const lockSuffix = ".lock"

// DefaultInterval is the default seal_interval.
const DefaultInterval = 10 * time.Second

// Sealer seals one sink's output. The sink calls Begin before its first
// line, Append for every record line it wrote (in write order, after the
// write), Seal when Due says so (and before a rotation, if it likes), and
// Close at a clean stop; it writes each returned seal line itself, before
// any later record line. A Sealer is safe for one writer at a time; its
// methods lock so that a timer may ask Due beside the writer.
type Sealer struct {
	path     string
	dir      *safefile.Dir
	lock     *os.File // flock held while this Sealer writes the chain
	name     string
	interval time.Duration

	mu    sync.Mutex
	st    state
	key   Key
	head  [32]byte
	aead  cipher.AEAD
	prev  [32]byte // head after the last seal line
	begun bool
	done  bool

	block      []byte
	blockLines int
	blocks     uint64 // finished blocks in this epoch (the GMAC nonce)
	lines      uint64
	firstSeq   uint64
	lastSeq    uint64
	marks      []byte
	markEvery  uint64
	lastSeal   time.Time
	tag        []byte
	nonce      [12]byte
}

// Open loads the state file at path. interval <= 0 means DefaultInterval.
func Open(path string, interval time.Duration) (*Sealer, error) {
	if interval <= 0 {
		interval = DefaultInterval
	}
	d, name, err := stateDir(path, false)
	if err != nil {
		return nil, err
	}
	// A chain has exactly one writer: a second agent (or sink) on the same
	// state would fork it, and the second seal would look like tampering.
	lock, err := d.Lock(name+lockSuffix, 0o600)
	if err != nil {
		d.Close()
		if errors.Is(err, safefile.ErrLocked) {
			return nil, fmt.Errorf("%w: %s is in use by another running writer (one chain, one writer): %w", ErrState, path, err)
		}
		return nil, fmt.Errorf("%w: %w", ErrState, err)
	}
	st, k, head, err := loadState(d, name)
	if err != nil {
		lock.Close()
		d.Close()
		return nil, err
	}
	s := &Sealer{path: path, dir: d, lock: lock, name: name, interval: interval, st: st, key: k, head: head, prev: head,
		block: make([]byte, 0, 64<<10), tag: make([]byte, 0, 16), markEvery: 1, marks: make([]byte, 0, maxMarks*markSize)}
	if s.aead, err = blockAEAD(&s.key); err != nil {
		lock.Close()
		d.Close()
		return nil, err
	}
	return s, nil
}

// Path returns the state file's path.
func (s *Sealer) Path() string { return s.path }

// Interval returns the seal interval.
func (s *Sealer) Interval() time.Duration { return s.interval }

// Begin returns the open seal that starts this run's part of the chain.
// It covers no lines: lines an earlier run wrote after its last seal
// (an unclean stop) stay visibly unsealed.
func (s *Sealer) Begin(now time.Time) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.begun = true
	return s.sealLocked(now, KindOpen)
}

// Append adds one record line the sink wrote (a trailing '\n' is
// ignored), with its event.sequence. It allocates nothing. A sink that
// writes many lines at once gives them to AppendRun instead, which copies
// less.
func (s *Sealer) Append(line []byte, seq uint64) {
	if n := len(line); n > 0 && line[n-1] == '\n' {
		line = line[:n-1]
	}
	s.mu.Lock()
	if s.lines == 0 {
		s.firstSeq = seq
	}
	s.lastSeq = seq
	s.lines++
	s.block = append(s.block, line...)
	s.block = append(s.block, '\n')
	s.blockLines++
	if s.blockLines == BlockLines {
		s.finishBlock()
	}
	s.mu.Unlock()
}

// AppendRun adds the lines a sink wrote as one run of bytes: run holds
// them back to back, each ending in '\n', and ends[i] is the offset in
// run just past line i (so the last is len(run)); first and last are the
// event.sequence of the first and the last line. The blocks are the same
// as if each line went through Append, but every block that lies wholly
// inside run is authenticated where it lies: only a block that spans two
// runs is copied. It allocates nothing.
func (s *Sealer) AppendRun(run []byte, ends []int, first, last uint64) {
	if len(ends) == 0 {
		return
	}
	s.mu.Lock()
	if s.lines == 0 {
		s.firstSeq = first
	}
	s.lastSeq = last
	s.lines += uint64(len(ends))
	start, i := 0, 0
	if s.blockLines > 0 {
		// Complete the block the previous run left open.
		need := BlockLines - s.blockLines
		if need > len(ends) {
			s.block = append(s.block, run...)
			s.blockLines += len(ends)
			s.mu.Unlock()
			return
		}
		start, i = ends[need-1], need
		s.block = append(s.block, run[:start]...)
		s.finishBlock()
	}
	for ; i+BlockLines <= len(ends); i += BlockLines {
		end := ends[i+BlockLines-1]
		s.tagBlock(run[start:end])
		start = end
	}
	s.block = append(s.block[:0], run[start:]...)
	s.blockLines = len(ends) - i
	s.mu.Unlock()
}

// finishBlock closes the block being collected in s.block.
func (s *Sealer) finishBlock() {
	s.tagBlock(s.block)
	s.block = s.block[:0]
	s.blockLines = 0
}

// tagBlock authenticates the next block of the epoch, b, and folds its
// tag into the chain.
func (s *Sealer) tagBlock(b []byte) {
	blockNonce(s.blocks, &s.nonce)
	s.tag = s.aead.Seal(s.tag[:0], s.nonce[:], nil, b)
	chainBlock(&s.head, s.tag)
	s.blocks++
	// Marks: the head after every markEvery-th block of the segment;
	// when there are too many, keep every second one.
	if s.blocks%s.markEvery == 0 {
		s.marks = append(s.marks, s.head[:markSize]...)
		if len(s.marks) == maxMarks*markSize {
			n := 0
			for i := markSize; i < len(s.marks); i += 2 * markSize {
				copy(s.marks[n:n+markSize], s.marks[i:i+markSize])
				n += markSize
			}
			s.marks = s.marks[:n]
			s.markEvery *= 2
		}
	}
}

// Due reports whether a seal is due: lines are waiting and the interval
// has passed since the last seal.
func (s *Sealer) Due(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lines > 0 && !now.Before(s.lastSeal.Add(s.interval))
}

// Pending reports whether lines wait for a seal.
func (s *Sealer) Pending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lines > 0
}

// NextDue returns when the next seal falls due, and false when no line
// waits for one.
func (s *Sealer) NextDue() (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastSeal.Add(s.interval), s.lines > 0
}

// Seal returns an interval seal line ('\n'-terminated) over the lines
// appended since the last seal. The epoch key has evolved and the state
// file has been replaced before it returns; an error says the state file
// could not be written (the line is still returned and must be written:
// the chain already includes it).
func (s *Sealer) Seal(now time.Time) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sealLocked(now, KindInterval)
}

// Close returns the closing seal of a clean stop. Later calls return nil.
func (s *Sealer) Close(now time.Time) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return nil, nil
	}
	line, err := s.sealLocked(now, KindClose)
	s.done = true
	clear(s.key[:])
	if cerr := s.dir.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("%w: %w", ErrState, cerr)
	}
	s.lock.Close() // only releases the lock: nothing was written through it
	return line, err
}

func (s *Sealer) sealLocked(now time.Time, kind string) ([]byte, error) {
	if s.done {
		return nil, fmt.Errorf("%w: sealer closed", ErrState)
	}
	if s.blockLines > 0 {
		s.finishBlock()
	}
	r := Record{
		Version: Version, KeyID: s.st.KeyID, Epoch: s.st.Epoch, Kind: kind,
		Lines: s.lines, Blocks: s.blocks, FirstSeq: s.firstSeq, LastSeq: s.lastSeq,
		Prev: hex.EncodeToString(s.prev[:]), Head: hex.EncodeToString(s.head[:]),
		MarkEvery: s.markEvery, Marks: encodeMarks(s.marks), Time: now,
	}
	line := appendLine(make([]byte, 0, 512+len(r.Marks)), &r, &s.key)
	chainSeal(&s.head, line)
	s.prev = s.head
	s.key.evolve()
	s.st.Epoch++
	aead, aerr := blockAEAD(&s.key)
	if aerr == nil {
		s.aead = aead
	}
	s.blocks, s.lines, s.firstSeq, s.lastSeq = 0, 0, 0, 0
	s.marks, s.markEvery = s.marks[:0], 1
	s.lastSeal = now
	err := saveState(s.dir, s.name, s.st, &s.key, &s.head)
	if aerr != nil {
		err = aerr
	}
	return append(line, '\n'), err
}

// Epoch returns the epoch the next seal will carry.
func (s *Sealer) Epoch() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.Epoch
}
