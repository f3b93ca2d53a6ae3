package kafka

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/fanaudit/fanaudit/sinks"
	kafkago "github.com/segmentio/kafka-go"
)

// sealIDPrefix starts the event id header of seal records, which are not
// queue items: the spool's accounting of this run's records skips them,
// and replay settles nothing for them (their id is not this run's).
const sealIDPrefix = "seal:"

func isSealID(id string) bool { return strings.HasPrefix(id, sealIDPrefix) }

// SetSealer turns sealing on (docs/sealing.md); call it before Run. The
// chain runs over the records in the order the sink takes them from its
// queue; seal records are messages the sink produces itself, outside the
// queue's accounting. Partitions, retries and the spool may reorder
// messages in the topic: `fanaudit verify --kafka` restores the order
// from the seals' epochs and the records' event.sequence.
func (s *Sink) SetSealer(sl sinks.Sealer) { s.sealer = sl }

// sealTaken feeds the items just taken from the queue to the sealer and
// produces a seal when one is due.
func (s *Sink) sealTaken(ctx context.Context, items []*sinks.Item) {
	if s.sealer == nil {
		return
	}
	for _, it := range items {
		s.sealer.Append(it.Line, it.Seq)
	}
	if s.sealer.Due(time.Now()) {
		s.produceSeal(ctx, s.sealer.Seal)
	}
}

// produceSeal makes a seal record with mk (Begin, Seal or Close) and
// produces it: directly, or through the spool when the broker does not
// take it (then it keeps its place before later records), else with
// retries until ctx ends. A seal that is lost shows as a finding of
// verify, never as a silently weaker seal.
func (s *Sink) produceSeal(ctx context.Context, mk func(time.Time) ([]byte, error)) {
	line, err := mk(time.Now())
	if err != nil {
		s.log.Error().Err(err).Msg("sealing: the state file could not be updated; the old epoch key may still be on disk")
	}
	if len(line) == 0 {
		return
	}
	s.sealN++
	id := sealIDPrefix + s.idPrefix + strconv.FormatUint(s.sealN, 10)
	msg := kafkago.Message{Key: s.hostKey, Value: line[:len(line)-1], Headers: []kafkago.Header{{Key: HeaderEventID, Value: []byte(id)}}}
	for attempt := 0; ; attempt++ {
		if s.spool != nil && !s.spool.empty() {
			if err := s.spool.append(ctx, []spoolRec{{ID: id, Key: msg.Key, Value: msg.Value}}); err == nil {
				return
			}
		}
		res := s.send(ctx, []kafkago.Message{msg}, nil)
		if res[0] == nil {
			return
		}
		if s.spool != nil {
			if err := s.spool.append(ctx, []spoolRec{{ID: id, Key: msg.Key, Value: msg.Value}}); err == nil {
				return
			}
		}
		if !sleep(ctx, backoff(attempt)) || deadLetterable(res[0]) {
			s.log.Error().Err(res[0]).Str("event_id", id).Msg("sealing: seal record not delivered; verify will report it missing")
			return
		}
	}
}

// next is q.Next, also sealing a quiet stream when a seal falls due.
func (s *Sink) next(ctx context.Context, q sinks.Input, buf []*sinks.Item) ([]*sinks.Item, error) {
	if s.sealer == nil {
		return q.Next(ctx, buf)
	}
	return s.sealWait.Next(ctx, q, buf, s.sealer, time.Now, func() { s.produceSeal(ctx, s.sealer.Seal) })
}

// sealBegin and sealClose produce the open and the closing seal. The
// closing one is produced after ctx has ended too, within write_timeout.
func (s *Sink) sealBegin(ctx context.Context) {
	if s.sealer != nil {
		s.produceSeal(ctx, s.sealer.Begin)
	}
}

func (s *Sink) sealClose(ctx context.Context) {
	if s.sealer != nil {
		s.sealWait.Stop()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.WriteTimeout.Duration)
		defer cancel()
		s.produceSeal(cctx, s.sealer.Close)
	}
}
