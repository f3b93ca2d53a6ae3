package kafka

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fanaudit/fanaudit/internal/record"
	"github.com/fanaudit/fanaudit/internal/safefile"
	"github.com/fanaudit/fanaudit/sinks"
	kafkago "github.com/segmentio/kafka-go"
)

// On-disk spool layout: dir/seg-<20-digit id>.log segments, append-only,
// and dir/cursor holding "<segment id> <offset>" of the first record not
// yet acknowledged by the broker. A segment holds frames of two kinds.
// One record (seal records, and spools written before record sets were):
//
//	magic u32 | payload length u32 | crc32c(payload) u32 | payload
//	payload = uvarint len | event id | uvarint len | key | value
//
// A record set, the batch of one produce request as encodeRecordSet made
// it (compressed), which the replayer sends as it is:
//
//	setMagic u32 | payload length u32 | crc32c(payload) u32 | records u32 |
//	crc32c(the 16 bytes before) u32 | payload
//	payload = uvarint len | first event id | uvarint len | key | record set
//
// The set's header has its own CRC, so a set whose bytes are damaged is
// still counted exactly (records) and skipped whole. The magics let the
// reader resynchronise after a corrupt frame instead of giving up on the
// rest of the segment.
const (
	spoolMagic     uint32 = 0xFA5B001D
	setMagic       uint32 = 0xFA5B5E75
	recordHeader          = 12
	setHeader             = 20
	recordOverhead        = recordHeader + 2*binary.MaxVarintLen64
	setOverhead           = setHeader + 2*binary.MaxVarintLen64
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errSpoolFull is returned by append under drop_newest when the cap is hit.
var errSpoolFull = errors.New("spool full")

// spoolRec is one spooled message.
type spoolRec struct {
	ID    string
	Key   []byte
	Value []byte
}

func (r *spoolRec) size() int { return len(r.ID) + len(r.Key) + len(r.Value) }

type segment struct {
	id    uint64
	size  int64
	count int64 // valid records in the segment, from from on
	items int64 // of count, queue items (seal records are not)
	// bad counts the records in damaged frames from from on, found by the
	// start-up scan of an earlier run's segment (a set whose header is
	// intact counts its records, any other damaged stretch one, as the
	// reader counts them): drop_oldest announces those the reader has not
	// reached.
	bad int64
	// from is where counting starts: an earlier run's segment the cursor
	// points into had the records before it acknowledged.
	from int64
	// run is the agent run whose records the segment holds: "" for this
	// run (segments are never shared between runs), else the run id of
	// its first readable record ("unknown" when it has none).
	run string
	// Of this run's segments: torn says a failed write left a torn frame
	// at tornAt (the segment then ends there, and nothing from tornAt on
	// was owed to anybody); badDone counts the records of damaged frames
	// in it that commit announced (drop_oldest does not count them again).
	torn    bool
	tornAt  int64
	badDone int64
}

// spoolLoss is called, under the spool lock, for spooled records that will
// never be sent: reason is record.ReasonSpoolFull or ReasonSpoolCorrupt,
// run is "" for this run's records, else the earlier run's id.
type spoolLoss func(reason, run string, n int64)

// runOfID returns the run id inside an event id
// <host.id>:<boot.id>:<run id>:<sequence>.
func runOfID(id string) string {
	i := strings.LastIndexByte(id, ':')
	if i < 0 {
		return "unknown"
	}
	j := strings.LastIndexByte(id[:i], ':')
	if j < 0 {
		return "unknown"
	}
	return id[j+1 : i]
}

type spoolPos struct {
	seg uint64
	off int64
}

// spool is safe for concurrent appenders (each append is written whole,
// under the lock) and one reader, the replayer.
type spool struct {
	dir      string
	segBytes int64
	maxBytes int64
	fsync    sinks.FsyncMode
	interval time.Duration
	policy   sinks.Policy

	mu       sync.Mutex
	space    chan struct{} // closed and replaced whenever space is freed
	notify   chan struct{} // signalled after every append, for the replayer
	segs     []segment     // oldest first; the last one is active when w != nil
	w        *os.File
	lastSync time.Time
	dirty    bool     // appended since the last fsync
	read     spoolPos // next record to read
	ack      spoolPos // first record not acknowledged
	total    int64    // bytes in all segments
	pending  int64    // records not yet acknowledged or dropped
	corrupt  uint64
	dropped  uint64   // records discarded by drop_oldest
	enc      []byte   // frames of the append in progress
	encEnds  []encEnd // where each of them ends
	rf       *os.File // reader's handle on segment rfID
	rfID     uint64
	rfStale  bool // rf's segment was removed: the reader closes rf (it may be reading it unlocked)

	// The reader's buffers (next): records point into rbuf until the
	// next call.
	rbuf []byte
	rout []spooled
	rAvg int // average frame size seen, to size reads

	unsynced    []*os.File // segments rotated out, for the syncer to fsync and close (fsync = "interval")
	cursorAt    time.Time  // last cursor write
	cursorDirty bool       // the ack position moved since
	nextID      uint64     // ids only grow, so the cursor never points past a new segment

	// Loss accounting (see the package doc). runOwed counts this run's
	// records appended and not yet settled (acknowledged, dead-lettered or
	// lost); once the reader has caught up with the writer, whatever it
	// still counts was unreadable. gone holds records the reader had read
	// from a segment drop_oldest then removed: they are the replayer's to
	// settle, unless it rewinds.
	onLoss  spoolLoss
	onOwed  func(delta int64) // told of every runOwed change, under the lock
	runOwed int64
	gone    []goneRecs
	// readLost holds the damaged frames the reader passed for the batch
	// it handed out (next), of any run. They are announced when the
	// replayer commits past them, not when read: a rewind (the sink
	// stopping with the batch unacknowledged) reads them again, in this
	// run or the next, which would announce them twice; and this run's
	// cannot wait for the replay to catch up with the writer (see next),
	// since the run may end first, and the next run, starting from the
	// cursor past them, would never see them. A rewind announces an
	// earlier run's whose segment drop_oldest removed, as it can no longer
	// be read again (drop_oldest counts this run's).
	readLost []readLoss
	// cursorNow asks commit to write the cursor at once: a loss was
	// announced among the records it commits (a damaged frame, a dead
	// letter), which a crash must not have the next run announce again.
	cursorNow bool
}

type readLoss struct {
	at  spoolPos // where the damaged frame starts
	run string
	n   int64
}

type goneRecs struct {
	run string
	n   int64 // queue items
	all int64 // records, seal records included
}

func openSpool(cfg Spool, policy sinks.Policy, onLoss spoolLoss) (*spool, error) {
	// The spool is replayed into Kafka, so nobody but the agent may have
	// put anything there: internal/safefile walks the path (no directory
	// other users can write, no link they own), creates what is missing
	// 0700, and wants the spool directory itself to be the agent's own.
	// Files in it are checked below before anything is read.
	sdir, err := safefile.OpenDir(cfg.Dir, safefile.Options{Key: "spool.dir", Create: true, DirMode: 0o700, Private: true})
	if err != nil {
		if errors.Is(err, safefile.ErrUnsafe) {
			return nil, err // names the key
		}
		return nil, fmt.Errorf("spool.dir: %w", err)
	}
	defer sdir.Close()
	s := &spool{
		dir: cfg.Dir, segBytes: cfg.SegmentBytes, maxBytes: cfg.MaxBytes,
		fsync: cfg.Fsync, interval: cfg.FsyncInterval.Duration, policy: policy,
		space: make(chan struct{}), notify: make(chan struct{}, 1),
		onLoss: onLoss,
	}
	ents, err := sdir.ReadDir()
	if err != nil {
		return nil, fmt.Errorf("spool.dir: %w", err)
	}
	var ids []uint64
	for _, e := range ents {
		n := e.Name()
		if n == "cursor" || strings.HasPrefix(n, "seg-") {
			// A forged or planted segment (a link, another owner, a
			// mode others can write) is refused, not replayed.
			if err := sdir.Check(n); err != nil {
				return nil, err
			}
		}
		if !strings.HasPrefix(n, "seg-") || !strings.HasSuffix(n, ".log") {
			continue
		}
		id, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(n, "seg-"), ".log"), 10, 64)
		if err != nil {
			continue
		}
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	cur, err := s.loadCursor()
	if err != nil {
		return nil, err
	}
	// Past the cursor's segment too: the cursor is written lazily (see
	// commit), so it may name a segment that was deleted since; a new
	// segment under that id would be read from the stale offset.
	s.nextID = max(cur.seg+1, 1)
	if len(ids) > 0 {
		s.nextID = max(s.nextID, ids[len(ids)-1]+1)
	}
	for _, id := range ids {
		if id < cur.seg {
			// Fully acknowledged before the cursor file was updated.
			_ = os.Remove(s.segPath(id))
			continue
		}
		st, err := os.Stat(s.segPath(id))
		if err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		seg := segment{id: id, size: st.Size()}
		from := int64(0)
		if id == cur.seg {
			from = cur.off
		}
		valid, items, bad, run, err := s.countRecords(id, from, st.Size())
		if err != nil {
			return nil, err
		}
		seg.count, seg.items, seg.bad, seg.run, seg.from = valid, items, bad, run, from
		s.pending += valid
		s.total += seg.size
		s.segs = append(s.segs, seg)
	}
	if len(s.segs) > 0 {
		s.ack = spoolPos{s.segs[0].id, 0}
		if s.segs[0].id == cur.seg {
			s.ack.off = min(cur.off, s.segs[0].size)
		}
	}
	s.read = s.ack
	// Spooled segments from an earlier run are immutable; new records go
	// to a fresh segment, so a torn tail is never appended to.
	return s, nil
}

