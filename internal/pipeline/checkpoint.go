package pipeline

// settledTracker finds the last event.sequence every sink has settled
// (delivered, or failed and so announced), for the run marker. Every
// record goes to every queue in sequence order, so a queue's Received
// count is the sequence of the last record pushed to it; once every
// queue has settled as many items as it had received at some earlier
// sample, everything up to the smallest of those counts is settled.
type settledTracker struct {
	samples []settledSample // oldest first
	settled uint64
}

type settledSample struct {
	seq      uint64   // min over queues of Received
	received []uint64 // per queue
}

// maxSettledSamples bounds the samples kept while a sink lags; past it
// the oldest is dropped and the answer lags a little more.
const maxSettledSamples = 64

// observe takes one Stats snapshot and returns the last settled sequence.
func (t *settledTracker) observe(st Stats) uint64 {
	s := settledSample{received: make([]uint64, len(st.Sinks))}
	for i, q := range st.Sinks {
		s.received[i] = q.Received
		if i == 0 || q.Received < s.seq {
			s.seq = q.Received
		}
	}
	if len(t.samples) == maxSettledSamples {
		t.samples = t.samples[1:]
	}
	t.samples = append(t.samples, s)
	done := 0
	for j, sm := range t.samples {
		ok := true
		for i, q := range st.Sinks {
			if q.Delivered+q.Dropped < sm.received[i] {
				ok = false
				break
			}
		}
		if !ok {
			break
		}
		t.settled = max(t.settled, sm.seq)
		done = j + 1
	}
	t.samples = t.samples[done:]
	return t.settled
}
