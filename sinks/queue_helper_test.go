package sinks

import (
	"testing"

	"github.com/fanaudit/fanaudit/internal/pipeline/queue"
)

// The sinks are tested against the pipeline's real queue, so that the
// when_full policies and the accounting are those the agent runs with.
type Queue = queue.Queue

func NewQueue(sink string, capacity int, policy Policy) *Queue {
	return queue.New(sink, capacity, policy)
}

func checkInvariant(t testing.TB, s queue.Stats) {
	t.Helper()
	if s.Received != s.Delivered+s.Dropped+s.InFlight {
		t.Fatalf("invariant broken: %+v", s)
	}
}