func (s *spool) segPath(id uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("seg-%020d.log", id))
}

func (s *spool) loadCursor() (spoolPos, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, "cursor"))
	if errors.Is(err, os.ErrNotExist) {
		return spoolPos{}, nil
	}
	if err != nil {
		return spoolPos{}, fmt.Errorf("spool cursor: %w", err)
	}
	var p spoolPos
	if _, err := fmt.Sscanf(string(b), "%d %d", &p.seg, &p.off); err != nil {
		// A torn cursor only costs duplicates: replay from the oldest segment.
		return spoolPos{}, nil
	}
	return p, nil
}

// countRecords scans a segment of an earlier run for valid records from
// off to size and returns their number, how many of them are queue items
// (not seal records), the records in damaged frames (segment.bad), and
// the run they belong to.
func (s *spool) countRecords(id uint64, off, size int64) (n, items, bad int64, run string, err error) {
	f, err := os.Open(s.segPath(id))
	if err != nil {
		return 0, 0, 0, "", fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	for start := int64(0); start < size; {
		rec, k, next, ok, err := readRecord(f, start, size)
		if err != nil {
			return 0, 0, 0, "", fmt.Errorf("spool: scan %s: %w", s.segPath(id), err)
		}
		if !ok && start >= off {
			bad += k
		}
		if ok && run == "" {
			run = runOfID(rec.ID)
		}
		if ok && start >= off {
			n += k
			if !isSealID(rec.ID) {
				items += k
			}
		}
		start = next
	}
	if run == "" {
		run = "unknown"
	}
	return n, items, bad, run, nil
}

// countUpTo counts the valid records of seg that start before off (and
// not before seg.from, as seg.count), the queue items among them, and
// the records of the damaged frames that start before off (seg.bad).
func (s *spool) countUpTo(seg segment, off int64) (n, items, bad int64) {
	if off <= seg.from {
		return 0, 0, 0
	}
	if off >= seg.size {
		return seg.count, seg.items, seg.bad
	}
	f, err := os.Open(s.segPath(seg.id))
	if err != nil {
		return 0, 0, 0
	}
	defer f.Close()
	for pos := int64(0); pos < off; {
		rec, k, next, ok, err := readRecord(f, pos, seg.size)
		if err != nil {
			break
		}
		if ok && pos >= seg.from {
			n += k
			if !isSealID(rec.ID) {
				items += k
			}
		}
		if !ok && pos >= seg.from {
			bad += k
		}
		pos = next
	}
	return n, items, bad
}

// readRecord decodes the frame at off: a record, or a record set of n
// records (rec holds its first event id and key; its Value is the set).
// ok is false for a corrupt frame; next is then where the next plausible
// frame starts, and n the records lost with it: a set's own count when
// its header is intact, else 1 (one damaged stretch, as the reader counts).
func readRecord(f *os.File, off, size int64) (rec spoolRec, n, next int64, ok bool, err error) {
	var h [setHeader]byte
	if off+recordHeader > size {
		return rec, 1, size, false, nil
	}
	hl := int64(recordHeader)
	if _, err := f.ReadAt(h[:recordHeader], off); err != nil {
		return rec, 0, 0, false, fmt.Errorf("read header: %w", err)
	}
	n = 1
	magic := binary.LittleEndian.Uint32(h[:])
	if magic == setMagic && off+setHeader <= size {
		hl = setHeader
		if _, err := f.ReadAt(h[:], off); err != nil {
			return rec, 0, 0, false, fmt.Errorf("read header: %w", err)
		}
		if k, hok := setHeaderCount(h[:]); hok {
			n = k
		} else {
			magic = 0 // resync below
		}
	}
	plen := int64(binary.LittleEndian.Uint32(h[4:]))
	if magic != spoolMagic && (magic != setMagic || hl != setHeader) || off+hl+plen > size {
		next, err := resync(f, off+1, size)
		return rec, n, next, false, err
	}
	payload := make([]byte, plen)
	if _, err := f.ReadAt(payload, off+hl); err != nil {
		return rec, 0, 0, false, fmt.Errorf("read record: %w", err)
	}
	if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(h[8:]) {
		next, err := resync(f, off+1, size)
		return rec, n, next, false, err
	}
	rec, ok = decodePayload(payload)
	if !ok {
		next, err := resync(f, off+1, size)
		return rec, n, next, false, err
	}
	return rec, n, off + hl + plen, true, nil
}

// setHeaderCount checks a set frame's header (its own CRC) and returns
// the number of records in the set.
func setHeaderCount(h []byte) (int64, bool) {
	if crc32.Checksum(h[:16], castagnoli) != binary.LittleEndian.Uint32(h[16:]) {
		return 0, false
	}
	n := int64(binary.LittleEndian.Uint32(h[12:]))
	return n, n > 0
}

// decodePayload is decodeFrame for a payload of its own (readRecord's):
// the id is made a string, key and value stay in p.
func decodePayload(p []byte) (spoolRec, bool) {
	r, ok := decodeFrame(p)
	if !ok {
		return spoolRec{}, false
	}
	return spoolRec{ID: string(r.ID), Key: r.Key, Value: r.Value}, true
}

// resync finds the next magic (of either frame kind) at or after off.
func resync(f *os.File, off, size int64) (int64, error) {
	buf := make([]byte, 64<<10)
	for off < size {
		n, err := f.ReadAt(buf, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("resync: %w", err)
		}
		if n == 0 {
			break
		}
		if i := indexMagic(buf[:n]); i >= 0 {
			return off + int64(i), nil
		}
		if n < 4 {
			break
		}
		off += int64(n - 3)
	}
	return size, nil
}

// appendFrame appends one record's frame to b: the header, then the
// payload, with the CRC computed over the payload in place.
func appendFrame[T string | []byte](b []byte, id T, key, value []byte) []byte {
	start := len(b)
	b = append(b, make([]byte, recordHeader)...)
	b = binary.AppendUvarint(b, uint64(len(id)))
	b = append(b, id...)
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	b = append(b, value...)
	p := b[start+recordHeader:]
	binary.LittleEndian.PutUint32(b[start:], spoolMagic)
	binary.LittleEndian.PutUint32(b[start+4:], uint32(len(p)))
	binary.LittleEndian.PutUint32(b[start+8:], crc32.Checksum(p, castagnoli))
	return b
}

// spoolSet is one record set to spool (producer.encodeSets): N records,
// the first one's event id, their key (one for the whole set: the
// replayer sends it to the partition of that key) and the encoded set.
type spoolSet struct {
	FirstID, Key, Set []byte
	N                 int
}

// appendSetFrame appends a set's frame to b (see the layout above).
func appendSetFrame(b []byte, st *spoolSet) []byte {
	start := len(b)
	b = append(b, make([]byte, setHeader)...)
	b = binary.AppendUvarint(b, uint64(len(st.FirstID)))
	b = append(b, st.FirstID...)
	b = binary.AppendUvarint(b, uint64(len(st.Key)))
	b = append(b, st.Key...)
	b = append(b, st.Set...)
	p := b[start+setHeader:]
	h := b[start : start+setHeader]
	binary.LittleEndian.PutUint32(h, setMagic)
	binary.LittleEndian.PutUint32(h[4:], uint32(len(p)))
	binary.LittleEndian.PutUint32(h[8:], crc32.Checksum(p, castagnoli))
	binary.LittleEndian.PutUint32(h[12:], uint32(st.N))
	binary.LittleEndian.PutUint32(h[16:], crc32.Checksum(h[:16], castagnoli))
	return b
}

var spoolMagicB, setMagicB = binary.LittleEndian.AppendUint32(nil, spoolMagic), binary.LittleEndian.AppendUint32(nil, setMagic)

// indexMagic is the index of the first magic of either frame kind in b,
// or -1.
func indexMagic(b []byte) int {
	i, j := bytes.Index(b, spoolMagicB), bytes.Index(b, setMagicB)
	switch {
	case i < 0:
		return j
	case j < 0:
		return i
	}
	return min(i, j)
}

// frameSource is what append writes: spoolRecs (seal records, tests) or
// the messages of a batch, which are framed straight from the batch.
type frameSource interface {
	len() int
	bound(i int) int              // at most the bytes of frame i
	frame(i int, b []byte) []byte // b with frame i appended
	recs(i int) (n, owed int64)   // records in frame i, and queue items among them (seal records are not)
}

type recSource []spoolRec

func (r recSource) len() int        { return len(r) }
func (r recSource) bound(i int) int { return r[i].size() + recordOverhead }
func (r recSource) recs(i int) (int64, int64) {
	if isSealID(r[i].ID) {
		return 1, 0
	}
	return 1, 1
}
func (r recSource) frame(i int, b []byte) []byte {
	return appendFrame(b, r[i].ID, r[i].Key, r[i].Value)
}

// msgSource frames messages whose first header is the event id.
type msgSource []kafkago.Message

func (m msgSource) len() int { return len(m) }
func (m msgSource) bound(i int) int {
	return len(m[i].Headers[0].Value) + len(m[i].Key) + len(m[i].Value) + recordOverhead
}
func (m msgSource) recs(i int) (int64, int64) {
	if bytes.HasPrefix(m[i].Headers[0].Value, sealIDPrefixB) {
		return 1, 0
	}
	return 1, 1
}
func (m msgSource) frame(i int, b []byte) []byte {
	return appendFrame(b, m[i].Headers[0].Value, m[i].Key, m[i].Value)
}

// setSource frames record sets of queue items (seal records are spooled
// on their own, as records).
type setSource []spoolSet

func (s setSource) len() int { return len(s) }
func (s setSource) bound(i int) int {
	return len(s[i].FirstID) + len(s[i].Key) + len(s[i].Set) + setOverhead
}
func (s setSource) recs(i int) (int64, int64) { return int64(s[i].N), int64(s[i].N) }
func (s setSource) frame(i int, b []byte) []byte {
	return appendSetFrame(b, &s[i])
}

var sealIDPrefixB = []byte(sealIDPrefix)

// append writes recs in order. Under block it waits for space until ctx
// ends; under drop_newest it returns errSpoolFull; under drop_oldest it
// discards the oldest segments and reports how many records that cost.
func (s *spool) append(ctx context.Context, recs []spoolRec) error {
	return s.appendFrom(ctx, recSource(recs))
}

// appendMessages is append for a batch's messages (event id in the first
// header), framed without copying them into spoolRecs first.
func (s *spool) appendMessages(ctx context.Context, msgs []kafkago.Message) error {
	return s.appendFrom(ctx, msgSource(msgs))
}

// appendSets writes record sets in order (see append).
func (s *spool) appendSets(ctx context.Context, sets []spoolSet) error {
	return s.appendFrom(ctx, setSource(sets))
}

// appendFrom frames the records of src into one buffer and writes it with
// one write per segment it touches, so a batch costs one system call and
// one trip through the lock, not one per record.
func (s *spool) appendFrom(ctx context.Context, src frameSource) error {
	if src.len() == 0 {
		return nil
	}
	need := int64(0)
	for i := range src.len() {
		need += int64(src.bound(i))
	}
	s.mu.Lock()
	for s.total+need > s.maxBytes {
		switch s.policy {
		case sinks.DropNewest:
			s.mu.Unlock()
			return errSpoolFull
		case sinks.DropOldest:
			if !s.dropOldestLocked() {
				s.mu.Unlock()
				return errSpoolFull
			}
			continue
		}
		wait := s.space
		s.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return fmt.Errorf("spool full, waiting for replay: %w", ctx.Err())
		}
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	written := int64(0) // this append's queue items written whole
	s.enc, s.encEnds = s.enc[:0], s.encEnds[:0]
	for i := range src.len() {
		if s.w == nil || s.segs[len(s.segs)-1].size+int64(len(s.enc)) >= s.segBytes {
			if err := s.flushLocked(&written); err != nil {
				s.unwriteLocked(written)
				return err
			}
			if err := s.rotateLocked(); err != nil {
				s.unwriteLocked(written)
				return err
			}
		}
		s.enc = src.frame(i, s.enc)
		n, owed := src.recs(i)
		s.encEnds = append(s.encEnds, encEnd{end: len(s.enc), n: n, owed: owed})
	}
	if err := s.flushLocked(&written); err != nil {
		s.unwriteLocked(written)
		return err
	}
	select {
	case s.notify <- struct{}{}:
	default:
	}
	s.dirty = true
	switch {
	case s.fsync == sinks.FsyncAlways:
		// fsync = "interval" is the syncer's (syncDue), off the lock and
		// off the path that takes batches from the queue.
		return s.syncLocked()
	}
	return nil
}

// encEnd is where a frame ends in spool.enc, with its records and the
// queue items among them.
type encEnd struct {
	end     int
	n, owed int64
}

// flushLocked writes the frames buffered in s.enc to the active segment
// and accounts for every record written whole; written counts the queue
// items among them.
func (s *spool) flushLocked(written *int64) error {
	if len(s.enc) == 0 {
		return nil
	}
	n, err := s.w.Write(s.enc)
	last := &s.segs[len(s.segs)-1]
	owed := int64(0)
	whole := 0 // bytes of the frames written whole
	for _, e := range s.encEnds {
		if e.end > n {
			break
		}
		whole = e.end
		last.count += e.n
		s.pending += e.n
		owed += e.owed
		last.items += e.owed
	}
	s.oweLocked(owed)
	*written += owed
	s.enc, s.encEnds = s.enc[:0], s.encEnds[:0]
	if err != nil {
		// A short write leaves a torn record that the reader skips as
		// corrupt; the caller keeps the batch and retries elsewhere.
		// The segment's size must still cover the torn bytes, or later
		// records would start past where the reader expects them, so
		// account for them and close the segment: the next append
		// starts a new one.
		if n > whole {
			last.torn, last.tornAt = true, last.size+int64(whole)
		}
		last.size += int64(n)
		s.total += int64(n)
		s.w.Close()
		s.w = nil
		return fmt.Errorf("spool write: %w", err)
	}
	last.size += int64(n)
	s.total += int64(n)
	return nil
}

// unwriteLocked undoes the loss accounting of records a failed append
// wrote before failing: the caller keeps the whole batch and settles it
// itself, so their spooled copies are duplicates owed to nobody.
func (s *spool) unwriteLocked(n int64) {
	s.oweLocked(-n)
}

// oweLocked changes runOwed and tells the sink, which parks and unparks
// the items on its queue in step.
func (s *spool) oweLocked(delta int64) {
	if delta == 0 {
		return
	}
	s.runOwed += delta
	if s.onOwed != nil {
		s.onOwed(delta)
	}
}

// settleRun records that n of this run's spooled records were settled by
// the caller (acknowledged or dead-lettered) and returns how many of them
// it still owed: duplicates left by a failed append are not owed.
func (s *spool) settleRun(n int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n = max(min(n, s.runOwed), 0)
	s.oweLocked(-n)
	return n
}

// takeRunOwed returns this run's records still in the spool and forgets
// them: at the end of a run they are handed to the next one.
func (s *spool) takeRunOwed() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.runOwed
	s.oweLocked(-n)
	return n
}

