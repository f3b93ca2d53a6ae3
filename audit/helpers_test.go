package audit

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fanaudit/fanaudit/internal/testutil"
)

// waitBound only guards against a hang; nothing waits for it to pass.
const waitBound = 20 * time.Second

// session is a running Capture whose events a test collects.
type session struct {
	t      testing.TB
	c      *Capture
	cancel context.CancelFunc
	done   chan error
	ch     chan []Event

	// canon, if set, maps a path to the one the test compares (a bind
	// mount and its source name the same objects).
	canon func(string) string

	mu     sync.Mutex
	events []Event
	cond   *sync.Cond
	ended  bool
}

func testLogger(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
}

// startSession starts a Capture on opts and collects everything it sends.
func startSession(t testing.TB, opts Options) *session {
	t.Helper()
	c, err := New(opts, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return attachSession(t, c)
}

// attachSession runs c and collects everything it sends.
func attachSession(t testing.TB, c *Capture) *session {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{t: t, c: c, cancel: cancel, done: make(chan error, 1), ch: make(chan []Event, 64)}
	s.cond = sync.NewCond(&s.mu)
	go func() { s.done <- c.Run(ctx, s.ch) }()
	go func() {
		for evs := range s.ch {
			s.mu.Lock()
			for i := range evs {
				evs[i].Release()
			}
			s.events = append(s.events, evs...)
			s.cond.Broadcast()
			s.mu.Unlock()
		}
		s.mu.Lock()
		s.ended = true
		s.cond.Broadcast()
		s.mu.Unlock()
	}()
	t.Cleanup(func() { s.stop() })
	return s
}

// stop ends Run (which drains the queue) and closes the Capture.
func (s *session) stop() error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	s.cancel = nil
	err := <-s.done
	close(s.ch)
	s.mu.Lock()
	for !s.ended {
		s.cond.Wait()
	}
	s.mu.Unlock()
	if cerr := s.c.Close(); err == nil {
		err = cerr
	}
	return err
}

// pause ends Run (which drains the queue) and keeps the Capture: what
// the kernel queues from now on waits there, as behind a lagging reader,
// until resume.
func (s *session) pause() {
	s.cancel()
	if err := <-s.done; err != nil {
		s.t.Fatalf("Run: %v", err)
	}
}

// resume runs the Capture again after pause.
func (s *session) resume() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- s.c.Run(ctx, s.ch) }()
}

// waitFor blocks until an event satisfies ok, failing after a generous
// bound (a deadlock guard, not a timing assumption).
func (s *session) waitFor(what string, ok func(*Event) bool) {
	s.t.Helper()
	deadline := time.AfterFunc(waitBound, func() {
		s.mu.Lock()
		s.ended = true
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer deadline.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; ; {
		for ; i < len(s.events); i++ {
			if ok(&s.events[i]) {
				return
			}
		}
		if s.ended {
			var b strings.Builder
			for i := range s.events {
				fmt.Fprintf(&b, "\n  %s %q <- %q mask=%#x pid=%d", s.events[i].Action, s.events[i].Path, s.events[i].OldPath, s.events[i].Mask, s.events[i].Pid)
			}
			s.t.Fatalf("no event for %s; got %d events:%s\nstats %+v", what, len(s.events), b.String(), s.c.Stats())
		}
		s.cond.Wait()
	}
}

// mark creates a uniquely named file and waits for its create event, so
// everything the kernel queued before it has been read.
func (s *session) mark(dir string) string {
	s.t.Helper()
	p := filepath.Join(dir, fmt.Sprintf(".mark-%d", time.Now().UnixNano()))
	runHelper(s.t, "touch", p)
	s.waitFor("marker "+p, func(e *Event) bool {
		return e.Action == ActionCreate && (e.Path == p || s.canonical(e.Path) == p)
	})
	return p
}

// canonical is p as the test compares it (see canon).
func (s *session) canonical(p string) string {
	if s.canon != nil {
		return s.canon(p)
	}
	return p
}

// take returns and forgets the events collected so far, without markers.
func (s *session) take() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Event
	for _, e := range s.events {
		if !strings.Contains(e.Path, "/.mark-") && !strings.Contains(e.OldPath, "/.mark-") {
			out = append(out, e)
		}
	}
	s.events = nil
	return out
}

func tmpfs(t testing.TB) string {
	t.Helper()
	testutil.RequireRoot(t)
	return testutil.TmpfsMount(t, "256m")
}

// line is the comparable form of an event in exact-set tests.
func line(e *Event, root string) string {
	rel := func(p string) string {
		if p == "" {
			return "?"
		}
		return "." + strings.TrimPrefix(p, root)
	}
	s := e.Action.String() + " " + rel(e.Path)
	if e.OldPath != "" {
		s += " <- " + rel(e.OldPath)
	}
	if e.Dir {
		s += " (dir)"
	}
	return s
}

// lines is every event's line, for a failure message.
func lines(evs []Event, root string) []string {
	var all []string
	for i := range evs {
		all = append(all, line(&evs[i], root))
	}
	return all
}

func contextCancelled() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx, cancel
}

func contextBackground() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

// ext4 loop-mounts a fresh ext4 image (see loopFS).
func ext4(t testing.TB) string {
	return loopFS(t, "ext4", 64<<20)
}
