// Package sinks owns delivery of encoded records to an output: the Sink
// interface every sink implements and the stdout and file sinks. Kafka
// lives in sinks/kafka on the same interface. Queues, their when_full
// policies and the accounting belong to the pipeline
// (internal/pipeline/queue); a sink sees its queue only as an Input.
package sinks

import (
	"context"

	"github.com/fanaudit/fanaudit/internal/pipeline/queue"
)

// Item is one encoded record, shared read-only by every sink.
type Item = queue.Item

// Policy is a when_full policy; sinks with a spool of their own (Kafka)
// apply the same vocabulary to it.
type Policy = queue.Policy

// The when_full policies, named here for sinks and config.
const (
	Block      = queue.Block
	DropNewest = queue.DropNewest
	DropOldest = queue.DropOldest
)

// ParsePolicy maps a when_full value to a Policy.
func ParsePolicy(s string) (Policy, error) { return queue.ParsePolicy(s) }

// Input is what a sink sees of its queue: it takes batches and settles
// every item it took exactly once, as delivered or as failed with a
// reason, possibly later and from another goroutine (an asynchronous ack).
type Input interface {
	// Next blocks until at least one item is queued and returns up to
	// cap(buf) of them (at least one when cap(buf) is 0) in order,
	// reusing buf. It returns io.EOF once the input is closed and
	// drained, and ctx.Err() when ctx ends first.
	Next(ctx context.Context, buf []*Item) ([]*Item, error)
	// Len is how many items wait; a sink flushes when it has caught up.
	Len() int
	// Delivered settles n taken items as delivered.
	Delivered(n int)
	// Failed settles n taken items as lost for reason (record.ReasonSinkError,
	// "dead_letter", "spool_full", ...); the pipeline announces them
	// in-band as events_lost records to every sink.
	Failed(n int, reason string)
	// LostEarlier reports n records of an earlier agent run (runID) lost
	// in this run (a replayed spool): announced naming that run, outside
	// this run's accounting.
	LostEarlier(n uint64, reason, runID string)
	// Park marks n taken items as held durably by the sink beyond this
	// run (a spool): in flight for Health, but the pipeline's final loss
	// report does not wait for them; Unpark undoes it before they are
	// settled. Sinks without durable storage never call them.
	Park(n int)
	Unpark(n int)
}

// Ordered is implemented by a sink that settles the items it takes in
// the order it took them (Delivered and Failed count from the oldest item
// it holds) and never reads an item once it has settled it. The pipeline
// then reuses the memory of a batch's lines once every such sink is done
// with them, instead of leaving it to the garbage collector.
type Ordered interface {
	SettlesInOrder() bool
}

// Sink delivers items taken from its Input.
//
// Run takes batches with in.Next, writes them and settles every item it
// takes. A failed write is the sink's own business: it settles the items
// as failed (with a reason) or keeps retrying them, and goes on; it never
// ends Run, because one broken output must not stop the others. Run
// returns nil once in is closed and everything it took is settled, or
// ctx.Err() when ctx ends first (the shutdown timeout or another stage's
// failure), after settling what it took. Close releases the output; the
// pipeline calls it once Run has returned, and it is idempotent, so the
// owner may also call it when Run never ran.
type Sink interface {
	Run(ctx context.Context, in Input) error
	// Reopen reopens output files (SIGHUP). Sinks without files return nil.
	Reopen() error
	Close() error
}