func (s *spool) lostLocked(reason, run string, n int64) {
	if n <= 0 {
		return
	}
	if run == "" {
		n = min(n, s.runOwed)
		s.oweLocked(-n)
	}
	if s.onLoss != nil && n > 0 {
		s.onLoss(reason, run, n)
	}
}

// lose announces n spooled records that will never be sent (see
// lostLocked); they are taken as acknowledged by the next commit.
func (s *spool) lose(reason, run string, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if reason == record.ReasonSpoolCorrupt {
		s.corrupt += uint64(n)
	}
	s.lostLocked(reason, run, n)
	s.cursorNow = true
}

// announced tells the spool that the replayer announced a loss among the
// records it commits next (a dead letter): commit then writes the cursor
// at once, so that a crash does not have the next run announce it again.
func (s *spool) announced() {
	s.mu.Lock()
	s.cursorNow = true
	s.mu.Unlock()
}

func (s *spool) syncLocked() error {
	if s.w == nil || !s.dirty {
		return nil
	}
	if err := s.w.Sync(); err != nil {
		return fmt.Errorf("spool fsync: %w", err)
	}
	s.lastSync = time.Now()
	s.dirty = false
	return nil
}

// syncDue fsyncs what was appended since its last call: the sink calls it
// every fsync_interval (fsync = "interval").
//
// The fsyncs run without the spool's lock: an fsync of a segment can take
// hundreds of milliseconds on a busy disk, and appends (the sink taking
// batches from its queue, which the capture waits on when full) must not
// wait for it. Segments closed by rotation since the last call are synced
// and closed here too. A segment the spool closes meanwhile (everything
// delivered, or a failed write) makes its Sync fail harmlessly.
func (s *spool) syncDue() error {
	s.mu.Lock()
	if s.fsync != sinks.FsyncInterval || !s.dirty && len(s.unsynced) == 0 {
		s.mu.Unlock()
		return nil
	}
	w, old := s.w, s.unsynced
	if !s.dirty {
		w = nil
	}
	s.unsynced, s.dirty, s.lastSync = nil, false, time.Now()
	s.mu.Unlock()
	var errs []error
	for _, f := range old {
		if err := f.Sync(); err != nil {
			errs = append(errs, fmt.Errorf("spool fsync: %w", err))
		}
		if err := f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("spool close segment: %w", err))
		}
	}
	if w != nil {
		if err := w.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, fmt.Errorf("spool fsync: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (s *spool) rotateLocked() error {
	if s.w != nil {
		switch s.fsync {
		case sinks.FsyncInterval:
			// Synced and closed by the syncer (syncDue), off the lock.
			s.unsynced = append(s.unsynced, s.w)
		case sinks.FsyncAlways:
			if err := s.w.Sync(); err != nil {
				return fmt.Errorf("spool fsync: %w", err)
			}
			fallthrough
		default:
			if err := s.w.Close(); err != nil {
				return fmt.Errorf("spool close segment: %w", err)
			}
		}
		s.w = nil
	}
	id := s.nextID
	s.nextID++
	f, err := os.OpenFile(s.segPath(id), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("spool new segment: %w", err)
	}
	s.w = f
	s.segs = append(s.segs, segment{id: id}) // run "": this run
	if len(s.segs) == 1 {
		s.read = spoolPos{id, 0}
		s.ack = s.read
	}
	return nil
}

// dropOldestLocked discards the oldest segment that is not being written.
func (s *spool) dropOldestLocked() bool {
	if len(s.segs) < 2 {
		return false
	}
	old := s.segs[0]
	// Records before the ack position were delivered; records between it
	// and the read position are in the replayer's hands (it settles them
	// when the broker answers); only records not yet read are lost here.
	// Seal records are counted in pending, but are no queue item to
	// announce (items).
	// An earlier run's damaged frames the reader has not reached are
	// announced here: the reader announces those it passes (next).
	acked, ackedItems := int64(0), int64(0)
	read, readItems, badRead := old.count, old.items, old.bad
	if s.ack.seg == old.id {
		acked, ackedItems, _ = s.countUpTo(old, s.ack.off)
	}
	if s.read.seg == old.id {
		read, readItems, badRead = s.countUpTo(old, s.read.off)
	}
	read, readItems = max(read, acked), max(readItems, ackedItems)
	// Of this run's segment, items counts every record written whole, so
	// lost covers its damaged frames too, except those commit announced;
	// those the reader passed and nobody committed yet are counted here
	// and forgotten by readLost.
	lost := old.items - readItems
	if old.run == "" {
		lost = max(lost-old.badDone, 0)
		s.readLost = slices.DeleteFunc(s.readLost, func(l readLoss) bool { return l.at.seg == old.id })
	}
	if read > acked {
		s.gone = append(s.gone, goneRecs{run: old.run, n: readItems - ackedItems, all: read - acked})
	}
	_ = os.Remove(s.segPath(old.id))
	s.segs = s.segs[1:]
	s.total -= old.size
	s.pending -= old.count - read
	s.dropped += uint64(lost)
	s.lostLocked(record.ReasonSpoolFull, old.run, lost)
	if bad := old.bad - badRead; bad > 0 && old.run != "" {
		s.corrupt += uint64(bad)
		s.lostLocked(record.ReasonSpoolCorrupt, old.run, bad)
	}
	next := spoolPos{s.segs[0].id, 0}
	if s.read.seg == old.id {
		s.read = next
	}
	if s.ack.seg == old.id {
		s.ack = next
	}
	if s.rf != nil && s.rfID == old.id {
		s.rfStale = true // the reader may be reading it right now
	}
	s.freedLocked()
	return true
}

func (s *spool) freedLocked() {
	close(s.space)
	s.space = make(chan struct{})
}

// empty reports whether every spooled record was acknowledged. It goes by
// positions, not by the pending count, which drop_oldest can make
// approximate while a replayed batch is in flight.
func (s *spool) empty() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.emptyLocked()
}

