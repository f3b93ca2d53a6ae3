// Package sinks owns delivery: the bounded per-sink queue with its
// when-full policy and exact accounting, and the stdout and file sinks.
// Kafka lives in sinks/kafka on the same interface.
package sinks

import (
	"context"

	"github.com/fanaudit/fanaudit/internal/record"
)

// Item is one encoded record, shared read-only by every sink's queue.
type Item struct {
	Seq    uint64
	Action record.Action
	Path   string // file.path, for sinks that key by path
	Line   []byte // one compact JSON object followed by '\n'
	Loss   bool   // an events_lost record; queues never drop these
}

// Sink delivers items taken from its own Queue.
//
// Run takes items with q.Next and must settle every item it takes, exactly
// once, with q.Delivered or q.Failed, possibly later and from another
// goroutine (an asynchronous ack). It returns nil once q is closed and
// everything it took is settled, ctx.Err() when ctx ends first, or the
// error that made it give up (stdout's EPIPE, say); on every return it has
// settled what it took, failing what it could not deliver. Items still
// queued stay there: after an error return nobody takes from q, so the
// caller must stop pushing to it (a Block queue would block for good).
type Sink interface {
	Name() string
	Run(ctx context.Context, q *Queue) error
	// Reopen reopens output files (SIGHUP). Sinks without files return nil.
	Reopen() error
}
