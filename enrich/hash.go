package enrich

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/fanaudit/fanaudit/audit"
	"github.com/fanaudit/fanaudit/internal/record"
)

// fanaudit.hash.status values: why a close_write record has no sha256.
const (
	HashSkippedSize   = "skipped_size"
	HashSkippedBudget = "skipped_budget"
	HashUnavailable   = "unavailable"
	HashError         = "error"
)

// hashDecision settles a close_write's hash on Run's goroutine: true means
// a worker must hash it; false means r already says why not.
func (e *Enricher) hashDecision(r *record.Record, ev *audit.Event, now time.Time) bool {
	if ev.File == nil {
		r.File.HashStatus = HashUnavailable
		e.hashUnavail.Add(1)
		return false
	}
	fi, err := ev.File.Stat()
	if err != nil {
		r.File.HashStatus = HashError
		e.hashErrs.Add(1)
		e.log.Debug().Err(err).Str("path", ev.Path).Msg("hash: stat")
		return false
	}
	size := fi.Size()
	if size > e.opts.Hash.MaxSize {
		r.File.HashStatus = HashSkippedSize
		e.hashSize.Add(1)
		return false
	}
	if !e.takeBudget(size, now) {
		r.File.HashStatus = HashSkippedBudget
		e.hashBudget.Add(1)
		return false
	}
	return true
}

// takeBudget is a token bucket over bytes read for hashing: it refills at
// BytesPerSecond up to a burst of max(BytesPerSecond, MaxSize), so that
// every file under the cap can fit.
func (e *Enricher) takeBudget(n int64, now time.Time) bool {
	if !e.tokensAt.IsZero() {
		if dt := now.Sub(e.tokensAt).Seconds(); dt > 0 {
			e.tokens = min(e.tokenBurst, e.tokens+dt*float64(e.opts.Hash.BytesPerSecond))
		}
	}
	e.tokensAt = now
	if float64(n) > e.tokens {
		return false
	}
	e.tokens -= float64(n)
	return true
}

// hashWorker hashes files until jobs is closed. It never blocks on wake: a
// full wake channel already holds a wake-up, and Run re-checks every batch.
func (e *Enricher) hashWorker(ctx context.Context, jobs <-chan hashJob, wake chan<- struct{}) {
	buf := make([]byte, 128<<10)
	h := sha256.New()
	var sum [sha256.Size]byte
	for j := range jobs {
		if ctx.Err() != nil {
			j.rec.File.HashStatus = HashUnavailable
			e.hashUnavail.Add(1)
		} else if err := e.hashOne(j, h, buf, sum[:0]); err != nil {
			j.rec.File.HashStatus = HashError
			e.hashErrs.Add(1)
			e.log.Debug().Err(err).Str("path", j.ev.Path).Msg("hash")
		}
		j.ev.Release()
		if j.p.n.Add(-1) == 0 {
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	}
}

func (e *Enricher) hashOne(j hashJob, h interface {
	io.Writer
	Reset()
	Sum([]byte) []byte
}, buf, sum []byte) error {
	h.Reset()
	// Read from offset 0 whatever the fd's position, and never more than
	// MaxSize+1 bytes even if the file grew after the size check.
	limit := e.opts.Hash.MaxSize
	n, err := io.CopyBuffer(h, io.NewSectionReader(j.ev.File, 0, limit+1), buf)
	if err != nil {
		return fmt.Errorf("hash %s: %w", j.ev.Path, err)
	}
	if n > limit {
		j.rec.File.HashStatus = HashSkippedSize
		e.hashSize.Add(1)
		return nil
	}
	j.rec.File.SHA256 = hex.EncodeToString(h.Sum(sum))
	e.hashDone.Add(1)
	return nil
}