func (s *spool) emptyLocked() bool {
	if len(s.segs) == 0 {
		return true
	}
	last := s.segs[len(s.segs)-1]
	return s.ack.seg == last.id && s.ack.off >= last.size
}

// spooled is one record read back from the spool, or a record set (Set
// not nil: N records, ID the first one's event id, Key theirs). Its
// slices point into the reader's buffer and stay valid until the next
// call of next.
type spooled struct {
	ID, Key, Value []byte
	Set            []byte
	N              int
	end            spoolPos // after its frame: where a commit of it and what precedes it moves the cursor
}

func (r *spooled) size() int { return len(r.ID) + len(r.Key) + len(r.Value) + len(r.Set) }

// records is how many records r holds.
func (r *spooled) records() int {
	if r.Set != nil {
		return r.N
	}
	return 1
}

// countSpooled is how many records rs hold.
func countSpooled(rs []spooled) int {
	n := 0
	for i := range rs {
		n += rs[i].records()
	}
	return n
}

// readChunkMin is the smallest read the reader makes (unless the segment
// ends sooner): large sequential reads, parsed in memory.
const readChunkMin = 64 << 10

// next reads up to maxN records / maxBytes from the read position and
// returns them with the position after the last one. Corrupt records are
// skipped and counted. The spool lock is not held while reading or
// parsing, so appends never wait for the reader: it reads a stretch of
// the segment in one pread, frames records out of it without copying,
// and then moves the read position, unless drop_oldest removed the
// segment meanwhile (then what it read was counted as lost, and it reads
// again from where drop_oldest left the position).
func (s *spool) next(maxN int, maxBytes int64) ([]spooled, spoolPos, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.rout[:0]
	s.rbuf = s.rbuf[:0]
	var size int64
	recs := 0       // records in out
	resync := false // scanning for the next magic after a corrupt record
	minRead := 0
	for recs < maxN && size < maxBytes {
		i := s.segIndexLocked(s.read.seg)
		if i < 0 {
			break
		}
		seg := s.segs[i]
		if s.read.off >= seg.size {
			if i == len(s.segs)-1 {
				break // caught up with the writer
			}
			s.read, resync, minRead = spoolPos{s.segs[i+1].id, 0}, false, 0
			continue
		}
		if s.rf == nil || s.rfID != seg.id || s.rfStale {
			if s.rf != nil {
				s.rf.Close()
			}
			s.rf, s.rfStale = nil, false
			f, err := os.Open(s.segPath(seg.id))
			if err != nil {
				s.rout = out
				return out, s.read, fmt.Errorf("spool open segment: %w", err)
			}
			s.rf, s.rfID = f, seg.id
		}
		from := s.read
		want := s.readSize(maxN-recs, maxBytes-size, minRead, seg.size-from.off)
		rf := s.rf
		s.mu.Unlock()
		buf, err := s.readAt(rf, from.off, want)
		var scan frameScan
		if err == nil {
			scan = scanFrames(buf, from.off, seg.size, resync, out, maxN-recs, maxBytes-size)
		}
		s.mu.Lock()
		if err != nil {
			s.rout = out
			return out, s.read, err
		}
		if s.read != from {
			// drop_oldest removed the segment and moved the position
			// while we read: those records were counted as lost there.
			resync, minRead = false, 0
			continue
		}
		for _, l := range scan.lost {
			// A damaged set counts its records (its header says how
			// many), any other unreadable stretch counts as one record,
			// its count being unknown. Announced when the replayer
			// commits past it (readLost). What a failed write of this
			// run left torn was owed to nobody.
			if seg.run == "" && seg.torn && l.at >= seg.tornAt {
				continue
			}
			s.readLost = append(s.readLost, readLoss{at: spoolPos{seg.id, l.at}, run: seg.run, n: l.n})
		}
		for k := len(out); k < len(scan.out); k++ {
			scan.out[k].end.seg = seg.id
		}
		if scan.recs > 0 {
			s.rAvg = int((scan.next - from.off) / int64(scan.recs))
		}
		recs += scan.recs
		for _, r := range scan.out[len(out):] {
			size += int64(r.size())
		}
		out, resync = scan.out, scan.resync
		// A frame cut by the end of the read is read whole next time.
		minRead = scan.need
		if scan.next == from.off && !resync {
			minRead = max(scan.need, 2*want)
		}
		s.read.off = scan.next
	}
	if len(out) == 0 && s.runOwed > 0 && s.emptyLocked() {
		// Caught up with the writer, and the replayer settled every record
		// it read before asking for more: this run's records still owed
		// were never readable.
		s.corrupt += uint64(s.runOwed)
		s.lostLocked(record.ReasonSpoolCorrupt, "", s.runOwed)
	}
	s.rout = out
	return out, s.read, nil
}

// readSize is how much to read for up to n records / b bytes, at least
// min, at most left (the rest of the segment).
func (s *spool) readSize(n int, b int64, minRead int, left int64) int {
	avg := max(s.rAvg, 256)
	want := min(int64(n)*int64(avg)*9/8, b+int64(n)*recordHeader) + readChunkMin/4
	want = max(want, readChunkMin, int64(minRead))
	return int(min(want, left))
}

// readAt reads n bytes at off into the reader's buffer, after what this
// call of next already holds there (records point into it); a buffer
// too small is replaced, and the old one lives on as long as its records.
func (s *spool) readAt(f *os.File, off int64, n int) ([]byte, error) {
	if cap(s.rbuf)-len(s.rbuf) < n {
		s.rbuf = make([]byte, 0, max(2*cap(s.rbuf), n+readChunkMin))
	}
	buf := s.rbuf[len(s.rbuf) : len(s.rbuf)+n]
	got, err := f.ReadAt(buf, off)
	if got < n {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF // the segment holds what its size says
		}
		return nil, fmt.Errorf("spool read: %w", err)
	}
	s.rbuf = s.rbuf[:len(s.rbuf)+n]
	return buf, nil
}

// frameScan is what scanFrames found in one read.
type frameScan struct {
	out    []spooled
	recs   int         // records in the frames appended to out
	next   int64       // segment offset after the last frame consumed
	lost   []frameLoss // damaged frames skipped
	resync bool        // the read ended while looking for the next magic
	need   int         // bytes needed at next to read the next whole frame
}

// frameLoss is a damaged frame at segment offset at: a set whose header
// is intact (skipped whole) with its n records, or a corrupt stretch of
// unknown count (n = 1).
type frameLoss struct {
	at, n int64
}

// scanFrames parses the frames in buf, which holds the segment's bytes
// from off on (the segment is size bytes long), appending records to out
// until maxN records or maxBytes bytes. A corrupt frame (bad magic, a
// length past the segment's end, a bad CRC or payload) counts as one
// corrupt stretch, and scanning resumes at the next magic; a frame cut
// by the end of buf is left for the next read.
func scanFrames(buf []byte, off, size int64, resync bool, out []spooled, maxN int, maxBytes int64) frameScan {
	p := 0
	var bytesOut int64
	var lost []frameLoss
	recs := 0
	need := 0
	for recs < maxN && bytesOut < maxBytes {
		abs := off + int64(p)
		if abs >= size {
			break
		}
		if resync {
			if i := indexMagic(buf[p:]); i >= 0 {
				p += i
				resync = false
				continue
			}
			if off+int64(len(buf)) >= size {
				p = int(size - off) // nothing readable up to the end
				resync = false
				break
			}
			p = max(p, len(buf)-3) // a magic may straddle the reads
			break
		}
		if abs+recordHeader > size {
			lost = append(lost, frameLoss{at: abs, n: 1}) // torn header at the end
			p = int(size - off)
			break
		}
		if p+recordHeader > len(buf) {
			need = recordHeader
			break
		}
		h := buf[p : p+recordHeader]
		n := int64(binary.LittleEndian.Uint32(h[4:]))
		if binary.LittleEndian.Uint32(h) == setMagic {
			st := scanSet(buf[p:], abs, size)
			switch {
			case st.need > 0:
				need = st.need
			case st.resync:
				lost = append(lost, frameLoss{at: abs, n: 1})
				resync = true
				p++
				continue
			case st.bad:
				lost = append(lost, frameLoss{at: abs, n: st.rec.records64()})
				p += st.len
				continue
			default:
				if recs > 0 && recs+st.rec.N > maxN {
					break // whole sets only; the next call takes it
				}
				p += st.len
				st.rec.end.off = off + int64(p)
				out = append(out, st.rec)
				recs += st.rec.N
				bytesOut += int64(st.rec.size())
				continue
			}
			break
		}
		if binary.LittleEndian.Uint32(h) != spoolMagic || abs+recordHeader+n > size {
			lost = append(lost, frameLoss{at: abs, n: 1})
			resync = true
			p++
			continue
		}
		if int64(p)+recordHeader+n > int64(len(buf)) {
			need = recordHeader + int(n)
			break
		}
		payload := buf[p+recordHeader : p+recordHeader+int(n)]
		rec, ok := decodeFrame(payload)
		if !ok || crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(h[8:]) {
			lost = append(lost, frameLoss{at: abs, n: 1})
			resync = true
			p++
			continue
		}
		p += recordHeader + int(n)
		rec.end.off = off + int64(p)
		out = append(out, rec)
		recs++
		bytesOut += int64(rec.size())
	}
	return frameScan{out: out, recs: recs, next: off + int64(p), lost: lost, resync: resync, need: need}
}

// setScan is what scanSet found at the start of its buffer.
type setScan struct {
	rec    spooled
	len    int  // bytes of the frame, when its header is intact
	need   int  // bytes needed to read the whole frame (it is cut by the end of the read)
	resync bool // the header is damaged: scan for the next magic
	bad    bool // the header is intact, the rest damaged: skip len bytes, rec.N records lost
}

func (r *spooled) records64() int64 { return int64(r.records()) }

// scanSet parses the set frame at the start of b, which starts at
// segment offset abs (the segment is size bytes long).
func scanSet(b []byte, abs, size int64) setScan {
	if abs+setHeader > size {
		return setScan{resync: true} // torn header at the end
	}
	if len(b) < setHeader {
		return setScan{need: setHeader}
	}
	h := b[:setHeader]
	n, ok := setHeaderCount(h)
	plen := int64(binary.LittleEndian.Uint32(h[4:]))
	if !ok {
		return setScan{resync: true}
	}
	if abs+setHeader+plen > size {
		// A torn set at the end of the segment: its records are lost.
		return setScan{bad: true, len: int(size - abs), rec: spooled{Set: []byte{}, N: int(n)}}
	}
	if int64(len(b)) < setHeader+plen {
		return setScan{need: setHeader + int(plen)}
	}
	payload := b[setHeader : setHeader+plen]
	fl := setHeader + int(plen)
	r, ok := decodeFrame(payload)
	if !ok || len(r.Value) == 0 || crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(h[8:]) {
		return setScan{bad: true, len: fl, rec: spooled{Set: []byte{}, N: int(n)}}
	}
	return setScan{len: fl, rec: spooled{ID: r.ID, Key: r.Key, Set: r.Value, N: int(n)}}
}

// decodeFrame splits a payload into its parts without copying.
func decodeFrame(p []byte) (spooled, bool) {
	var r spooled
	n, k := binary.Uvarint(p)
	if k <= 0 || uint64(len(p)-k) < n {
		return r, false
	}
	r.ID = p[k : k+int(n) : k+int(n)]
	p = p[k+int(n):]
	n, k = binary.Uvarint(p)
	if k <= 0 || uint64(len(p)-k) < n {
		return r, false
	}
	r.Key = p[k : k+int(n) : k+int(n)]
	r.Value = p[k+int(n):]
	return r, true
}

func (s *spool) segIndexLocked(id uint64) int {
	for i := range s.segs {
		if s.segs[i].id == id {
			return i
		}
	}
	return -1
}

// rewind moves the read position back to the ack position, so records read
// but not acknowledged are read again.
func (s *spool) rewind() {
	s.mu.Lock()
	s.read = s.ack
	// An earlier run's damaged frames whose segment drop_oldest removed
	// cannot be read again (this run's were counted by drop_oldest);
	// the rest are.
	for _, l := range s.readLost {
		if s.segIndexLocked(l.at.seg) < 0 && l.run != "" {
			s.announceLossLocked(l)
		}
	}
	s.readLost = s.readLost[:0]
	// Read records whose segment drop_oldest removed cannot be read again.
	for _, g := range s.gone {
		s.pending -= g.all
		s.dropped += uint64(g.n)
		s.lostLocked(record.ReasonSpoolFull, g.run, g.n)
	}
	s.gone = nil
	s.mu.Unlock()
}

// commit acknowledges the records rs, the next ones the reader handed
// out, which end at pos (a batch of next, or the first of its frames: the
// replayer commits each request's worth as soon as it is settled, so a
// stop reads again only what was not): it persists the cursor and deletes
// segments that are fully acknowledged.
func (s *spool) commit(rs []spooled, pos spoolPos) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := int64(countSpooled(rs))
	s.settleGoneLocked(n, n-countSeals(rs))
	if s.announceReadLostLocked(pos) {
		s.cursorNow = true
	}
	s.pending = max(s.pending-n, 0)
	if s.segIndexLocked(pos.seg) < 0 {
		// drop_oldest removed the segment while its batch was in flight;
		// the batch was sent, and the records after it are where
		// drop_oldest moved the positions.
		return nil
	}
	s.ack = pos
	freed := false
	for len(s.segs) > 0 && s.segs[0].id < pos.seg {
		_ = os.Remove(s.segPath(s.segs[0].id))
		s.total -= s.segs[0].size
		s.segs = s.segs[1:]
		freed = true
	}
	if len(s.segs) == 1 && s.emptyLocked() {
		// Everything is delivered: start over with an empty directory so
		// the spool does not keep delivered bytes around.
		if s.w != nil {
			s.w.Close()
			s.w = nil
		}
		if s.rf != nil {
			s.rf.Close()
			s.rf = nil
		}
		_ = os.Remove(s.segPath(s.segs[0].id))
		s.total -= s.segs[0].size
		s.segs = s.segs[:0]
		s.pending = 0
		s.ack = spoolPos{s.nextID, 0}
		s.read = s.ack
		if err := s.writeCursorLocked(s.ack); err != nil {
			return err
		}
		s.freedLocked()
		return nil
	}
	if freed {
		s.freedLocked()
	}
	// The cursor is rewritten at most once a second (and on close), not
	// per batch: it is four system calls and a rename. A cursor that lags
	// costs only duplicates after a crash, which at-least-once allows.
	s.cursorDirty = true
	// After an announcement at once (cursorNow), so that a crash does not
	// have the next run read and announce the same losses again.
	if s.fsync == sinks.FsyncAlways || freed || s.cursorNow || time.Since(s.cursorAt) >= cursorEvery {
		return s.writeCursorLocked(pos)
	}
	return nil
}

// settleGoneLocked takes n records, items of them queue items, off gone:
// the replayer settled them (they are the first it holds).
func (s *spool) settleGoneLocked(n, items int64) {
	for len(s.gone) > 0 && (n > 0 || items > 0) {
		g := &s.gone[0]
		k, ki := min(n, g.all), min(items, g.n)
		g.all, g.n, n, items = g.all-k, g.n-ki, n-k, items-ki
		if g.all > 0 {
			break
		}
		s.gone = s.gone[1:]
	}
	if len(s.gone) == 0 {
		s.gone = nil
	}
}

// countSeals is how many of rs are seal records (no queue items).
func countSeals(rs []spooled) int64 {
	n := int64(0)
	for i := range rs {
		if rs[i].Set == nil && bytes.HasPrefix(rs[i].ID, sealIDPrefixB) {
			n++
		}
	}
	return n
}

// announceReadLostLocked announces the damaged frames in readLost that
// start before pos (the reader will not read them again) and forgets
// them; it reports whether it announced any.
func (s *spool) announceReadLostLocked(pos spoolPos) bool {
	announced := false
	kept := s.readLost[:0]
	for _, l := range s.readLost {
		if !l.at.before(pos) {
			kept = append(kept, l)
			continue
		}
		s.announceLossLocked(l)
		announced = true
	}
	s.readLost = kept
	return announced
}

func (s *spool) announceLossLocked(l readLoss) {
	s.corrupt += uint64(l.n)
	if l.run == "" {
		if i := s.segIndexLocked(l.at.seg); i >= 0 {
			s.segs[i].badDone += l.n
		}
	}
	s.lostLocked(record.ReasonSpoolCorrupt, l.run, l.n)
}

// before reports whether p comes before q in the spool.
func (p spoolPos) before(q spoolPos) bool {
	return p.seg < q.seg || p.seg == q.seg && p.off < q.off
}

// cursorEvery is how often commit persists the cursor at most.
const cursorEvery = time.Second

func (s *spool) writeCursorLocked(p spoolPos) error {
	tmp := filepath.Join(s.dir, "cursor.tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("spool cursor: %w", err)
	}
	_, err = fmt.Fprintf(f, "%d %d\n", p.seg, p.off)
	if err == nil && s.fsync == sinks.FsyncAlways {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("spool cursor: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, "cursor")); err != nil {
		return fmt.Errorf("spool cursor: %w", err)
	}
	s.cursorAt, s.cursorDirty, s.cursorNow = time.Now(), false, false
	return nil
}

type spoolStats struct {
	Pending, Bytes   int64
	Corrupt, Dropped uint64
}

func (s *spool) stats() spoolStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return spoolStats{Pending: s.pending, Bytes: s.total, Corrupt: s.corrupt, Dropped: s.dropped}
}

// close syncs and closes the files; the spool stays on disk for the next run.
func (s *spool) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if s.cursorDirty {
		err = s.writeCursorLocked(s.ack)
	}
	for _, f := range s.unsynced {
		if serr := f.Sync(); err == nil {
			err = serr
		}
		f.Close()
	}
	s.unsynced = nil
	if s.w != nil {
		if s.fsync != sinks.FsyncNever {
			if serr := s.w.Sync(); err == nil {
				err = serr
			}
		}
		if cerr := s.w.Close(); err == nil {
			err = cerr
		}
		s.w = nil
	}
	if s.rf != nil {
		s.rf.Close()
		s.rf = nil
	}
	if err != nil {
		return fmt.Errorf("spool close: %w", err)
	}
	return nil
}
